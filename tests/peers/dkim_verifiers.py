"""DKIM verifiers independent of dkimpy, for checking what our signer produces.

Two unrelated implementations: Perl's Mail::DKIM (libmail-dkim-perl) and OpenDKIM's
`opendkim -t` test mode (libopendkim + libunbound). Both resolve keys only through the
test DNS server given by host and port, never through /etc/resolv.conf.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import re
import shutil
import subprocess

_PERL_SCRIPT = pathlib.Path(__file__).with_name("dkim_verify.pl")
_TIMEOUT = 30  # seconds; a verifier that hangs should fail the test, not the CI job

# "verification (s=sel d=example.test, 2048-bit key, ...) succeeded"
_OPENDKIM_OK = re.compile(r"verification \(.*\) succeeded")

# libunbound puts RFC 6761/6762/7686 names (test., invalid., onion., home.arpa. ...) in
# built-in local zones that answer NXDOMAIN without asking anyone; turn those off so a
# forwarded test zone under them resolves. Other TLDs have no built-in zone and need nothing.
_UNBOUND_DEFAULT_ZONES = ("test.", "invalid.", "onion.", "home.arpa.", "resolver.arpa.")


def to_crlf(message: bytes) -> bytes:
    """Return `message` with every line ending (LF or CRLF) as CRLF, as on the SMTP wire."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def verify_mail_dkim_detailed(
    message: bytes, *, dns_host: str, dns_port: int
) -> list[tuple[str, str]]:
    """Verify with Perl Mail::DKIM and return (result, detail line) per signature.

    `detail` is Mail::DKIM's result_detail plus d= and s=, useful in assertion messages.
    A message without signatures yields [("none", ...)].
    """
    perl = shutil.which("perl") or "/usr/bin/perl"
    proc = subprocess.run(
        [perl, str(_PERL_SCRIPT), dns_host, str(dns_port)],
        input=to_crlf(message),
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        # Missing module or a crash is a broken test setup, not a DKIM result.
        raise RuntimeError(
            f"Mail::DKIM verifier exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace')}"
        )
    results: list[tuple[str, str]] = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.strip():
            results.append((line.partition("\t")[0], line))
    if not results:
        raise RuntimeError(f"Mail::DKIM verifier printed nothing: {proc.stderr!r}")
    return results


def verify_mail_dkim(message: bytes, *, dns_host: str, dns_port: int) -> list[str]:
    """Verify `message` with Perl Mail::DKIM; return one result per signature.

    Results are Mail::DKIM's words: "pass", "fail", "invalid", "temperror", ... or
    ["none"] when the message carries no DKIM-Signature. Keys are looked up at
    dns_host:dns_port. The message is sent with CRLF line endings, as on the wire.
    """
    return [
        result
        for result, _ in verify_mail_dkim_detailed(message, dns_host=dns_host, dns_port=dns_port)
    ]


def write_libunbound_conf(path: pathlib.Path, *, dns_host: str, dns_port: int) -> None:
    """Write a libunbound config that sends every query to dns_host:dns_port."""
    lines = [
        "server:",
        # The test server is on loopback, which libunbound refuses to query by default.
        "  do-not-query-localhost: no",
        # No DNSSEC validation: test zones are unsigned and there is no trust anchor.
        '  module-config: "iterator"',
        "  do-ip6: no",
    ]
    lines += [f'  local-zone: "{zone}" nodefault' for zone in _UNBOUND_DEFAULT_ZONES]
    lines += [
        "forward-zone:",
        '  name: "."',
        f"  forward-addr: {dns_host}@{dns_port}",
    ]
    path.write_text("\n".join(lines) + "\n")


def verify_opendkim(
    message: bytes, *, dns_host: str, dns_port: int, workdir: pathlib.Path
) -> tuple[bool, str]:
    """Verify `message` with `opendkim -t` (test mode); return (verified, full output).

    `verified` is True only if opendkim reports "verification (...) succeeded". opendkim
    exits 0 even when verification fails, so the output is parsed rather than the exit
    code. Config, resolver config and the message file are written under `workdir`.
    """
    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    resolver_conf = workdir / "opendkim-unbound.conf"
    write_libunbound_conf(resolver_conf, dns_host=dns_host, dns_port=dns_port)
    # opendkim only drops privileges when started as root; naming the current user makes
    # that a no-op (and is harmless when not root).
    user = pwd.getpwuid(os.geteuid()).pw_name
    conf = workdir / "opendkim.conf"
    conf.write_text(
        "\n".join(
            [
                "Mode v",
                "Syslog no",
                f"UserID {user}",
                f"ResolverConfiguration {resolver_conf}",
                "SoftwareHeader no",
            ]
        )
        + "\n"
    )
    msg = workdir / "opendkim-message.eml"
    msg.write_bytes(to_crlf(message))
    proc = subprocess.run(
        [opendkim, "-x", str(conf), "-t", str(msg)],
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
        cwd=workdir,
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    ok = proc.returncode == 0 and _OPENDKIM_OK.search(output) is not None
    return ok, f"exit {proc.returncode}\n{output}"
