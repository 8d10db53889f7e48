"""REST send API throughput: POST /api/v1/send/ against a bare DRF endpoint on the same server.

    .venv/bin/python bench/api_send.py [-n 2000] [-c 10] [-s 5120] [--rounds 2]
                                       [--time-limit 120] [--workers 2] [--threads 0]
                                       [--database sqlite|postgres] [--json FILE]

Sets up a throwaway platform (temp data dir, free loopback port, `manage.py bootstrap`, a
tenant with a verified domain and an API key), then starts the platform's web process
the way `manage.py serve` does — `gunicorn sendmsg.wsgi` with --workers (default 2, the
SENDMSG_WEB_WORKERS default) and gunicorn's default sync worker — with
DJANGO_SETTINGS_MODULE=bench.api_settings: the platform's settings with a bench-only
urlconf (bench/api_urls.py) that serves every route of sendmsg.urls plus /bench/bare/, a
DRF APIView with no authentication and no permissions that answers 201 with a small
JSON body (the framework's ceiling on this server), and /bench/commit/, the same view
storing the parsed body in one row with one commit (the floor cost of "201 means
stored"). --threads N runs gunicorn's gthread worker with N threads instead (that worker
keeps connections alive).

The same asyncio client (raw HTTP/1.1 over asyncio streams, no dependencies) drives the
endpoints, interleaved (bare, commit, send, bare, ...): -c concurrent clients, each keeping
its connection alive as long as the server lets it (gunicorn's sync worker closes every
connection after one response, so the client then reconnects, for both endpoints
alike), POSTing the same request — the same headers, `Authorization: Bearer <key>`
included, and a JSON message with a ~--size-byte text part to one recipient — -n times
in all. It reports requests/s (counting 201s), the request latency (from starting the
request, connecting if needed, to the last byte of the response; p50/p99) and the web
server's CPU per request (gunicorn's master and workers), then checks that the platform
stored exactly as many Message rows as the client got 201s from /api/v1/send/ (exit
status 1 if not, or if any request failed or got another status).

Every load run stops after -n requests or --time-limit seconds, whichever comes first.
--database postgres runs the platform (and the commit endpoint's table) on a throwaway
PostgreSQL cluster (bench/database.py: fsync on; its server's CPU counts as the web
server's). --json FILE also writes the medians and ratios for bench/suite.py.

All traffic goes to 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import database
import summary
from submission import (
    COUNT,
    HOST,
    RCPT,
    SENDER,
    SETUP,
    cpu_seconds,
    fmt,
    free_ports,
    percentiles_ms,
    run_checked,
)
from submission import stop as stop_process

ROOT = Path(__file__).resolve().parent.parent
REPLY_TIMEOUT = 30.0
SEND_PATH = "/api/v1/send/"
BARE_PATH = "/bench/bare/"
COMMIT_PATH = "/bench/commit/"
# The plan rate is checked on every send whatever its value; a high one only keeps larger
# runs from being throttled (the default is 10,000 messages an hour).
PLAN_RATE = 100_000_000
CREATE_SINK = """
import django
django.setup()
from bench.api_urls import create_sink_table
create_sink_table()
"""
"""Creates the commit endpoint's table once, before gunicorn's workers start (two workers
creating it at once can collide on PostgreSQL)."""


def build_body(size: int) -> bytes:
    """The JSON message: from (with a name), one recipient, a subject and a text part of
    about ``size`` bytes (lines of 74 characters)."""
    line = "Pack my box with five dozen liquor jugs. 0123456789 abcdefghijklmnopqrstu\n"
    text = line * max(1, size // len(line))
    message = {
        "from": {"email": SENDER, "name": "Bench"},
        "to": [RCPT],
        "subject": "API send benchmark",
        "text": text,
    }
    return json.dumps(message).encode()


def build_request(port: int, path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        "Connection: keep-alive\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HTTPFailure(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the connection may be reused."""
    status_line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
    if not status_line:
        raise HTTPFailure("connection closed before the response")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HTTPFailure(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    keep = parts[0] == b"HTTP/1.1"
    length = None
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep = value == b"keep-alive" or (keep and value != b"close")
        elif name == b"transfer-encoding" and value != b"identity":
            raise HTTPFailure("chunked responses are not expected here")
    if length is not None:
        body = await asyncio.wait_for(reader.readexactly(length), REPLY_TIMEOUT)
    else:
        body = await asyncio.wait_for(reader.read(), REPLY_TIMEOUT)
        keep = False
    return status, body, keep


class HttpLoad:
    def __init__(self, port: int, request: bytes, n: int, args: argparse.Namespace):
        self.port, self.request, self.n, self.a = port, request, n, args
        self.taken = self.ok = self.other = self.errors = self.connects = 0
        self.samples: list[str] = []
        self.lat: list[float] = []
        self.deadline = 0.0

    def take(self) -> bool:
        if self.taken >= self.n or time.perf_counter() >= self.deadline:
            return False
        self.taken += 1
        return True

    async def worker(self) -> None:
        reader = writer = None
        try:
            while self.take():
                t0 = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(HOST, self.port), REPLY_TIMEOUT
                        )
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        self.connects += 1
                    writer.write(self.request)
                    status, body, keep = await read_response(reader)
                except Exception as exc:  # counted; the run stays bounded by -n and the deadline
                    self.errors += 1
                    if len(self.samples) < 5:
                        self.samples.append(repr(exc)[:200])
                    if self.errors > max(10, self.n // 20):
                        self.deadline = 0.0
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    await asyncio.sleep(0.05)
                    continue
                self.lat.append(time.perf_counter() - t0)
                if status == 201:
                    self.ok += 1
                else:
                    self.other += 1
                    if len(self.samples) < 5:
                        self.samples.append(f"{status} {body[:200]!r}")
                if not keep:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    async def run(self) -> dict:
        t0 = time.perf_counter()
        self.deadline = t0 + self.a.time_limit
        await asyncio.gather(*(self.worker() for _ in range(self.a.concurrency)))
        seconds = time.perf_counter() - t0
        p50, p99 = percentiles_ms(self.lat)

        return {
            "ok": self.ok,
            "other": self.other,
            "errors": self.errors,
            "connects": self.connects,
            "seconds": seconds,
            "per_s": self.ok / seconds if seconds else 0.0,
            "p50_ms": p50,
            "p99_ms": p99,
            "samples": self.samples,
            "timed_out": self.ok + self.other + self.errors < self.n,
        }


def wait_for_http(port: int, request: bytes, proc: subprocess.Popen, timeout: float = 60.0):
    """Until the bare endpoint answers 201 (gunicorn up, workers booted)."""

    async def probe() -> int:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(request)
            return (await read_response(reader))[0]
        finally:
            writer.close()

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            if asyncio.run(asyncio.wait_for(probe(), 5)) == 201:
                return
        except (OSError, HTTPFailure):  # TimeoutError is an OSError
            pass
        time.sleep(0.2)
    raise SystemExit(f"the web server on port {port} did not answer within {timeout:.0f}s")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-n", "--requests", type=int, default=2000, help="requests per run (2000)")
    p.add_argument("-c", "--concurrency", type=int, default=10, help="concurrent clients (10)")
    p.add_argument("-s", "--size", type=int, default=5120, help="text part bytes (5120)")
    p.add_argument("--rounds", type=int, default=2, help="bare+send rounds (default 2)")
    p.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds each load run may last (120)"
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="0: gunicorn's default sync worker; N: the gthread worker with N threads",
    )
    database.add_arguments(p)
    summary.add_argument(p)
    args = p.parse_args()
    with database.throwaway_database(args) as cluster:
        return run(args, cluster)


def run(args: argparse.Namespace, cluster: database.PostgresCluster | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sendmsg-bench-api-"))
    web_port, dns_port = free_ports(2)
    env = database.platform_env(cluster)
    env.update(
        SENDMSG_DATA_DIR=str(tmp / "data"),
        SENDMSG_HOSTNAME="mta.bench.test",
        SENDMSG_DEFAULT_PLAN_RATE=str(PLAN_RATE),
        DJANGO_SETTINGS_MODULE="sendmsg.settings",
        # nothing on the send path should resolve names; if it did, it stays on loopback
        SENDMSG_DNS_SERVERS=f"{HOST}:{dns_port}",
    )
    py = sys.executable
    web = None
    web_log = open(tmp / "web.log", "wb")
    names = ["bare", "commit", "send"]
    results: dict[str, list[dict]] = {name: [] for name in names}
    failed = False
    problems: list[str] = []
    pg_pid = database.server_pid(cluster)
    try:
        print(
            f"setting up a throwaway platform ({args.database}) in a temp dir; web port {web_port}",
            flush=True,
        )
        run_checked([py, "manage.py", "bootstrap"], env, timeout=600)
        key = json.loads(run_checked([py, "-c", SETUP], env, timeout=120).strip().splitlines()[-1])[
            "key"
        ]
        gunicorn = [py, "-m", "gunicorn", "sendmsg.wsgi", "--bind", f"{HOST}:{web_port}"]
        gunicorn += ["--workers", str(args.workers), "--chdir", str(ROOT)]
        if args.threads:
            gunicorn += ["--worker-class", "gthread", "--threads", str(args.threads)]
        web_env = dict(env, DJANGO_SETTINGS_MODULE="bench.api_settings")
        run_checked([py, "-c", CREATE_SINK], web_env, timeout=120)
        web = subprocess.Popen(
            gunicorn, cwd=ROOT, env=web_env, stdout=web_log, stderr=subprocess.STDOUT
        )
        body = build_body(args.size)
        requests = {
            "bare": build_request(web_port, BARE_PATH, key, body),
            "commit": build_request(web_port, COMMIT_PATH, key, body),
            "send": build_request(web_port, SEND_PATH, key, body),
        }
        wait_for_http(web_port, requests["bare"], web)
        worker = f"gthread x {args.threads} threads" if args.threads else "sync"
        print(
            f"gunicorn sendmsg.wsgi, {args.workers} workers ({worker}); {args.rounds} rounds of "
            f"-n {args.requests} -c {args.concurrency}, {len(body)}-byte JSON bodies "
            f"({len(requests['send'])}-byte requests), time limit {args.time_limit:.0f}s per run",
            flush=True,
        )

        def load(name: str, n: int) -> dict:
            return asyncio.run(HttpLoad(web_port, requests[name], n, args).run())

        warm = {}  # untimed warm-up: connections, imports, first queries
        for name in names:
            w = load(name, 2 * args.concurrency)
            warm[name] = w["ok"]
            if w["errors"] or w["other"]:
                failed = True
                problems.append(f"warm-up {name}: {w['errors']} errors, {w['other']} other")
            for sample in w["samples"]:
                print(f"    warm-up {name}: {sample}")

        def server_cpu() -> float:
            # On PostgreSQL, the database server's processes work for the web server too.
            return cpu_seconds(web.pid) + (cpu_seconds(pg_pid) if pg_pid else 0.0)

        for rnd in range(1, args.rounds + 1):
            for name in names:
                cpu0 = server_cpu()
                res = load(name, args.requests)
                res["cpu_ms"] = (server_cpu() - cpu0) * 1000 / res["ok"] if res["ok"] else None
                results[name].append(res)
                note = " TIME LIMIT" if res["timed_out"] else ""
                print(
                    f"  round {rnd} {name:6} {res['ok']:6d} x 201 in {res['seconds']:6.1f}s "
                    f"= {fmt(res['per_s']):>7}/s  p50 {fmt(res['p50_ms'])} ms  "
                    f"p99 {fmt(res['p99_ms'])} ms  connections {res['connects']}  "
                    f"other statuses {res['other']} errors {res['errors']}{note}",
                    flush=True,
                )
                for sample in res["samples"]:
                    print(f"    {sample}")
                if res["errors"] or res["other"]:
                    failed = True
                    problems.append(
                        f"round {rnd} {name}: {res['errors']} errors, {res['other']} other statuses"
                    )

        stop_process(web)

        labels = {
            "bare": f"bare DRF APIView `POST {BARE_PATH}`",
            "commit": f"DRF APIView + one committed row `POST {COMMIT_PATH}`",
            "send": f"sendmsg `POST {SEND_PATH}`",
        }
        print("\n| endpoint | 201/s (median) | p50 ms | p99 ms | server CPU ms/request |")
        print("|---|---|---|---|---|")
        med = {}
        for name in names:
            runs = results[name]
            med[name] = statistics.median(r["per_s"] for r in runs)
            cols = [
                statistics.median(r[k] for r in runs if r[k] is not None)
                if any(r[k] is not None for r in runs)
                else None
                for k in ("p50_ms", "p99_ms", "cpu_ms")
            ]
            row = [fmt(med[name]), fmt(cols[0]), fmt(cols[1]), fmt(cols[2], 2)]
            print(f"| {labels[name]} | " + " | ".join(row) + " |")
        if med["bare"]:
            paired = [
                f"{s['per_s'] / b['per_s']:.2f}"
                for b, s in zip(results["bare"], results["send"], strict=False)
                if b["per_s"]
            ]
            ratio = med["send"] / med["bare"]
            print(
                f"\nratio send/bare: {ratio:.2f} (per round: {', '.join(paired)}); "
                f"floor 0.50: {'met' if ratio >= 0.5 else 'NOT met'}"
            )
        if med["commit"]:
            print(f"ratio send/commit: {med['send'] / med['commit']:.2f}")

        got = warm["send"] + sum(r["ok"] for r in results["send"])
        rows = int(run_checked([py, "-c", COUNT], env, timeout=120).strip().splitlines()[-1])
        print(
            f"send: {got} x 201 received (warm-up included), {rows} Message rows stored"
            f" -> {'OK' if rows == got else 'MISMATCH'}"
        )
        if rows != got:
            failed = True
            problems.append(f"send: {got} x 201 but {rows} Message rows")
        summary.write(
            args.json,
            bench="api_send",
            database=args.database,
            size=f"-n {args.requests} -c {args.concurrency} --rounds {args.rounds}",
            checks_passed=not failed,
            problems=problems,
            results=[
                summary.result(
                    "API send",
                    med["send"],
                    "req/s",
                    baseline="bare DRF endpoint",
                    baseline_figure=med["bare"],
                    floor=("ratio", ">=", 0.5),
                ),
                summary.result(
                    "API send",
                    med["send"],
                    "req/s",
                    baseline="DRF endpoint + one committed row",
                    baseline_figure=med["commit"],
                ),
            ],
        )
        if failed:
            web_log.flush()
            tail = (tmp / "web.log").read_bytes()[-3000:].decode(errors="replace")
            print(f"FAILED; end of the web log:\n{tail}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        stop_process(web)
        web_log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
