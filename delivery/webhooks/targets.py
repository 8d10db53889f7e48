"""Which webhook URLs may be called, and on which addresses.

Only ``http`` and ``https``, and never a private, loopback, link-local, multicast,
reserved or unspecified address, IPv4 or IPv6 (an IPv4 address inside an IPv6 one
included), unless ``SENDMSG_WEBHOOK_ALLOW_PRIVATE`` is on (tests). A URL is checked when
an endpoint is registered and again before every request, and the request goes to the
very addresses checked then: a name that later resolves to 127.0.0.1 (DNS rebinding) is
refused at that moment instead of being followed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.exception
import dns.resolver
import idna
from django.conf import settings

from sendmsg.resolver import make_resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A name whose last label is all digits (or hex) is no DNS name (RFC 3696 §2), but
# getaddrinfo reads "127.1" or "0x7f.1" as an address: refuse such hosts outright.
NUMERIC_LAST_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")


class TargetError(ValueError):
    """A URL or address that may not be called; the message says why, for the tenant."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "http" or "https"
    host: str  # an ASCII host name, or an IP address without brackets
    port: int
    path: str  # path and query, at least "/"

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_url(url: str) -> Target:
    """The parts of a webhook URL, or TargetError saying what is wrong with it."""
    if not url:
        raise TargetError("Enter the URL to send events to.")
    if len(url) > MAX_URL_LENGTH:
        raise TargetError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if UNSAFE_CHARACTERS.search(url):
        raise TargetError("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"The URL is not valid: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetError("Only http:// and https:// URLs can receive webhooks.")
    if parts.username is not None or parts.password is not None:
        raise TargetError(
            "Put no user name or password in the URL: verify the Sendmsg-Signature header instead."
        )
    if parts.fragment:
        raise TargetError("The URL must not have a #fragment.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetError("The URL has no host.")
    return Target(
        scheme=scheme,
        host=_ascii_host(host),
        port=port or DEFAULT_PORTS[scheme],
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def _ascii_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise TargetError(f"{host} is not a valid host name: {exc}.") from None
    if NUMERIC_LAST_LABEL.match(ascii_host.rsplit(".", 1)[-1]):
        raise TargetError(f"{host} is neither a host name nor an IP address.")
    return ascii_host


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be called ("a loopback address"), or None for a public
    unicast address. An IPv4 address carried inside an IPv6 one (IPv4-mapped, 6to4,
    Teredo, NAT64) is judged too, first."""
    for inner in _embedded(address):
        reason = _own_refusal(inner)
        if reason is not None:
            return f"a {reason} address ({inner} inside)"
    reason = _own_refusal(address)
    return f"a {reason} address" if reason is not None else None


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.append(address.teredo[1])
        if address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _own_refusal(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


def check_address(address: IPAddress, *, host: str) -> None:
    """TargetError unless ``address`` may be called (or the setting allows any)."""
    if settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE:
        return
    reason = refusal(address)
    if reason is not None:
        subject = host if host == str(address) else f"{host} resolves to {address}, which"
        raise TargetError(f"{subject} is {reason}: webhooks go only to public addresses.")


def resolve(target: Target, *, resolver: dns.resolver.Resolver | None = None) -> list[str]:
    """The addresses to connect to for ``target``, IPv4 first, every one checked.

    TargetError when the host does not resolve, or when any of its addresses is refused
    (a name with one public and one private address is refused whole).
    """
    literal = target.address
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    elif target.host == "localhost" or target.host.endswith(".localhost"):
        # RFC 6761 §6.3: always loopback, whatever a resolver says.
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    else:
        addresses = _lookup(target.host, resolver or make_resolver())
    for address in addresses:
        check_address(address, host=target.host)
    return [str(a) for a in addresses]


def _lookup(host: str, resolver: dns.resolver.Resolver) -> list[IPAddress]:
    found: list[IPAddress] = []
    missing = 0
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype)
        except dns.resolver.NXDOMAIN:
            raise TargetError(f"{host} does not exist in DNS.") from None
        except dns.resolver.NoAnswer:
            missing += 1
            continue
        except dns.exception.DNSException as exc:
            raise TargetError(f"DNS lookup of {host} failed: {exc}") from None
        found += [ipaddress.ip_address(rr.address) for rr in answer]
    if not found:
        raise TargetError(f"{host} has no IPv4 or IPv6 address in DNS.")
    return found


def check_url(url: str) -> Target:
    """The target of ``url`` if it may receive webhooks now, else TargetError."""
    target = parse_url(url)
    resolve(target)
    return target
