"""The test peers themselves: unbound as a DNS server, and two non-dkimpy DKIM verifiers.

These prove the peers behave like the real world (CNAMEs chased, long TXT records, SERVFAIL,
timeouts, REFUSED, live changes) and that the verifiers can say "fail", so other tests can
trust a "pass" from them. No Django database is used.
"""

from __future__ import annotations

import base64
import pathlib
import socket
import time
from collections.abc import Callable, Iterator

import dkim
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.peers.dkim_verifiers import (
    verify_mail_dkim,
    verify_mail_dkim_detailed,
    verify_opendkim,
)
from tests.peers.dns_server import DnsServer, split_long_txt
from tests.peers.ports import free_port

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """One unbound for the module (start ~0.2 s); tests use distinct zones to stay apart."""
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _rcode(server: DnsServer, name: str, rdtype: str = "A", timeout: float = 2.0) -> str:
    """Ask the server directly and return the response code's name."""
    query = dns.message.make_query(name, rdtype)
    response = dns.query.udp(query, server.host, port=server.port, timeout=timeout)
    return dns.rcode.to_text(response.rcode())


# -- ports ----------------------------------------------------------------------------------


def test_free_port_is_bindable_for_tcp_and_udp() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))


# -- DNS ------------------------------------------------------------------------------------


def test_mx_a_and_cname_chased_across_zones(dns_server: DnsServer) -> None:
    dns_server.set_zone(
        "tenant.test",
        [
            "@ IN MX 10 mx.dest.test.",
            "rp 300 IN CNAME rp.platform.test.",
            "www IN A 192.0.2.10",
        ],
    )
    dns_server.set_zone(
        "platform.test",
        [
            "rp IN MX 5 mx.platform.test.",
            'rp IN TXT "v=spf1 ip4:192.0.2.25 -all"',
            "mx IN A 192.0.2.25",
        ],
    )
    dns_server.set_zone("dest.test", ["mx IN A 192.0.2.53"])
    res = dns_server.resolver()

    mx = res.resolve("tenant.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, "mx.dest.test.")]
    assert [r.address for r in res.resolve("mx.dest.test", "A")] == ["192.0.2.53"]
    assert [r.address for r in res.resolve("www.tenant.test", "A")] == ["192.0.2.10"]

    # The return-path CNAME points into another zone: a resolver must follow it.
    answer = res.resolve("rp.tenant.test", "MX")
    assert answer.canonical_name.to_text() == "rp.platform.test."
    assert [r.exchange.to_text() for r in answer] == ["mx.platform.test."]
    txt = res.resolve("rp.tenant.test", "TXT")
    assert [b"".join(r.strings) for r in txt] == [b"v=spf1 ip4:192.0.2.25 -all"]

    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("missing.tenant.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("www.tenant.test", "MX")


def test_names_outside_our_zones_are_refused_not_recursed(dns_server: DnsServer) -> None:
    assert _rcode(dns_server, "example.com.") == "REFUSED"
    assert _rcode(dns_server, "www.google.com.") == "REFUSED"


def test_txt_over_255_bytes_is_split_and_read_back_whole(dns_server: DnsServer) -> None:
    long_value = ("v=DKIM1; k=rsa; p=" + "ABCdef0123+/" * 50)[:600]
    pre_split = ["x" * 255, "y" * 100]
    dns_server.set_zone(
        "txt.test",
        [
            f'long IN TXT "{long_value}"',
            "pre IN TXT " + " ".join(f'"{s}"' for s in pre_split),
            'short 60 IN TXT "hello world"',
        ],
    )
    res = dns_server.resolver()

    (rr,) = res.resolve("long.txt.test", "TXT")
    assert b"".join(rr.strings) == long_value.encode()
    assert [len(s) for s in rr.strings] == [255, 255, 90]

    (rr,) = res.resolve("pre.txt.test", "TXT")
    assert rr.strings == tuple(s.encode() for s in pre_split)

    (rr,) = res.resolve("short.txt.test", "TXT")
    assert rr.strings == (b"hello world",)


def test_split_long_txt_keeps_escapes_whole_and_leaves_other_lines() -> None:
    # 300 escaped quotes are 300 wire bytes: the split must not cut an escape in half.
    line = 'q IN TXT "' + '\\"' * 300 + '"'
    out = split_long_txt(line)
    assert out == 'q IN TXT "' + '\\"' * 255 + '" "' + '\\"' * 45 + '"'
    decimal = '@ TXT "' + "\\065" * 256 + '"'
    assert split_long_txt(decimal) == '@ TXT "' + "\\065" * 255 + '" "\\065"'
    # Not TXT records, or short strings: untouched, byte for byte.
    for unchanged in (
        'txt IN A 192.0.2.1 ; "' + "z" * 300 + '"',
        '@ IN CAA 0 issue "' + "a" * 300 + '"',
        'x 300 IN TXT "short" ; comment',
    ):
        assert split_long_txt(unchanged) == unchanged


def test_live_change_is_visible_at_once(dns_server: DnsServer) -> None:
    res = dns_server.resolver()
    dns_server.set_zone("live.test", ["www IN A 192.0.2.1"])
    assert [r.address for r in res.resolve("www.live.test", "A")] == ["192.0.2.1"]

    started = time.monotonic()
    dns_server.set_zone("live.test", ["www IN A 192.0.2.2"])
    elapsed = time.monotonic() - started
    # The old answer was cached by unbound (TTL 60): the reload must have flushed it.
    assert [r.address for r in res.resolve("www.live.test", "A")] == ["192.0.2.2"]
    assert elapsed < 2.0, f"a zone change took {elapsed:.3f} s"

    dns_server.add_lines("live.test", ["mail IN A 192.0.2.3"])
    assert [r.address for r in res.resolve("mail.live.test", "A")] == ["192.0.2.3"]
    assert [r.address for r in res.resolve("www.live.test", "A")] == ["192.0.2.2"]

    dns_server.set_zone("live.test", ["mail IN A 192.0.2.3"])
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("www.live.test", "A")


def test_bad_zone_line_is_rejected_and_server_keeps_serving(dns_server: DnsServer) -> None:
    dns_server.set_zone("keep.test", ["www IN A 192.0.2.7"])
    with pytest.raises(ValueError, match="bad zone"):
        dns_server.set_zone("keep.test", ["www IN A not-an-address"])
    assert [r.address for r in dns_server.resolver().resolve("www.keep.test", "A")] == ["192.0.2.7"]


def test_servfail_whole_zone_and_recover(dns_server: DnsServer) -> None:
    res = dns_server.resolver()
    dns_server.set_zone("broken.test", ["www IN A 192.0.2.4", "@ IN MX 10 mx.dest.test."])
    assert [r.address for r in res.resolve("www.broken.test", "A")] == ["192.0.2.4"]

    dns_server.servfail("broken.test")
    assert _rcode(dns_server, "www.broken.test.") == "SERVFAIL"
    assert _rcode(dns_server, "broken.test.", "MX") == "SERVFAIL"
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        res.resolve("www.broken.test", "A")

    dns_server.set_zone("broken.test", ["www IN A 192.0.2.5"])
    assert [r.address for r in res.resolve("www.broken.test", "A")] == ["192.0.2.5"]


def test_drop_times_out_and_clear_override_restores(dns_server: DnsServer) -> None:
    dns_server.set_zone("slow.test", ["www IN A 192.0.2.6", "ok IN A 192.0.2.8"])
    dns_server.drop("www.slow.test")
    res = dns_server.resolver()
    res.lifetime = res.timeout = 0.5  # keep the test fast; the default is 3 s

    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        res.resolve("www.slow.test", "A")
    assert time.monotonic() - started >= 0.4
    # Only that name is dropped, not its zone.
    assert [r.address for r in res.resolve("ok.slow.test", "A")] == ["192.0.2.8"]

    dns_server.clear_override("www.slow.test")
    assert [r.address for r in res.resolve("www.slow.test", "A")] == ["192.0.2.6"]


def test_refuse_answers_refused(dns_server: DnsServer) -> None:
    dns_server.set_zone("picky.test", ["www IN A 192.0.2.9", "ok IN A 192.0.2.10"])
    dns_server.refuse("www.picky.test")
    assert _rcode(dns_server, "www.picky.test.") == "REFUSED"
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        dns_server.resolver().resolve("www.picky.test", "A")
    assert _rcode(dns_server, "ok.picky.test.") == "NOERROR"


# -- DKIM -----------------------------------------------------------------------------------

SELECTOR = "s2048"
DOMAIN = "signer.test"
MESSAGE = (
    b"From: Alice <alice@signer.test>\r\n"
    b"To: bob@dest.test\r\n"
    b"Subject: DKIM peer check\r\n"
    b"Date: Wed, 01 Jan 2025 00:00:00 +0000\r\n"
    b"Message-ID: <peer-check@signer.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"this body is covered by bh=.\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signed_message(dns_server: DnsServer, rsa_key: rsa.RSAPrivateKey) -> bytes:
    """MESSAGE signed by dkimpy, with the public key published as one long TXT string."""
    public_der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    p = base64.b64encode(public_der).decode()
    assert len(p) > 255  # the record only proves the splitting if p= alone is too long
    dns_server.set_zone(DOMAIN, [f'{SELECTOR}._domainkey IN TXT "v=DKIM1; k=rsa; p={p}"'])

    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signature = dkim.sign(
        MESSAGE,
        SELECTOR.encode(),
        DOMAIN.encode(),
        private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + MESSAGE


def test_dkim_key_record_is_published_split(dns_server: DnsServer, signed_message: bytes) -> None:
    (rr,) = dns_server.resolver().resolve(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT")
    assert len(rr.strings) >= 2
    assert all(len(s) <= 255 for s in rr.strings)
    assert b"".join(rr.strings).startswith(b"v=DKIM1; k=rsa; p=MIIBIjAN")


def test_both_verifiers_pass_a_dkimpy_signature(
    dns_server: DnsServer, signed_message: bytes, tmp_path: pathlib.Path
) -> None:
    detail = verify_mail_dkim_detailed(
        signed_message, dns_host=dns_server.host, dns_port=dns_server.port
    )
    assert [result for result, _ in detail] == ["pass"], detail
    # LF-only input is normalised to CRLF before it reaches the verifier.
    lf_message = signed_message.replace(b"\r\n", b"\n")
    assert verify_mail_dkim(lf_message, dns_host=dns_server.host, dns_port=dns_server.port) == [
        "pass"
    ]

    ok, output = verify_opendkim(
        signed_message, dns_host=dns_server.host, dns_port=dns_server.port, workdir=tmp_path
    )
    assert ok, output
    assert f"d={DOMAIN}" in output


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"covered by bh=", b"covered by bh!"), id="body"),
        pytest.param(lambda m: m.replace(b"Subject: DKIM", b"Subject: dkim"), id="header"),
    ],
)
def test_both_verifiers_fail_a_tampered_message(
    dns_server: DnsServer,
    signed_message: bytes,
    tmp_path: pathlib.Path,
    tamper: Callable[[bytes], bytes],
) -> None:
    tampered = tamper(signed_message)
    assert tampered != signed_message
    detail = verify_mail_dkim_detailed(tampered, dns_host=dns_server.host, dns_port=dns_server.port)
    assert [result for result, _ in detail] == ["fail"], detail

    ok, output = verify_opendkim(
        tampered, dns_host=dns_server.host, dns_port=dns_server.port, workdir=tmp_path
    )
    assert not ok, output
    assert "failed" in output, output


def test_verifiers_do_not_pass_without_a_signature_or_key(
    dns_server: DnsServer, signed_message: bytes, tmp_path: pathlib.Path
) -> None:
    host, port = dns_server.host, dns_server.port
    assert verify_mail_dkim(MESSAGE, dns_host=host, dns_port=port) == ["none"]
    ok, output = verify_opendkim(MESSAGE, dns_host=host, dns_port=port, workdir=tmp_path)
    assert not ok and "not signed" in output, output

    # Same signature, but the selector points at a name that is not published.
    unknown = signed_message.replace(f"s={SELECTOR};".encode(), b"s=gone;", 1)
    assert unknown != signed_message
    results = verify_mail_dkim(unknown, dns_host=host, dns_port=port)
    assert results != ["pass"] and len(results) == 1, results
    ok, output = verify_opendkim(unknown, dns_host=host, dns_port=port, workdir=tmp_path)
    assert not ok, output
