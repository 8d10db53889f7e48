"""A real DNS resolver for tests: unbound on loopback serving our own test zones.

unbound runs as the calling user on 127.0.0.1 at a free port. Each test zone is an
`auth-zone` read from a zone file with `for-downstream: no` / `for-upstream: yes`, so unbound
answers like a recursive resolver that happens to know these zones: CNAMEs are chased across
our zones, and NXDOMAIN, SERVFAIL (empty zone file), timeouts (`local-zone deny`) and REFUSED
(`always_refuse`) can all be produced per name in one process. `local-zone: "." refuse` keeps
it from ever answering (or recursing) for anything else.

Every change rewrites the config and zone files and runs `unbound-control reload`. `reload`
answers "ok" before the server has actually re-read anything, so each change also bumps the
SOA serial of a private canary zone and we poll until a query sees the new serial: once it
does, every zone file and local-zone of that generation is live.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.zone

from tests.peers.ports import free_port

# Private zone whose SOA serial tells us which config generation unbound is serving.
# Under .invalid so it can never clash with a zone a test wants to serve.
_CANARY = "dnsserver-canary.invalid."

_START_TIMEOUT = 10.0  # seconds for unbound to answer after start()
_APPLY_TIMEOUT = 10.0  # seconds for a reload to become visible
_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes; keep a margin

_TXT_TYPES = frozenset({"TXT", "SPF"})
_CLASSES = frozenset({"IN", "CH", "HS", "CS"})
_MAX_TXT_STRING = 255  # bytes in one <character-string> (RFC 1035 3.3)


def _canonical(origin: str) -> str:
    """Return `origin` as a lower-case absolute name with the trailing dot."""
    return dns.name.from_text(origin).canonicalize().to_text()


def _split_txt_units(content: str) -> list[tuple[str, int]]:
    """Split the inside of a quoted zone-file string into (source text, wire bytes) units.

    An escape (`\\DDD` or `\\X`) is one unit so a chunk boundary never cuts through it, and a
    non-ASCII character counts its UTF-8 length since that is what goes on the wire.
    """
    units: list[tuple[str, int]] = []
    i = 0
    while i < len(content):
        ch = content[i]
        if ch == "\\" and i + 1 < len(content):
            if content[i + 1 : i + 4].isdigit() and len(content[i + 1 : i + 4]) == 3:
                units.append((content[i : i + 4], 1))
                i += 4
            else:
                nxt = content[i + 1]
                units.append((content[i : i + 2], len(nxt.encode("utf-8"))))
                i += 2
        else:
            units.append((ch, len(ch.encode("utf-8"))))
            i += 1
    return units


def _chunk_quoted(content: str) -> list[str]:
    """Split one quoted string's content into quoted strings of at most 255 wire bytes."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for text, nbytes in _split_txt_units(content):
        if size + nbytes > _MAX_TXT_STRING:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(text)
        size += nbytes
    chunks.append("".join(current))
    return [f'"{c}"' for c in chunks]


def _tokenize(line: str) -> list[tuple[str, str]]:
    """Split a zone-file line into ("space" | "word" | "quoted" | "comment", text) pieces.

    Joining the texts gives the line back unchanged, so only the pieces we mean to rewrite
    are rewritten.
    """
    pieces: list[tuple[str, str]] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch.isspace():
            j = i
            while j < n and line[j].isspace():
                j += 1
            pieces.append(("space", line[i:j]))
            i = j
        elif ch == ";":
            pieces.append(("comment", line[i:]))
            break
        elif ch == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            if j >= n:
                raise ValueError(f"unterminated quoted string in zone line: {line!r}")
            pieces.append(("quoted", line[i : j + 1]))
            i = j + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '";':
                j += 2 if line[j] == "\\" else 1
            pieces.append(("word", line[i:j]))
            i = j
    return pieces


def _is_txt_record(line: str, pieces: list[tuple[str, str]]) -> bool:
    """Tell whether a zone-file line is a TXT (or SPF) record.

    The type is the first word after an optional owner (absent when the line starts with
    white space), an optional TTL and an optional class, in either order.
    """
    words = [text for kind, text in pieces if kind in ("word", "quoted")]
    if words and not line[:1].isspace():
        words = words[1:]
    for word in words[:3]:
        upper = word.strip("()").upper()
        if upper in _TXT_TYPES:
            return True
        if upper in _CLASSES or upper[:1].isdigit():
            continue  # a class or a TTL such as 300 or 1h
        return False
    return False


def split_long_txt(line: str) -> str:
    """Rewrite a zone-file line so no quoted TXT string exceeds 255 bytes.

    Callers may give either pre-split strings (`"part1" "part2"`) or one long string; a
    resolver reassembles them with `b"".join(rr.strings)`. Non-TXT lines are returned as is.
    """
    if '"' not in line:
        return line
    pieces = _tokenize(line)
    if not _is_txt_record(line, pieces):
        return line
    out: list[str] = []
    for kind, text in pieces:
        if kind == "quoted":
            content = text[1:-1]
            if sum(n for _, n in _split_txt_units(content)) > _MAX_TXT_STRING:
                out.append(" ".join(_chunk_quoted(content)))
                continue
        out.append(text)
    return "".join(out)


class DnsServer:
    """unbound on 127.0.0.1 serving test zones like a recursive resolver.

    Use one per test module (start takes ~0.1 s); changes apply live via unbound-control.
    Overrides (`servfail`, `drop`, `refuse`) persist until undone with `set_zone` /
    `clear_override`, so tests sharing a server should use distinct names.
    """

    host: str
    port: int

    def __init__(self, workdir: pathlib.Path) -> None:
        """Prepare (but do not start) a server whose files live under `workdir`."""
        self.workdir = pathlib.Path(workdir)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self._zones: dict[str, list[str]] = {}
        self._servfail: set[str] = set()
        self._deny: set[str] = set()
        self._refuse: set[str] = set()
        self._generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: IO[bytes] | None = None
        self._ctl_tmpdir: str | None = None
        self._conf = self.workdir / "unbound.conf"
        self._log = self.workdir / "unbound.log"
        self._stderr = self.workdir / "unbound.stderr"
        self._zonedir = self.workdir / "zones"
        self._ctl_sock = self.workdir / "unbound.ctl"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start unbound and return once it answers queries (raises with its log if not)."""
        if self._proc is not None:
            raise RuntimeError("DnsServer already started")
        for tool in ("unbound", "unbound-control"):
            if shutil.which(tool) is None and not pathlib.Path("/usr/sbin", tool).exists():
                raise RuntimeError(f"{tool} not found: apt-get install unbound")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._zonedir.mkdir(exist_ok=True)
        if len(os.fsencode(self._ctl_sock)) > _SUN_PATH_MAX:
            # Deep pytest tmp dirs overflow sun_path; the socket alone moves to a short dir.
            self._ctl_tmpdir = tempfile.mkdtemp(prefix="unbound-ctl-")
            self._ctl_sock = pathlib.Path(self._ctl_tmpdir) / "ctl"
        self._write_files()
        stderr = open(self._stderr, "wb")  # noqa: SIM115 - closed in stop()
        self._stderr_file = stderr
        self._proc = subprocess.Popen(
            [self._binary("unbound"), "-d", "-c", str(self._conf)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            cwd=self.workdir,
        )
        # A test process that dies without stop() should not leave unbound running.
        atexit.register(self.stop)
        try:
            self._wait_for_generation(_START_TIMEOUT, "start")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop unbound (SIGTERM to its pid, then wait; SIGKILL after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            atexit.unregister(self.stop)
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._ctl_tmpdir is not None:
            shutil.rmtree(self._ctl_tmpdir, ignore_errors=True)
            self._ctl_tmpdir = None

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- zone content ------------------------------------------------------------------

    def set_zone(self, origin: str, lines: list[str]) -> None:
        """Replace zone `origin` with these zone-file lines and apply them live.

        Lines are ordinary zone-file lines relative to `origin` (`@`, relative or absolute
        names; TTL and class optional). SOA and NS for the apex are added. TXT strings over
        255 bytes are split. Also ends a `servfail()` of the zone. Returns once a query sees
        the new data.
        """
        key = _canonical(origin)
        new_lines = [split_long_txt(line) for line in lines]
        self._validate(key, new_lines)
        self._zones[key] = new_lines
        self._servfail.discard(key)
        self._apply()

    def add_lines(self, origin: str, lines: list[str]) -> None:
        """Append lines to an existing zone (see `set_zone`) and apply them live."""
        key = _canonical(origin)
        if key not in self._zones:
            raise KeyError(f"zone {origin!r} not set; call set_zone() first")
        new_lines = self._zones[key] + [split_long_txt(line) for line in lines]
        self._validate(key, new_lines)
        self._zones[key] = new_lines
        self._servfail.discard(key)
        self._apply()

    def servfail(self, origin: str) -> None:
        """Make every name in zone `origin` answer SERVFAIL (its zone file is emptied).

        The zone's lines are kept: `add_lines` restores them, `set_zone` replaces them.
        """
        key = _canonical(origin)
        self._zones.setdefault(key, [])
        self._servfail.add(key)
        self._apply()

    def drop(self, name: str) -> None:
        """Make queries for `name` and names below it go unanswered (client timeout)."""
        key = _canonical(name)
        self._refuse.discard(key)
        self._deny.add(key)
        self._apply()

    def refuse(self, name: str) -> None:
        """Make queries for `name` and names below it answer REFUSED."""
        key = _canonical(name)
        self._deny.discard(key)
        self._refuse.add(key)
        self._apply()

    def clear_override(self, name: str) -> None:
        """Undo `drop(name)` / `refuse(name)` so the name resolves normally again."""
        key = _canonical(name)
        self._deny.discard(key)
        self._refuse.discard(key)
        self._apply()

    def resolver(self) -> dns.resolver.Resolver:
        """Return a dnspython resolver that asks only this server (3 s lifetime)."""
        # configure=False: never read /etc/resolv.conf, which points off the machine.
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [self.host]
        res.port = self.port
        res.lifetime = 3.0
        res.timeout = 3.0
        return res

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _binary(name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _zone_file(self, origin: str) -> pathlib.Path:
        return self._zonedir / f"{origin.rstrip('.') or 'root'}.zone"

    def _zone_text(self, origin: str, lines: list[str], serial: int) -> str:
        # Short TTLs: a reload flushes the cache anyway, these only matter to clients.
        head = [
            f"$ORIGIN {origin}",
            "$TTL 60",
            f"@ 60 IN SOA ns.{origin} hostmaster.{origin} {serial} 3600 600 86400 1",
            f"@ 60 IN NS ns.{origin}",
        ]
        return "\n".join(head + lines) + "\n"

    def _validate(self, origin: str, lines: list[str]) -> None:
        """Parse the zone with dnspython first: a zone file unbound rejects on reload can
        make it exit, and dnspython's error names the bad line."""
        text = self._zone_text(origin, lines, 1)
        try:
            dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the zone text for context
            raise ValueError(f"bad zone {origin}: {exc}\n{text}") from exc

    def _write_files(self) -> None:
        self._generation += 1
        serial = self._generation
        self._zonedir.mkdir(parents=True, exist_ok=True)
        zones = dict(self._zones)
        for origin, lines in zones.items():
            text = "" if origin in self._servfail else self._zone_text(origin, lines, serial)
            self._zone_file(origin).write_text(text)
        self._zone_file(_CANARY).write_text(self._zone_text(_CANARY, [], serial))
        zones[_CANARY] = []

        def q(value: object) -> str:
            return '"' + str(value).replace('"', '\\"') + '"'

        conf = [
            "server:",
            f"  interface: {self.host}",
            f"  port: {self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            '  username: ""',  # stay the calling user, no chroot
            '  chroot: ""',
            f"  directory: {q(self.workdir)}",
            f"  pidfile: {q(self.workdir / 'unbound.pid')}",
            f"  logfile: {q(self._log)}",
            "  use-syslog: no",
            "  log-time-ascii: yes",
            "  verbosity: 1",
            "  num-threads: 1",
            "  so-reuseport: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',  # no DNSSEC validation, no trust anchor needed
            # Belt and braces against traffic off the machine: the iterator must never send
            # a query anywhere (e.g. for a CNAME target outside our zones); answers come only
            # from the auth-zones below.
            "  do-not-query-address: 0.0.0.0/0",
            "  do-not-query-localhost: yes",
            "  prefetch: no",
            "  serve-expired: no",
            "  minimal-responses: yes",
            '  local-zone: "." refuse',
        ]
        for origin in sorted(zones):
            conf.append(f"  local-zone: {q(origin)} typetransparent")
        for name in sorted(self._deny):
            conf.append(f"  local-zone: {q(name)} deny")
        for name in sorted(self._refuse):
            conf.append(f"  local-zone: {q(name)} always_refuse")
        for origin in sorted(zones):
            conf += [
                "auth-zone:",
                f"  name: {q(origin)}",
                f"  zonefile: {q(self._zone_file(origin))}",
                # Resolve through the zone like a resolver would (CNAMEs chased across
                # zones), rather than answering authoritatively for it.
                "  for-downstream: no",
                "  for-upstream: yes",
                "  fallback-enabled: no",
            ]
        conf += [
            "remote-control:",
            "  control-enable: yes",
            f"  control-interface: {q(self._ctl_sock)}",
            "  control-use-cert: no",
        ]
        tmp = self._conf.with_suffix(".conf.tmp")
        tmp.write_text("\n".join(conf) + "\n")
        tmp.replace(self._conf)

    def _apply(self) -> None:
        """Rewrite config and zone files, reload, and wait until the change is served."""
        if self._proc is None:
            return  # start() writes everything
        self._write_files()
        result = subprocess.run(
            [self._binary("unbound-control"), "-c", str(self._conf), "reload"],
            capture_output=True,
            timeout=_APPLY_TIMEOUT,
            check=False,
        )
        if result.returncode != 0 or b"ok" not in result.stdout:
            raise RuntimeError(
                "unbound-control reload failed: "
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
                f"\n{self._logs()}"
            )
        self._wait_for_generation(_APPLY_TIMEOUT, "reload")

    def _wait_for_generation(self, timeout: float, what: str) -> None:
        """Poll the canary SOA until its serial is the current generation."""
        query = dns.message.make_query(_CANARY, dns.rdatatype.SOA)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"unbound exited (code {code}) during {what}\n{self._logs()}")
            try:
                response = dns.query.udp(query, self.host, port=self.port, timeout=0.2)
            except (dns.exception.Timeout, OSError) as exc:
                last = repr(exc)
            else:
                rrset = response.get_rrset(
                    response.answer, dns.name.from_text(_CANARY), 1, dns.rdatatype.SOA
                )
                if rrset is not None and rrset[0].serial == self._generation:
                    return
                last = f"rcode {dns.rcode.to_text(response.rcode())}, answer {response.answer}"
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"unbound did not serve generation {self._generation} within {timeout} s "
                    f"after {what} (last: {last})\n{self._logs()}"
                )
            time.sleep(0.005)

    def _logs(self) -> str:
        parts = []
        for path in (self._stderr, self._log):
            try:
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}")
            except OSError:
                pass
        return "\n".join(parts)
