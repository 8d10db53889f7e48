"""DKIM verifiers independent of dkimpy, for checking what our signer produces.

Two unrelated implementations: Perl's Mail::DKIM (libmail-dkim-perl) and OpenDKIM's
`opendkim -t` test mode (libopendkim + libunbound). Both resolve keys only through the
test DNS server given by host and port, never through /etc/resolv.conf. Both check
rsa-sha256 and ed25519-sha256 (RFC 8463); for Ed25519, Mail::DKIM releases before
1.20230630 need the small extension in dkim_verify.pl and CryptX (libcryptx-perl).

`verify_messages` runs both on every signature of several messages (tests/conftest.py
does that for every signed message the SMTP receivers got in a test); `verify_mail_dkim`
and `verify_opendkim` are the single runs it is made of.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
            f"Mail::DKIM verifier exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
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


# -- every signature of a message, by both verifiers ----------------------------------------

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(frozen=True)
class DkimSignature:
    """One DKIM-Signature header field of a message."""

    field: bytes
    """The whole field as it appears in the message: name, value, folding, final CRLF."""
    domain: str
    selector: str
    algorithm: str

    def describe(self) -> str:
        return f"{self.algorithm or '?'} d={self.domain or '?'} s={self.selector or '?'}"


def _header_fields(message: bytes) -> tuple[list[bytes], bytes]:
    """The header fields of a CRLF message (each with its folded lines) and the rest."""
    end = message.find(b"\r\n\r\n")
    head, rest = (message, b"") if end < 0 else (message[: end + 2], message[end + 2 :])
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def _tags(value: bytes) -> dict[str, str]:
    unfolded = re.sub(rb"\s+", b"", value).decode("ascii", "replace")
    tags = {}
    for item in unfolded.split(";"):
        name, sep, tag_value = item.partition("=")
        if sep:
            tags.setdefault(name.lower(), tag_value)
    return tags


def _is_signature(field: bytes) -> re.Match[bytes] | None:
    match = _HEADER_NAME.match(field)
    return match if match and match.group(1).lower() == b"dkim-signature" else None


def dkim_signatures(message: bytes) -> list[DkimSignature]:
    """The DKIM-Signature fields of ``message`` (any line endings), in header order."""
    fields, _ = _header_fields(to_crlf(message))
    found = []
    for field in fields:
        if match := _is_signature(field):
            tags = _tags(field[match.end() :])
            found.append(
                DkimSignature(
                    field=field,
                    domain=tags.get("d", ""),
                    selector=tags.get("s", ""),
                    algorithm=tags.get("a", "").lower(),
                )
            )
    return found


def only_signature(message: bytes, keep: DkimSignature) -> bytes:
    """``message`` (CRLF) with every DKIM-Signature field but ``keep`` removed.

    `opendkim -t` reports one verdict for a whole message, so each signature is checked
    on its own copy. Our signer never lists DKIM-Signature in h=, so removing the other
    signatures leaves each one's signed data exactly as it was.
    """
    fields, rest = _header_fields(to_crlf(message))
    kept = [field for field in fields if field == keep.field or not _is_signature(field)]
    return b"".join(kept) + rest


@dataclass(frozen=True)
class SignatureVerdict:
    """What both verifiers said about one signature."""

    signature: DkimSignature
    mail_dkim: str
    """Mail::DKIM's result word: "pass", "fail", "invalid", "temperror", ..."""
    mail_dkim_detail: str
    opendkim_ok: bool | None
    """None: OpenDKIM could not judge this message (see ``OPENDKIM_NUL``)."""
    opendkim_output: str

    @property
    def ok(self) -> bool:
        return self.mail_dkim == "pass" and self.opendkim_ok is not False

    def describe(self) -> str:
        opendkim = "succeeded" if self.opendkim_ok else self.opendkim_output.strip()
        return (
            f"{self.signature.describe()}: Mail::DKIM {self.mail_dkim_detail!r}; "
            f"OpenDKIM {opendkim!r}"
        )


def verify_mail_dkim_many(
    messages: list[bytes], *, dns_host: str, dns_port: int, workdir: pathlib.Path
) -> list[list[tuple[str, str]]]:
    """``verify_mail_dkim_detailed`` for several messages with one Perl start-up (the
    start-up is most of a run's cost). The messages are written to files in ``workdir``."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, message in enumerate(messages):
        path = workdir / f"mail-dkim-{index}.eml"
        path.write_bytes(to_crlf(message))
        paths.append(str(path))
    perl = shutil.which("perl") or "/usr/bin/perl"
    proc = subprocess.run(
        [perl, str(_PERL_SCRIPT), dns_host, str(dns_port), *paths],
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"Mail::DKIM verifier exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    results: list[list[tuple[str, str]]] = [[] for _ in messages]
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.strip():
            index, _, rest = line.partition("\t")
            results[int(index)].append((rest.partition("\t")[0], rest))
    if not all(results):
        raise RuntimeError(f"Mail::DKIM verifier skipped a message: {proc.stdout!r}")
    return results


OPENDKIM_NUL = (
    "not run: the message has a NUL byte, and `opendkim -t` reads each line as a C string "
    "(strlen), so it would hash a shorter body than the one on the wire"
)


def verify_messages(
    messages: list[bytes],
    *,
    dns_host: str,
    dns_port: int,
    workdir: pathlib.Path,
    max_workers: int = 3,
) -> list[list[SignatureVerdict]]:
    """Check every DKIM-Signature of each message with both verifiers, in parallel.

    Mail::DKIM runs once for all the messages (it reports each signature); OpenDKIM runs
    once per signature, on a copy of the message with only that signature (see
    ``only_signature``), except on a message with a NUL byte (``OPENDKIM_NUL``). Returns,
    per message, one verdict per signature in header order ([] for an unsigned message).
    Working files go under ``workdir``.
    """
    workdir = pathlib.Path(workdir)
    signatures = [dkim_signatures(message) for message in messages]
    signed = [index for index, found in enumerate(signatures) if found]
    verdicts: list[list[SignatureVerdict]] = [[] for _ in messages]
    if not signed:
        return verdicts
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        perl = pool.submit(
            verify_mail_dkim_many,
            [messages[index] for index in signed],
            dns_host=dns_host,
            dns_port=dns_port,
            workdir=workdir,
        )
        opendkim = {
            (index, number): pool.submit(
                verify_opendkim,
                only_signature(messages[index], signature),
                dns_host=dns_host,
                dns_port=dns_port,
                workdir=workdir / f"opendkim-{index}-{number}",
            )
            for index in signed
            if b"\x00" not in messages[index]
            for number, signature in enumerate(signatures[index])
        }
        for index, perl_results in zip(signed, perl.result(), strict=True):
            if len(perl_results) != len(signatures[index]):
                raise RuntimeError(
                    f"Mail::DKIM reported {len(perl_results)} signature(s), message {index} "
                    f"has {len(signatures[index])}: {perl_results!r}"
                )
            for number, (signature, (result, detail)) in enumerate(
                zip(signatures[index], perl_results, strict=True)
            ):
                if f"\ts={signature.selector}\t" not in detail + "\t":
                    raise RuntimeError(
                        f"Mail::DKIM's results out of header order: {perl_results!r}"
                    )
                run = opendkim.get((index, number))
                ok, output = (None, OPENDKIM_NUL) if run is None else run.result()
                verdicts[index].append(SignatureVerdict(signature, result, detail, ok, output))
    return verdicts


def verify_each_signature(
    message: bytes, *, dns_host: str, dns_port: int, workdir: pathlib.Path
) -> list[SignatureVerdict]:
    """``verify_messages`` for one message: a verdict per signature, [] if unsigned."""
    return verify_messages([message], dns_host=dns_host, dns_port=dns_port, workdir=workdir)[0]


def signature_problems(verdicts: list[SignatureVerdict]) -> list[str]:
    """Why the signatures of one message are not all good, or [] if they are.

    Every signature must pass both verifiers, and an Ed25519 signature must come with an
    RSA one for the same domain (RFC 8463 dual signing: receivers that do not know
    Ed25519 yet still find a signature they can check).
    """
    problems = [verdict.describe() for verdict in verdicts if not verdict.ok]
    rsa_domains = {
        v.signature.domain.lower() for v in verdicts if v.signature.algorithm.startswith("rsa-")
    }
    for verdict in verdicts:
        signature = verdict.signature
        if signature.algorithm == "ed25519-sha256" and signature.domain.lower() not in rsa_domains:
            problems.append(f"{signature.describe()}: Ed25519 signature without an RSA one")
    return problems
