"""End-to-end relay throughput: accept -> queue -> relay -> a local sink, sendmsg beside
Postfix relaying the same load to the same sink in the same run.

    .venv/bin/python bench/e2e_relay.py [-n 5000] [-c 20] [-k 0] [-s 5120] [--rounds 1]
                                        [--time-limit 300] [--workers W]
                                        [--database sqlite|postgres] [--pg-no-fsync]
                                        [--verify 5] [--drain-timeout 60] [--keep] [--json FILE]

What runs (all on 127.0.0.1, in temp dirs, removed at the end):

* sendmsg, as a throwaway platform: a temp data dir, `manage.py bootstrap`, a tenant whose
  domain (bench.test) is marked verified and has the ACTIVE DKIM key `add_domain` made (so
  relayed mail is signed: RSA-2048), an SMTP login; `manage.py smtpd submission` (its
  default processes) and `manage.py qcluster` (the delivery workers: SENDMSG_WORKERS, the
  platform's default unless --workers). The database is SQLite (WAL, synchronous=FULL, as
  the platform runs it) or, with --database postgres, a throwaway PostgreSQL cluster
  (bench/database.py, on tests/peers/postgres.py) with fsync and synchronous_commit ON,
  so a 250 means durably stored on both sides; --pg-no-fsync keeps the test cluster's
  fsync=off instead.
* DNS: the test suite's unbound server (tests/peers/dns_server.py) with one zone,
  bench.test: what `manage.py domain records bench.test` prints (so the DKIM key is
  published) plus `rcpt.bench.test MX mx.rcpt.bench.test`, `mx.rcpt.bench.test A
  127.0.0.1`. sendmsg gets SENDMSG_DNS_SERVERS=<unbound>, SENDMSG_RELAY_PORT=<sink port>,
  SENDMSG_RELAY_ALLOW_PRIVATE=true, so it resolves the recipients' MX like any domain and
  relays to the sink.
* Postfix, the anchor: a private instance (bench/postfix_private.py, relay mode) with the
  same front door as sendmsg (STARTTLS required, AUTH PLAIN through Cyrus sasldb) and
  `relayhost = [127.0.0.1]:<sink port>`: Postfix's queue, scheduler and defaults (20
  parallel deliveries per destination, connection caching). Postfix does NO DKIM signing
  and no MX lookup (a relayhost in brackets): sendmsg does both, and that is in its figure.
* The sink: Postfix's `smtp-sink` (C, one process, event-driven) on 127.0.0.1:<sink
  port>, the same program and port for both systems, a fresh process for every run (its
  counter starts at 0), each message dumped to a file of its own (no fsync) so that after
  the run the bench can count how many carry a DKIM-Signature and check a sample of
  sendmsg's signatures with dkimpy against the key published in the test DNS. Its ceiling
  (`smtp-source` -> `smtp-sink`, -c sessions, a new connection per message, dumping on) is
  measured first and printed: end-to-end rates near it would be the sink's limit, not the
  system's.

The load is bench/submission.py's asyncio client (its Load and build_message): STARTTLS
(certificate not verified), AUTH PLAIN, -n messages of ~-s bytes to one recipient
(rcpt@rcpt.bench.test) over -c concurrent sessions, -k messages per connection (0: each
session keeps its connection; sendmsg ends a session after 1,000 messages, so keep -n/-c
or -k under that). After an untimed warm-up of 2 x C messages each, the runs alternate
postfix, sendmsg, postfix, sendmsg ... (--rounds rounds). For each run the clock starts
before the first connection and stops when the sink has counted as many messages as the
client got 250s (end to end); the accept rate (250s over the client's own time) is printed
beside it. Each run is bounded by -n messages and --time-limit seconds for accept and
relay together. After each run, outside the clock, the bench waits (at most
--drain-timeout s) until the system has nothing in flight (Postfix: no queue files;
sendmsg: no recipient queued or sending), then stops the sink and reads its dumps.

Checks (exit status 1 if any fails, or on any client error or refusal): for every run,
the sink's final count equals the 250s the client got (nothing lost, nothing sent twice);
every sendmsg message at the sink carries a DKIM-Signature and every sampled signature
verifies (--verify per run); after every sendmsg run, every recipient row in the
platform's database is `delivered` and there are as many as 250s so far.

It prints, per run and as medians: accept msgs/s, end-to-end msgs/s (per run also the
connections the sink saw: Postfix caches them, and so may sendmsg), the server's CPU
per message over the end-to-end window (sendmsg: the smtpd and qcluster process trees,
and on PostgreSQL the database server's; Postfix: its master and every child, reaped ones
included; unbound's is in neither) and the sink's; then the ratio
sendmsg/Postfix end to end per round and its median against the floor (0.50) and the aim
(1.00, parity). --json FILE also writes the medians and ratios for bench/suite.py.

Pitfalls:
* The machine's 2 cores are shared by the client, the system under test, the sink and
  unbound; absolute figures move with whatever else runs (other test runs, CPU steal) and
  with the disk's fsync speed. Compare the ratios of one run, not figures across days.
* The domain is marked verified and checked "now" directly in the database, so the
  domain re-check schedule does not re-check it against the bench's partial zone.
* SENDMSG_DEFAULT_PLAN_RATE is raised: the hourly plan rate would otherwise refuse
  long runs (the rate is still checked and counted on every message).
* sendmsg's qcluster polls its ORM broker while Postfix runs; each system is idle (but
  running) during the other's runs, and runs never overlap (drained in between).
* smtp-sink advertises no STARTTLS, so both systems relay in plaintext; both would use
  it if offered (sendmsg opportunistically, Postfix with smtp_tls_security_level = may).

All traffic stays on 127.0.0.1. Every process started here is stopped by its PID (the
platform's by their own process groups, tests/peers/processes.py), Postfix by
`postfix -c DIR stop` of its own config dir, PostgreSQL by `pg_ctl stop` of its own
data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import database
import dkim
import dns.exception
import dns.resolver
import postfix_private
import summary
from submission import (
    DOMAIN,
    HOST,
    RCPT,
    ROOT,
    SENDER,
    Load,
    build_message,
    cpu_seconds,
    fmt,
    free_ports,
    load_arguments,
    run_checked,
    wait_for_banner,
)

sys.path.insert(0, str(ROOT))
from tests.peers.dns_server import DnsServer  # noqa: E402
from tests.peers.processes import ManagedProcess, manage_py  # noqa: E402

RCPT_DOMAIN = RCPT.split("@", 1)[1]
PLAN_RATE = 100_000_000
POLL = 0.01  # seconds between looks at the sink's counter while the clock runs
NAMES = ("postfix", "sendmsg")

SETUP = (
    """
import json, django
django.setup()
from django.conf import settings
from django.db import connection
from django.utils import timezone
from domains.models import Domain
from domains.tenancy import create_tenant, add_domain
from delivery.credentials import create_smtp_credential
tenant = create_tenant(name="Bench", owner_email="owner@bench.test").tenant
domain = add_domain(tenant=tenant, name=%r)
# verified and checked now: the re-check schedule leaves it alone for the run
Domain.objects.filter(pk=domain.pk).update(status="verified", checked_at=timezone.now())
keys = domain.signing_keys()
credential, password = create_smtp_credential(tenant=tenant)
print(json.dumps({
    "username": credential.username,
    "password": password,
    "signing_keys": [f"{k.selector} ({k.algorithm} {k.bits})" for k in keys],
    "workers": settings.Q_CLUSTER["workers"],
    "smtp_processes": settings.SENDMSG_SMTP_PROCESSES,
    "database": connection.vendor,
}))
"""
    % DOMAIN
)
"""Creates the bench tenant, its verified domain (with its active DKIM key) and an SMTP
login; prints them with the settings the platform's processes will run with."""

DRAIN = """
import json, sys, time, django
django.setup()
from django.db.models import Count
from delivery.models import Message, Recipient
IN_FLIGHT = {"queued", "sending"}
deadline = time.monotonic() + float(sys.argv[1])
while True:
    states = dict(Recipient.objects.values_list("state").annotate(n=Count("id")).order_by())
    if not any(states.get(s) for s in IN_FLIGHT) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps({"messages": Message.objects.count(), "states": states}))
"""
"""Waits (at most argv[1] seconds) until no recipient is queued or sending; prints the
Message count and the recipients per state."""


def postfix_tool(name: str) -> str:
    """A Postfix program from PATH, else from Postfix's command_directory."""
    found = shutil.which(name)
    if found:
        return found
    directory = subprocess.run(
        ["postconf", "-h", "command_directory"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(directory) / name)


class Sink:
    """smtp-sink on 127.0.0.1:port, a fresh process for each run (its counter starts at 0),
    dumping every message to a file of its own in that run's directory."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.binary = postfix_tool("smtp-sink")
        self.proc: subprocess.Popen | None = None
        self.dump = self.counter = root
        self._out = None

    def start(self, label: str) -> None:
        self.dump = self.root / label
        self.counter = self.root / f"{label}.counter"
        self.dump.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:  # smtp-sink must drop root; the dumps are written as nobody
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dump, nobody.pw_uid, nobody.pw_gid)
            as_user = ["-u", "nobody"]
        self._out = open(self.counter, "wb")
        # -c: running counters on stdout ("... mesg=N\r"), updated at every "."
        self.proc = subprocess.Popen(
            [self.binary, *as_user, "-c", "-d", f"{self.dump}/m.", f"{HOST}:{self.port}", "1024"],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        wait_for_banner(self.port, self.proc, timeout=10)

    def _counter(self, name: bytes) -> int:
        try:
            with open(self.counter, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 200))
                found = re.findall(rb"%s=(\d+)" % name, f.read())
        except OSError:
            return 0
        return int(found[-1]) if found else 0

    def count(self) -> int:
        """Messages the sink has received (each "." it answered)."""
        return self._counter(b"mesg")

    def connections(self) -> int:
        """Connections the sink has had: the sessions that have ended (less start()'s
        readiness probe) and those still open (a sender may keep some cached)."""
        ended = max(0, self._counter(b"sess") - 1)
        open_now = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == self.port:
                    open_now += 1  # ESTABLISHED, the sink's end
        return ended + open_now

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def files(self) -> list[Path]:
        return sorted(self.dump.iterdir()) if self.dump.is_dir() else []

    def discard(self) -> None:
        """Remove this run's dumps (40 MB for 5,000 messages) once they are read."""
        shutil.rmtree(self.dump, ignore_errors=True)
        self.counter.unlink(missing_ok=True)

    def ceiling(self, n: int, sessions: int, size: int, time_limit: float) -> float:
        """smtp-source -> this sink, a new connection per message: the rate the sink
        (and the client, on the same cores) can take, dumping on."""
        self.start("ceiling")
        try:
            t0 = time.perf_counter()
            subprocess.run(
                [postfix_tool("smtp-source"), "-m", str(n), "-s", str(sessions),
                 "-l", str(size), "-f", SENDER, "-t", RCPT, "-M", "client.bench.test",
                 f"{HOST}:{self.port}"],
                check=True, capture_output=True, timeout=time_limit,
            )  # fmt: skip
            deadline = time.perf_counter() + 10
            while self.count() < n and time.perf_counter() < deadline:
                time.sleep(POLL)
            got = self.count()
            return got / (time.perf_counter() - t0)
        finally:
            self.stop()
            self.discard()


def header_block(path: Path) -> bytes:
    """The dumped message's header lines: smtp-sink's own, then the message's."""
    with open(path, "rb") as f:
        head = f.read(65536)
    return re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]


def dkim_signed(path: Path) -> bool:
    return re.search(rb"(?im)^dkim-signature:", header_block(path)) is not None


def dkim_verifies(path: Path, resolver: dns.resolver.Resolver) -> bool:
    """dkimpy's verdict on the topmost signature, the key looked up in the test DNS. The
    headers smtp-sink puts on top (X-Client-Addr ... Received) are not signed."""

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(next(iter(answer)).strings)

    return bool(dkim.verify(path.read_bytes(), dnsfunc=txt))


async def end_to_end(load: Load, sink: Sink, limit: float) -> dict:
    """Runs the load, then waits until the sink has as many messages as the client got
    250s; the clock runs from before the first connection until then (at most limit s)."""
    t0 = time.perf_counter()
    res = await load.run()
    deadline = t0 + limit
    while sink.count() < res["ok"] and time.perf_counter() < deadline:
        await asyncio.sleep(POLL)
    seconds = time.perf_counter() - t0
    got = sink.count()
    res.update(
        e2e_seconds=seconds,
        sink_at_stop=got,
        relayed_in_time=got >= res["ok"],
        e2e_per_s=min(got, res["ok"]) / seconds if seconds else 0.0,
    )
    return res


def main() -> int:
    p = load_arguments(__doc__, messages=5000)
    p.add_argument("--rounds", type=int, default=1, help="rounds of postfix, sendmsg (default 1)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        help="seconds each run (accept and relay) may last at most (default 300)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="SENDMSG_WORKERS for the qcluster (default: the platform's default)",
    )
    database.add_arguments(p)
    summary.add_argument(p)
    p.add_argument(
        "--verify",
        type=int,
        default=5,
        help="sendmsg messages per run whose DKIM signature dkimpy verifies (default 5)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait after a run for the system to have nothing in flight",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the platform's temp dir (logs, data) and print where it is",
    )
    args = p.parse_args()
    with database.throwaway_database(args) as cluster:
        return run(args, cluster)


def run(args: argparse.Namespace, cluster: database.PostgresCluster | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sendmsg-bench-e2e-"))
    sink_root = Path(tempfile.mkdtemp(prefix="sendmsg-bench-sink-"))
    os.chmod(sink_root, 0o755)  # smtp-sink writes its dumps as nobody
    sub_port, tls_port, inbound_port, sink_port, pf_port = free_ports(5)
    py = sys.executable
    dns_server = DnsServer(tmp / "dns")
    postfix: postfix_private.PrivatePostfix | None = None
    smtpd = qcluster = None
    sink: Sink | None = None
    failed = False
    problems: list[str] = []

    def fail(text: str) -> None:
        nonlocal failed
        failed = True
        problems.append(text)
        print(f"    FAILED: {text}", flush=True)

    try:
        postfix_private.ensure_installed()  # also brings smtp-sink and smtp-source
        sink = Sink(sink_root, sink_port)
        dns_server.start()
        env = database.platform_env(cluster)
        env.update(
            SENDMSG_DATA_DIR=str(tmp / "data"),
            SENDMSG_HOSTNAME="mta.bench.test",
            SENDMSG_SUBMISSION_PORT=str(sub_port),
            SENDMSG_SUBMISSION_TLS_PORT=str(tls_port),
            SENDMSG_INBOUND_PORT=str(inbound_port),
            SENDMSG_DNS_SERVERS=f"{HOST}:{dns_server.port}",
            SENDMSG_RELAY_PORT=str(sink_port),
            SENDMSG_RELAY_ALLOW_PRIVATE="true",
            SENDMSG_DEFAULT_PLAN_RATE=str(PLAN_RATE),
            DJANGO_SETTINGS_MODULE="sendmsg.settings",
        )
        if args.workers is not None:
            env["SENDMSG_WORKERS"] = str(args.workers)
        print(
            f"setting up a throwaway platform ({args.database}) in a temp dir; ports: "
            f"submission {sub_port}, postfix {pf_port}, sink {sink_port}, dns {dns_server.port}",
            flush=True,
        )
        run_checked([py, "manage.py", "bootstrap"], env, timeout=600)
        setup = json.loads(
            run_checked([py, "-c", SETUP], env, timeout=120).strip().splitlines()[-1]
        )
        if not setup["signing_keys"]:
            raise SystemExit(f"{DOMAIN} has no active DKIM key: its mail would not be signed")
        records = [
            line
            for line in run_checked(
                [py, "manage.py", "domain", "records", DOMAIN], env, 120
            ).splitlines()
            if line.strip() and not line.startswith(";")
        ]
        dns_server.set_zone(
            DOMAIN,
            records
            + [f"{RCPT_DOMAIN}. IN MX 10 mx.{RCPT_DOMAIN}.", f"mx.{RCPT_DOMAIN}. IN A {HOST}"],
        )
        resolver = dns_server.resolver()
        mx = [str(r.exchange) for r in resolver.resolve(RCPT_DOMAIN, "MX")]
        print(
            f"sendmsg: database {setup['database']}, {setup['smtp_processes']} submission "
            f"processes, {setup['workers']} delivery workers; {DOMAIN} verified, signing with "
            f"{', '.join(setup['signing_keys'])}; {RCPT_DOMAIN} MX {', '.join(mx)} -> {HOST}",
            flush=True,
        )

        ceiling_n = min(max(args.messages, 2000), 10000)
        ceiling = sink.ceiling(ceiling_n, args.concurrency, args.size, args.time_limit)
        print(
            f"sink ceiling: smtp-source -> smtp-sink (dumping every message), {ceiling_n} "
            f"messages over {args.concurrency} sessions, a new connection per message: "
            f"{ceiling:,.1f} msgs/s",
            flush=True,
        )

        logs = tmp / "logs"
        smtpd = ManagedProcess(
            "smtpd", manage_py("smtpd", "submission"), env=env, cwd=ROOT, log_dir=logs
        )
        qcluster = ManagedProcess(
            "qcluster", manage_py("qcluster"), env=env, cwd=ROOT, log_dir=logs
        )
        smtpd.start()
        qcluster.start()
        wait_for_banner(sub_port, None)
        qcluster.wait_for_log("running", timeout=60)

        cert, key = tmp / "data" / "tls" / "cert.pem", tmp / "data" / "tls" / "key.pem"
        pf_login = ("bench", base64.b32encode(os.urandom(15)).decode())
        postfix = postfix_private.PrivatePostfix(
            Path(tempfile.mkdtemp(prefix="sendmsg-bench-postfix-")),
            pf_port,
            cert,
            key,
            *pf_login,
            relay_port=sink_port,
        )
        postfix.configure()
        postfix.start()
        wait_for_banner(pf_port, None)
        logins = {"postfix": pf_login, "sendmsg": (setup["username"], setup["password"])}
        ports = {"postfix": pf_port, "sendmsg": sub_port}

        # On PostgreSQL, the database server's processes work for sendmsg too.
        pg_pid = database.server_pid(cluster)

        def server_cpu(name: str) -> float:
            if name == "postfix":
                return cpu_seconds(postfix.master_pid)
            total = cpu_seconds(smtpd.pid) + cpu_seconds(qcluster.pid)
            return total + (cpu_seconds(pg_pid) if pg_pid else 0.0)

        accepted = {name: 0 for name in NAMES}  # 250s so far, warm-up included

        def drain(name: str) -> None:
            """Nothing in flight any more (bounded); for sendmsg, check every row."""
            if name == "postfix":
                deadline = time.monotonic() + args.drain_timeout
                while postfix.queued() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if postfix.queued():
                    fail(f"postfix: {postfix.queued()} queue files left after the run")
                return
            out = run_checked([py, "-c", DRAIN, str(args.drain_timeout)], env, timeout=600)
            rows = json.loads(out.strip().splitlines()[-1])
            states = rows["states"]
            if rows["messages"] != accepted["sendmsg"]:
                fail(f"sendmsg: {accepted['sendmsg']} x 250 but {rows['messages']} Message rows")
            if states != {"delivered": accepted["sendmsg"]}:
                fail(
                    f"sendmsg: recipients by state {states}, expected all "
                    f"{accepted['sendmsg']} delivered"
                )

        def run(name: str, n: int, label: str) -> dict:
            sink.start(label)
            try:
                load = Load(ports[name], args, *logins[name], n)
                cpu0, sink_cpu0 = server_cpu(name), cpu_seconds(sink.pid)
                res = asyncio.run(end_to_end(load, sink, args.time_limit))
                cpu, sink_cpu = server_cpu(name) - cpu0, cpu_seconds(sink.pid) - sink_cpu0
                ok = res["ok"]
                res["cpu_ms_per_msg"] = cpu * 1000 / ok if ok else None
                res["sink_cpu_ms_per_msg"] = sink_cpu * 1000 / ok if ok else None
                accepted[name] += ok
                drain(name)
                res["sink_count"] = sink.count()
                res["connections"] = sink.connections()
            finally:
                sink.stop()
            files = sink.files()
            res["signed"] = sum(dkim_signed(f) for f in files)
            res["verified"] = res["sampled"] = 0
            if name == "sendmsg" and files and args.verify > 0:
                sample = random.sample(files, min(args.verify, len(files)))
                res["sampled"] = len(sample)
                res["verified"] = sum(dkim_verifies(f, resolver) for f in sample)
            res["dumped"] = len(files)
            sink.discard()
            for sample_text in res["samples"]:
                print(f"    {name}: {sample_text}")
            if res["errors"] or res["rejected"]:
                fail(f"{name}: {res['errors']} errors, {res['rejected']} refusals")
            if not res["relayed_in_time"]:
                fail(
                    f"{name}: the sink had {res['sink_at_stop']} of {res['ok']} messages at "
                    f"the time limit"
                )
            if res["sink_count"] != res["ok"] or res["dumped"] != res["ok"]:
                fail(
                    f"{name}: {res['ok']} x 250 but the sink counted {res['sink_count']} "
                    f"({res['dumped']} dumped)"
                )
            if name == "sendmsg" and res["signed"] != res["dumped"]:
                fail(f"sendmsg: only {res['signed']} of {res['dumped']} messages DKIM-signed")
            if res["verified"] != res["sampled"]:
                fail(f"sendmsg: {res['verified']} of {res['sampled']} sampled signatures verify")
            return res

        for name in NAMES:  # untimed warm-up: first connections, imports, processes
            run(name, 2 * args.concurrency, f"warm-{name}")

        print(
            f"{args.rounds} rounds of -n {args.messages} -c {args.concurrency} "
            f"-k {args.per_connection}, {len(build_message(args.size))}-byte messages, "
            f"STARTTLS + AUTH PLAIN, end to end to the sink, time limit "
            f"{args.time_limit:.0f}s per run",
            flush=True,
        )
        results: dict[str, list[dict]] = {name: [] for name in NAMES}
        for rnd in range(1, args.rounds + 1):
            for name in NAMES:
                res = run(name, args.messages, f"round{rnd}-{name}")
                results[name].append(res)
                if name == "sendmsg":
                    dkim_note = (
                        f"DKIM-signed {res['signed']}/{res['dumped']}, "
                        f"{res['verified']}/{res['sampled']} sampled verify"
                    )
                else:
                    dkim_note = f"DKIM-signed {res['signed']}/{res['dumped']} (no DKIM in Postfix)"
                print(
                    f"  round {rnd} {name:8} {res['ok']:6d} x 250: accept {res['seconds']:6.1f}s"
                    f" = {fmt(res['msgs_per_s']):>7} msgs/s | sink {res['sink_at_stop']} after "
                    f"{res['e2e_seconds']:6.1f}s = {fmt(res['e2e_per_s']):>7} msgs/s end to end"
                    f" over {res['connections']} connections"
                    f" | server CPU {fmt(res['cpu_ms_per_msg'], 2)} ms/msg | {dkim_note}"
                    + ("" if res["relayed_in_time"] and not res["timed_out"] else " TIME LIMIT"),
                    flush=True,
                )

        labels = {
            "postfix": "Postfix (relayhost = the sink; no DKIM)",
            "sendmsg": "sendmsg (smtpd submission + qcluster; DKIM on)",
        }
        print(
            "\n| system | accept msgs/s | end-to-end msgs/s | server CPU ms/msg | sink CPU ms/msg |"
        )
        print("|---|---|---|---|---|")
        med: dict[str, dict[str, float | None]] = {}
        for name in NAMES:
            runs = results[name]
            med[name] = {
                key: statistics.median(r[key] for r in runs if r[key] is not None)
                if any(r[key] is not None for r in runs)
                else None
                for key in ("msgs_per_s", "e2e_per_s", "cpu_ms_per_msg", "sink_cpu_ms_per_msg")
            }
            m = med[name]
            print(
                f"| {labels[name]} | {fmt(m['msgs_per_s'])} | {fmt(m['e2e_per_s'])} | "
                f"{fmt(m['cpu_ms_per_msg'], 2)} | {fmt(m['sink_cpu_ms_per_msg'], 3)} |"
            )
        print(f"| sink ceiling (smtp-source -> smtp-sink) | | {fmt(ceiling)} | | |")
        print()
        round_ratios: dict[str, float | None] = {"e2e_per_s": None, "msgs_per_s": None}
        for key, what in (("e2e_per_s", "end to end"), ("msgs_per_s", "accept")):
            paired = [
                s[key] / f[key]
                for f, s in zip(results["postfix"], results["sendmsg"], strict=True)
                if f[key]
            ]
            if not paired:
                continue
            ratio = statistics.median(paired)
            round_ratios[key] = ratio
            verdict = ""
            if key == "e2e_per_s":
                verdict = (
                    f"; floor 0.50: {'met' if ratio >= 0.5 else 'NOT met'}, aim 1.00 (parity): "
                    f"{'met' if ratio >= 1.0 else 'not yet'}"
                )
            print(
                f"ratio sendmsg/Postfix {what}: {ratio:.2f} (median of per-round ratios: "
                f"{', '.join(f'{r:.2f}' for r in paired)}){verdict}"
            )
        print(
            f"checks: 250s = sink counts for every run; sendmsg {accepted['sendmsg']} x 250 "
            f"(warm-up included), every recipient delivered, every message DKIM-signed: "
            f"{'FAILED' if failed else 'OK'}"
        )
        summary.write(
            args.json,
            bench="e2e_relay",
            database=args.database,
            size=(
                f"-n {args.messages} -c {args.concurrency} -k {args.per_connection} "
                f"--rounds {args.rounds}, delivery workers: {setup['workers']}"
            ),
            checks_passed=not failed,
            problems=problems,
            results=[
                summary.result(
                    f"end-to-end relay ({setup['workers']} delivery "
                    f"worker{'' if setup['workers'] == 1 else 's'})",
                    med["sendmsg"]["e2e_per_s"],
                    "msgs/s",
                    baseline="Postfix (relay, no DKIM)",
                    baseline_figure=med["postfix"]["e2e_per_s"],
                    ratio=round_ratios["e2e_per_s"],
                    floor=("ratio", ">=", 0.5),
                ),
            ],
        )
        if failed:
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            for proc in (smtpd, qcluster):
                tail = proc.log_path.read_bytes()[-3000:].decode(errors="replace")
                print(f"end of the {proc.name} log:\n{tail}", file=sys.stderr)
            print(f"end of Postfix's log:\n{postfix.log_tail()}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        if sink is not None:
            sink.stop()
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.root, ignore_errors=True)
        for proc in (qcluster, smtpd):
            if proc is not None:
                with contextlib.suppress(RuntimeError):  # never started
                    proc.stop()
        dns_server.stop()
        shutil.rmtree(sink_root, ignore_errors=True)
        if args.keep:
            print(f"kept the platform's temp dir (logs, data): {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
