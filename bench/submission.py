"""SMTP submission accept throughput: sendmsg against a bare "250 means stored" baseline
and, with --postfix, against Postfix accepting the same messages in the same run.

    .venv/bin/python bench/submission.py [-n 2000] [-c 20] [-k 0] [--rounds 2] [--time-limit 120]
                                         [--postfix] [--database sqlite|postgres] [--json FILE]

Sets up a throwaway platform (temp data dir, free loopback ports, `manage.py bootstrap`,
a tenant with a verified domain and an SMTP login), starts `manage.py smtpd submission`
(no delivery workers: messages stay queued, so this measures accept only) and
bench/baseline_sink.py (aiosmtpd + one SQLite WAL synchronous=FULL commit per message).
With --postfix it also starts a private Postfix instance (bench/postfix_private.py: its
own config, queue and SASL database in a temp dir; STARTTLS required, AUTH PLAIN through
Cyrus sasldb, every accepted message put on hold, so its cost is accept + fsynced queue
file). The same asyncio client drives them all, interleaved (baseline, [postfix,]
sendmsg, baseline, ...): STARTTLS, AUTH PLAIN, -n messages of --size bytes to 1 recipient
over -c sessions, -k messages per connection (0: each session keeps its connection).
It reports msgs/s,
the DATA->250 latency (from sending DATA to the final reply after the dot) and the
server's CPU per message (the whole process tree: Postfix's master and all its children),
then checks that the platform stored exactly as many Message rows as the client got
250s, and likewise the baseline's rows and Postfix's queue files (exit status 1 if not,
or if any run had errors).

--database postgres runs the platform on a throwaway PostgreSQL cluster (bench/database.py:
fsync on; its server's CPU counts as sendmsg's, and each round shows its share); the
baseline stays on SQLite. --json FILE also writes the medians and ratios for
bench/suite.py (bench/summary.py).

Every load run stops after -n messages or --time-limit seconds, whichever comes first.
All traffic goes to 127.0.0.1; every process started here is stopped by its PID, and
the private Postfix by `postfix -c DIR stop` of its own config directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import database
import postfix_private
import summary

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "bench.test"
SENDER = f"bench@{DOMAIN}"
RCPT = "rcpt@rcpt.bench.test"
REPLY_TIMEOUT = 30.0

SETUP = (
    """
import json, django
django.setup()
from datetime import timedelta
from django.utils import timezone
from domains.models import Domain
from domains.tenancy import create_tenant, add_domain
from delivery.credentials import create_api_key, create_smtp_credential
tenant = create_tenant(name="Bench", owner_email="owner@bench.test").tenant
domain = add_domain(tenant=tenant, name=%r)
# Verified a month ago: past its warm-up (reputation/gate.py), as an established domain.
Domain.objects.filter(pk=domain.pk).update(
    status="verified", verified_at=timezone.now() - timedelta(days=30)
)
credential, password = create_smtp_credential(tenant=tenant)
api_key, key = create_api_key(tenant=tenant, name="bench")
print(json.dumps({"username": credential.username, "password": password, "key": key}))
"""
    % DOMAIN
)
"""Creates the bench tenant, its verified domain, an SMTP login and an API key."""

COUNT = """
import django
django.setup()
from delivery.models import Message
print(Message.objects.count())
"""


# ---------------------------------------------------------------- load client


def build_message(size: int) -> bytes:
    """A ~size-byte text message, CRLF line ends, dot-stuffed, ending with CRLF.CRLF."""
    head = (
        f"From: Bench <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: submission benchmark\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = "Pack my box with five dozen liquor jugs. 0123456789 abcdefghijklmnopqrstu\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    data = (head + body).encode().replace(b"\r\n.", b"\r\n..")
    return data + b".\r\n"


class SMTPFailure(Exception):
    pass


async def reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise SMTPFailure("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def command(reader, writer, line: bytes, expect: int) -> None:
    writer.write(line)
    code, text = await reply(reader)
    if code != expect:
        raise SMTPFailure(f"{line[:12]!r} -> {text[:160]!r}")


class Load:
    def __init__(self, port: int, args: argparse.Namespace, user: str, password: str, n: int):
        self.port, self.a, self.n = port, args, n
        self.auth = b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"
        self.msg = build_message(args.size)
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE
        self.taken = self.ok = self.rejected = self.errors = 0
        self.samples: list[str] = []
        self.lat: list[float] = []
        self.deadline = 0.0

    def take(self) -> bool:
        if self.taken >= self.n or time.perf_counter() >= self.deadline:
            return False
        self.taken += 1
        return True

    async def session(self):
        reader, writer = await asyncio.open_connection(HOST, self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code, text = await reply(reader)
        if code != 220:
            raise SMTPFailure(f"banner {text[:160]!r}")
        await command(reader, writer, b"EHLO client.bench.test\r\n", 250)
        await command(reader, writer, b"STARTTLS\r\n", 220)
        await writer.start_tls(self.tls)
        await command(reader, writer, b"EHLO client.bench.test\r\n", 250)
        await command(reader, writer, self.auth, 235)
        return reader, writer

    async def transaction(self, reader, writer) -> None:
        await command(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
        await command(reader, writer, f"RCPT TO:<{RCPT}>\r\n".encode(), 250)
        t0 = time.perf_counter()
        await command(reader, writer, b"DATA\r\n", 354)
        writer.write(self.msg)
        code, text = await reply(reader)
        if code == 250:
            self.lat.append(time.perf_counter() - t0)
            self.ok += 1
        else:
            self.rejected += 1
            if len(self.samples) < 5:
                self.samples.append(f"end of data -> {text[:160]!r}")

    async def worker(self) -> None:
        while self.take():
            writer = None
            try:
                reader, writer = await self.session()
                sent = 0
                while True:
                    await self.transaction(reader, writer)
                    sent += 1
                    if (self.a.per_connection and sent >= self.a.per_connection) or not self.take():
                        break
                try:
                    await asyncio.wait_for(command(reader, writer, b"QUIT\r\n", 221), 5)
                except Exception:
                    pass
            except Exception as exc:  # counted; the run stays bounded by -n and the deadline
                self.errors += 1
                if len(self.samples) < 5:
                    self.samples.append(repr(exc)[:200])
                if self.errors > max(10, self.n // 20):
                    self.deadline = 0.0
                await asyncio.sleep(0.05)
            finally:
                if writer is not None:
                    writer.close()
                    try:
                        await asyncio.wait_for(writer.wait_closed(), 2)
                    except Exception:
                        pass

    async def run(self) -> dict:
        t0 = time.perf_counter()
        self.deadline = t0 + self.a.time_limit
        await asyncio.gather(*(self.worker() for _ in range(self.a.concurrency)))
        seconds = time.perf_counter() - t0
        p50, p99 = percentiles_ms(self.lat)

        return {
            "ok": self.ok,
            "rejected": self.rejected,
            "errors": self.errors,
            "seconds": seconds,
            "msgs_per_s": self.ok / seconds if seconds else 0.0,
            "p50_ms": p50,
            "p99_ms": p99,
            "samples": self.samples,
            "timed_out": self.ok + self.rejected + self.errors < self.n,
        }


def percentiles_ms(latencies: list[float]) -> tuple[float | None, float | None]:
    """p50 and p99 of latencies in seconds, as milliseconds (None when there are none)."""
    ordered = sorted(latencies)

    def at(p: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else None

    return at(0.50), at(0.99)


# ---------------------------------------------------------------- processes


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_checked(argv: list[str], env: dict, timeout: float) -> str:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:3])} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_for_banner(port: int, proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no SMTP banner on port {port} within {timeout:.0f}s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree from /proc: the process (all its threads), its
    live descendants, and the children they have reaped (cutime/cstime), so processes that
    exit during a run (Postfix's smtpd and cleanup) still count."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    if pid not in stats:
        return float("nan")
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats[current][1]
        todo.extend(children.get(current, []))
    return total / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- main


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def load_arguments(description: str, *, messages: int) -> argparse.ArgumentParser:
    """A parser with the load options the SMTP benchmarks share (Load reads them)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-n",
        "--messages",
        type=int,
        default=messages,
        help=f"messages per run (default {messages})",
    )
    p.add_argument(
        "-c", "--concurrency", type=int, default=20, help="concurrent sessions (default 20)"
    )
    p.add_argument(
        "-k",
        "--per-connection",
        type=int,
        default=0,
        help="messages per connection, then reconnect (default 0: keep the connection)",
    )
    p.add_argument(
        "-s", "--size", type=int, default=5120, help="message size in bytes (default 5120)"
    )
    return p


def main() -> int:
    p = load_arguments(__doc__, messages=2000)
    database.add_arguments(p)
    summary.add_argument(p)
    p.add_argument("--rounds", type=int, default=2, help="rounds of all targets (default 2)")
    p.add_argument(
        "--postfix",
        action="store_true",
        help="also run a private Postfix instance (installed with apt-get if missing)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        help="seconds each load run may last at most (default 120)",
    )
    args = p.parse_args()
    with database.throwaway_database(args) as cluster:
        return run(args, cluster)


def run(args: argparse.Namespace, cluster: database.PostgresCluster | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sendmsg-bench-"))
    sub_port, tls_port, inbound_port, dns_port, base_port, pf_port = free_ports(6)
    env = database.platform_env(cluster)
    env.update(
        SENDMSG_DATA_DIR=str(tmp / "data"),
        SENDMSG_HOSTNAME="mta.bench.test",
        SENDMSG_SUBMISSION_PORT=str(sub_port),
        SENDMSG_SUBMISSION_TLS_PORT=str(tls_port),
        SENDMSG_INBOUND_PORT=str(inbound_port),
        DJANGO_SETTINGS_MODULE="sendmsg.settings",
        # nothing on the accept path should resolve names; if it did, it stays on loopback
        SENDMSG_DNS_SERVERS=f"{HOST}:{dns_port}",
    )
    py = sys.executable
    smtpd = baseline = postfix = None
    smtpd_log = open(tmp / "smtpd.log", "wb")
    baseline_log = open(tmp / "baseline.log", "wb")
    names = ["baseline", "postfix", "sendmsg"] if args.postfix else ["baseline", "sendmsg"]
    results: dict[str, list[dict]] = {name: [] for name in names}
    failed = False
    problems: list[str] = []
    pg_pid = database.server_pid(cluster)
    try:
        if args.postfix:
            postfix_private.ensure_installed()
        print(
            f"setting up a throwaway platform ({args.database}) in a temp dir; ports: "
            f"submission {sub_port}, "
            f"baseline {base_port}" + (f", postfix {pf_port}" if args.postfix else ""),
            flush=True,
        )
        run_checked([py, "manage.py", "bootstrap"], env, timeout=600)
        login = json.loads(
            run_checked([py, "-c", SETUP], env, timeout=120).strip().splitlines()[-1]
        )
        cert, key = tmp / "data" / "tls" / "cert.pem", tmp / "data" / "tls" / "key.pem"

        smtpd = subprocess.Popen(
            [py, "manage.py", "smtpd", "submission"],
            cwd=ROOT,
            env=env,
            stdout=smtpd_log,
            stderr=subprocess.STDOUT,
        )
        limit = str(args.rounds * args.time_limit + 300)  # the sink's own safety bound
        baseline = subprocess.Popen(
            [
                py,
                str(ROOT / "bench" / "baseline_sink.py"),
                "--port",
                str(base_port),
                "--db",
                str(tmp / "baseline.sqlite3"),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                "--max-seconds",
                limit,
            ],
            cwd=ROOT,
            stdout=baseline_log,
            stderr=subprocess.STDOUT,
        )
        wait_for_banner(sub_port, smtpd)
        wait_for_banner(base_port, baseline)
        logins = {name: (login["username"], login["password"]) for name in names}
        if args.postfix:
            pf_login = ("bench", base64.b32encode(os.urandom(15)).decode())
            postfix = postfix_private.PrivatePostfix(
                Path(tempfile.mkdtemp(prefix="sendmsg-bench-postfix-")),
                pf_port,
                cert,
                key,
                *pf_login,
            )
            postfix.configure()
            postfix.start()
            wait_for_banner(pf_port, None)
            logins["postfix"] = pf_login

        print(
            f"{args.rounds} rounds of -n {args.messages} -c {args.concurrency} "
            f"-k {args.per_connection}, {len(build_message(args.size))}-byte messages, "
            f"STARTTLS + AUTH PLAIN, time limit {args.time_limit:.0f}s per run",
            flush=True,
        )
        ports = {"baseline": base_port, "postfix": pf_port, "sendmsg": sub_port}

        def server_cpu(name: str) -> float:
            if name == "postfix":
                return cpu_seconds(postfix.master_pid)
            if name == "baseline":
                return cpu_seconds(baseline.pid)
            # On PostgreSQL, the database server's processes work for sendmsg too.
            return cpu_seconds(smtpd.pid) + (cpu_seconds(pg_pid) if pg_pid else 0.0)

        def load(name: str, n: int) -> dict:
            return asyncio.run(Load(ports[name], args, *logins[name], n).run())

        # Postfix's queue files are counted after each run, then deleted (outside the
        # timed window) so its hold queue does not grow from run to run.
        pf_queued = 0

        def count_postfix() -> None:
            nonlocal pf_queued
            if postfix is not None:
                pf_queued += postfix.queued()
                postfix.flush()

        warm = {}  # untimed warm-up: first connections, imports, thread pools
        for name in names:
            w = load(name, 2 * args.concurrency)
            warm[name] = w["ok"]
            if w["errors"] or w["rejected"]:
                failed = True
                problems.append(f"warm-up {name}: {w['errors']} errors, {w['rejected']} refusals")
            for sample in w["samples"]:
                print(f"    warm-up {name}: {sample}")
        count_postfix()
        for rnd in range(1, args.rounds + 1):
            for name in names:
                cpu0, db0 = server_cpu(name), cpu_seconds(pg_pid) if pg_pid else 0.0
                res = load(name, args.messages)
                res["cpu_ms_per_msg"] = (
                    (server_cpu(name) - cpu0) * 1000 / res["ok"] if res["ok"] else None
                )
                cpu = f"  CPU {fmt(res['cpu_ms_per_msg'], 2)} ms/msg"
                if name == "sendmsg" and pg_pid and res["ok"]:
                    db_ms = (cpu_seconds(pg_pid) - db0) * 1000 / res["ok"]
                    cpu += f" (PostgreSQL {db_ms:.2f})"
                if name == "postfix":
                    count_postfix()
                results[name].append(res)
                note = " TIME LIMIT" if res["timed_out"] else ""
                print(
                    f"  round {rnd} {name:8} {res['ok']:6d} x 250 in {res['seconds']:6.1f}s "
                    f"= {fmt(res['msgs_per_s']):>7} msgs/s  p50 {fmt(res['p50_ms'])} ms  "
                    f"p99 {fmt(res['p99_ms'])} ms  rejected {res['rejected']} errors "
                    f"{res['errors']}{cpu}{note}",
                    flush=True,
                )
                for sample in res["samples"]:
                    print(f"    {sample}")
                if res["errors"] or res["rejected"]:
                    failed = True
                    problems.append(
                        f"round {rnd} {name}: {res['errors']} errors, {res['rejected']} refusals"
                    )

        stop(smtpd)
        stop(baseline)
        if postfix is not None:
            postfix.stop()

        labels = {
            "baseline": "baseline (aiosmtpd + SQLite WAL FULL commit)",
            "postfix": "Postfix (accept + fsynced queue file, hold)",
            "sendmsg": "sendmsg `smtpd submission`",
        }
        print("\n| target | msgs/s (median) | DATA->250 p50 ms | p99 ms | server CPU ms/msg |")
        print("|---|---|---|---|---|")
        med = {}
        for name in names:
            runs = results[name]
            med[name] = statistics.median(r["msgs_per_s"] for r in runs)
            cols = [
                statistics.median(r[k] for r in runs if r[k] is not None)
                if any(r[k] is not None for r in runs)
                else None
                for k in ("p50_ms", "p99_ms", "cpu_ms_per_msg")
            ]
            row = [fmt(med[name]), fmt(cols[0]), fmt(cols[1]), fmt(cols[2], 2)]
            print(f"| {labels[name]} | " + " | ".join(row) + " |")
        print()
        for other in [n for n in names if n != "sendmsg"]:
            if not med[other]:
                continue
            paired = [
                f"{s['msgs_per_s'] / b['msgs_per_s']:.2f}"
                for b, s in zip(results[other], results["sendmsg"], strict=False)
                if b["msgs_per_s"]
            ]
            ratio = med["sendmsg"] / med[other]
            floor = ""
            if other == "postfix":
                floor = f"; floor 0.50: {'met' if ratio >= 0.5 else 'NOT met'}"
            print(
                f"ratio sendmsg/{other} msgs/s: {ratio:.2f} (per round: {', '.join(paired)}){floor}"
            )

        got = warm["sendmsg"] + sum(r["ok"] for r in results["sendmsg"])
        rows = int(run_checked([py, "-c", COUNT], env, timeout=120).strip().splitlines()[-1])
        with sqlite3.connect(tmp / "baseline.sqlite3") as db:
            base_rows = db.execute("SELECT COUNT(*) FROM message").fetchone()[0]
        base_got = warm["baseline"] + sum(r["ok"] for r in results["baseline"])
        print(
            f"sendmsg: {got} x 250 received (warm-up included), {rows} Message rows stored"
            f" -> {'OK' if rows == got else 'MISMATCH'}"
        )
        print(
            f"baseline: {base_got} x 250 received, {base_rows} rows stored"
            f" -> {'OK' if base_rows == base_got else 'MISMATCH'}"
        )
        if rows != got:
            failed = True
            problems.append(f"sendmsg: {got} x 250 but {rows} Message rows")
        if base_rows != base_got:
            failed = True
            problems.append(f"baseline: {base_got} x 250 but {base_rows} rows")
        if postfix is not None:
            pf_got = warm["postfix"] + sum(r["ok"] for r in results["postfix"])
            print(
                f"postfix: {pf_got} x 250 received, {pf_queued} queue files written"
                f" -> {'OK' if pf_queued == pf_got else 'MISMATCH'}"
            )
            if pf_queued != pf_got:
                failed = True
                problems.append(f"postfix: {pf_got} x 250 but {pf_queued} queue files")
        results_json = []
        if postfix is not None:
            results_json.append(
                summary.result(
                    "SMTP accept",
                    med["sendmsg"],
                    "msgs/s",
                    baseline="Postfix (accept + fsynced queue file)",
                    baseline_figure=med["postfix"],
                    floor=("ratio", ">=", 0.5),
                )
            )
        results_json.append(
            summary.result(
                "SMTP accept",
                med["sendmsg"],
                "msgs/s",
                baseline="bare aiosmtpd (+ SQLite commit)",
                baseline_figure=med["baseline"],
            )
        )
        summary.write(
            args.json,
            bench="submission",
            database=args.database,
            size=(
                f"-n {args.messages} -c {args.concurrency} -k {args.per_connection} "
                f"--rounds {args.rounds}"
            ),
            checks_passed=not failed,
            problems=problems,
            results=results_json,
        )
        if failed:
            smtpd_log.flush()
            tail = (tmp / "smtpd.log").read_bytes()[-3000:].decode(errors="replace")
            print(f"FAILED; end of the smtpd log:\n{tail}", file=sys.stderr)
            if postfix is not None:
                print(f"end of Postfix's log:\n{postfix.log_tail()}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        stop(smtpd)
        stop(baseline)
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.root, ignore_errors=True)
        smtpd_log.close()
        baseline_log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
