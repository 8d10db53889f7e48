"""MTA-STS (RFC 8461): a destination domain's published demand for verified TLS.

A domain announces a policy with a TXT record at ``_mta-sts.<domain>`` (``v=STSv1;
id=…``) and serves it at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``. The
policy names a mode (enforce, testing, none), the MX host patterns allowed to receive
its mail, and how long senders may keep it (max_age).

Policies are kept in Django's cache, keyed by domain, until their max_age runs out; the
TXT id tells when to fetch a new one. When no live policy can be had (no TXT record, a
DNS failure, a failed fetch), an unexpired cached one still applies (§5.1): an attacker
who blocks DNS or HTTPS must not thereby switch the policy off.
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum

import dns.exception
import dns.resolver
from django.conf import settings
from django.core.cache import cache

from delivery.mx import host_addresses

log = logging.getLogger(__name__)

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024  # the status line and headers before the policy
MAX_AGE_LIMIT = 31_557_600  # §3.2: about one year
# After a failed fetch, the same TXT id is not fetched again for this long (§3.3 allows
# rate-limiting): a broken policy host must not cost every message a slow fetch.
FETCH_RETRY_SECONDS = 300

_WSP = "[ \t]*"
_FIELD_DELIM = re.compile(f"{_WSP};{_WSP}")
_RECORD_START = re.compile(r"v=STSv1(?:[ \t;]|$)")
_RECORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_RECORD_FIELD = re.compile(f"(?P<name>{_EXT_NAME})=(?P<value>[\x21-\x3a\x3c\x3e-\x7e]+)")
_POLICY_LINE = re.compile(f"(?P<name>{_EXT_NAME}):{_WSP}(?P<value>.*?){_WSP}")
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(Exception):
    """A TXT record or policy file that does not parse: the domain has no usable policy."""


class FetchError(Exception):
    """The policy could not be fetched (connection, TLS, HTTP status, type, size, time)."""


@dataclass(frozen=True)
class StsPolicy:
    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    id: str = ""
    """The TXT record's id the policy was fetched under."""
    expires_at: float = 0.0
    """Unix time after which the policy may no longer be used."""

    def matches(self, host: str) -> bool:
        """Whether MX ``host`` is one the policy names (§4.1): ``*.example.com`` matches
        ``mail.example.com``, neither ``example.com`` nor ``a.b.example.com``."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                suffix = pattern[1:]
                label = host[: -len(suffix)]
                if host.endswith(suffix) and label and "." not in label:
                    return True
            elif host == pattern:
                return True
        return False

    def to_cache(self) -> dict:
        return {
            "mode": str(self.mode),
            "mx": list(self.mx),
            "max_age": self.max_age,
            "id": self.id,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_cache(cls, value: object) -> StsPolicy | None:
        """The cached policy, or None if there is none (or it is unreadable or expired)."""
        if not isinstance(value, dict):
            return None
        try:
            policy = cls(
                mode=Mode(value["mode"]),
                mx=tuple(value["mx"]),
                max_age=int(value["max_age"]),
                id=str(value["id"]),
                expires_at=float(value["expires_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return policy if policy.expires_at > time.time() else None


def parse_record(text: str) -> str:
    """The id of a ``v=STSv1; id=…`` TXT record (§3.1); raises PolicyError."""
    if not text.startswith("v=STSv1"):
        raise PolicyError("the record does not start with v=STSv1")
    parts = _FIELD_DELIM.split(text[len("v=STSv1") :])
    if parts[0] != "":
        raise PolicyError("v=STSv1 must be followed by ';'")
    fields = parts[1:]
    if fields and fields[-1] == "":
        fields.pop()  # one trailing delimiter is allowed
    if not fields:
        raise PolicyError("the record has no id")
    record_id = None
    for field in fields:
        match = _RECORD_FIELD.fullmatch(field)
        if match is None:
            raise PolicyError(f"bad field {field!r}")
        if match["name"] == "id" and record_id is None:
            if not _RECORD_ID.fullmatch(match["value"]):
                raise PolicyError("id must be 1 to 32 letters and digits")
            record_id = match["value"]
    if record_id is None:
        raise PolicyError("the record has no id")
    return record_id


def parse_policy(body: bytes) -> StsPolicy:
    """A policy file (§3.2), parsed strictly; raises PolicyError.

    Lines end in LF or CRLF; unknown fields are ignored; of a repeated field other than
    mx the first counts. Blank lines are tolerated only at the end.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the policy is not UTF-8 text") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and lines[-1].strip(" \t") == "":
        lines.pop()
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in lines:
        match = _POLICY_LINE.fullmatch(line)
        if match is None or not match["value"] or not match["value"].isprintable():
            raise PolicyError(f"bad line {line!r}")
        name, value = match["name"], match["value"]
        if name == "mx":
            mx.append(_mx_pattern(value))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("version must be STSv1")
    try:
        mode = Mode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError("mode must be enforce, testing or none") from None
    max_age = fields.get("max_age", "")
    if not _MAX_AGE.fullmatch(max_age) or int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be a number of seconds up to {MAX_AGE_LIMIT}")
    if not mx and mode != Mode.NONE:
        raise PolicyError(f"a policy in mode {mode} needs at least one mx")
    return StsPolicy(mode=mode, mx=tuple(mx), max_age=int(max_age))


def _mx_pattern(value: str) -> str:
    pattern = value.lower().rstrip(".")
    name = pattern.removeprefix("*.")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise PolicyError(f"bad mx pattern {value!r}")
    return pattern


def lookup_record_id(domain: str, resolver: dns.resolver.Resolver) -> str | None:
    """The id of the domain's one valid MTA-STS TXT record, or None (§3.1): no record,
    several, an invalid one, or no DNS answer."""
    name = f"_mta-sts.{domain}"
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        log.info("mta-sts domain=%s TXT lookup failed: %s", domain, exc)
        return None
    texts = [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]
    records = [t for t in texts if _RECORD_START.match(t)]
    if len(records) != 1:
        if records:
            log.info("mta-sts domain=%s has %d STSv1 records: none used", domain, len(records))
        return None
    try:
        return parse_record(records[0])
    except PolicyError as exc:
        log.info("mta-sts domain=%s invalid TXT record: %s", domain, exc)
        return None


def fetch_policy(domain: str, *, resolver: dns.resolver.Resolver, context: ssl.SSLContext) -> bytes:
    """The policy file of ``domain``, fetched over verified HTTPS; raises FetchError.

    The policy host is resolved through ``resolver`` (never the system's), its
    certificate verified by ``context`` for ``mta-sts.<domain>``. Redirects are not
    followed (§3.3); the answer must be 200 text/plain of at most MAX_POLICY_BYTES, and
    the whole fetch must end within SENDMSG_MTA_STS_TIMEOUT seconds.
    """
    host = f"mta-sts.{domain}"
    # As for MX hosts: no private address unless SENDMSG_RELAY_ALLOW_PRIVATE, so a
    # recipient domain cannot point the fetch at the platform's own network.
    addresses = host_addresses(host, resolver)
    if not addresses:
        raise FetchError(f"{host} has no usable address")
    deadline = time.monotonic() + settings.SENDMSG_MTA_STS_TIMEOUT
    errors = []
    for address in addresses:
        try:
            return _fetch_from(host, address=address, context=context, deadline=deadline)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{address}: {str(exc) or exc.__class__.__name__}")
        except FetchError as exc:
            errors.append(f"{address}: {exc}")
            break  # answered, or out of time: another address would not do better
    raise FetchError(f"https://{host}{POLICY_PATH}: " + "; ".join(errors))


class _Received:
    """What the server sent, for http.client to parse (it reads through makefile())."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(self.data)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timed out")
    return left


def _fetch_from(host: str, *, address: str, context: ssl.SSLContext, deadline: float) -> bytes:
    # HTTP/1.0, read to the end under one deadline: every recv waits at most for what is
    # left, so a server that sends a byte at a time cannot stretch the fetch.
    port = settings.SENDMSG_MTA_STS_PORT
    request = (
        f"GET {POLICY_PATH} HTTP/1.0\r\n"
        f"Host: {host if port == 443 else f'{host}:{port}'}\r\n"
        "User-Agent: sendmsg\r\nAccept: text/plain\r\n\r\n"
    ).encode("ascii")
    raw = socket.create_connection((address, port), timeout=_remaining(deadline))
    received = bytearray()
    try:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)
            while chunk := sock.recv(16384):
                received += chunk
                if len(received) > MAX_POLICY_BYTES + MAX_HEADER_BYTES:
                    raise FetchError(f"the answer is larger than {MAX_POLICY_BYTES} bytes")
                sock.settimeout(_remaining(deadline))
    finally:
        raw.close()
    response = http.client.HTTPResponse(_Received(bytes(received)))  # type: ignore[arg-type]
    response.begin()
    if response.status != 200:
        raise FetchError(f"HTTP {response.status} (redirects are not followed)")
    # Without a Content-Type header get_content_type() says text/plain; HTTP says unknown.
    content_type = response.headers.get_content_type() if response.getheader("Content-Type") else ""
    if content_type != "text/plain":
        raise FetchError(f"served as {content_type or 'no type'}, not text/plain")
    body = response.read()
    if len(body) > MAX_POLICY_BYTES:
        raise FetchError(f"the policy is larger than {MAX_POLICY_BYTES} bytes")
    return body


def _cache_key(domain: str) -> str:
    return f"mta-sts:policy:{domain}"


def _failure_key(domain: str, record_id: str) -> str:
    return f"mta-sts:failed:{domain}:{record_id}"


def policy_for(
    domain: str, *, resolver: dns.resolver.Resolver, context: ssl.SSLContext
) -> StsPolicy | None:
    """The MTA-STS policy that applies to mail for ``domain`` now, or None.

    ``context`` verifies the policy host's certificate. A policy is fetched when the TXT
    id differs from the cached policy's, or none is cached; otherwise the cached one is
    used (also when the record is gone or the fetch fails, until it expires).
    """
    domain = domain.rstrip(".").lower()
    cached = StsPolicy.from_cache(cache.get(_cache_key(domain)))
    record_id = lookup_record_id(domain, resolver)
    if record_id is None or (cached is not None and cached.id == record_id):
        return cached
    if cache.get(_failure_key(domain, record_id)):
        return cached
    try:
        parsed = parse_policy(fetch_policy(domain, resolver=resolver, context=context))
    except (FetchError, PolicyError) as exc:
        cache.set(_failure_key(domain, record_id), True, FETCH_RETRY_SECONDS)
        log.warning(
            "mta-sts domain=%s id=%s policy not usable: %s (%s)",
            domain,
            record_id,
            exc,
            "keeping the cached policy" if cached else "no policy applies",
        )
        return cached
    policy = StsPolicy(
        mode=parsed.mode,
        mx=parsed.mx,
        max_age=parsed.max_age,
        id=record_id,
        expires_at=time.time() + parsed.max_age,
    )
    if policy.max_age > 0:
        cache.set(_cache_key(domain), policy.to_cache(), policy.max_age)
    else:
        cache.delete(_cache_key(domain))
    log.info("mta-sts domain=%s id=%s mode=%s mx=%s", domain, record_id, policy.mode, policy.mx)
    return policy
