"""DKIM signing: the RSA step through OpenSSL gives exactly dkimpy's own signature."""

from __future__ import annotations

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery import dkim_sign
from domains import crypto
from domains.models import DkimKey, Domain, KeyAlgorithm

MESSAGE = (
    b"From: Ann <ann@sender.test>\r\nTo: bob@dest.test\r\nSubject: Hello\r\n"
    b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n"
    b"List-Unsubscribe: <https://sender.test/u/1>\r\n\r\n" + b"A line of the body.\r\n" * 200
)


@pytest.fixture
def rsa_key(owner) -> tuple[DkimKey, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    tenant, _ = owner
    domain = Domain.objects.create(tenant=tenant, name="sender.test")
    key = DkimKey(
        domain=domain,
        selector="s1",
        algorithm=KeyAlgorithm.RSA,
        private_key_encrypted=crypto.encrypt(pem),
        public_key="unused",
    )
    return key, pem


def test_openssl_signature_is_dkimpys_own(rsa_key, monkeypatch):
    key, pem = rsa_key
    monkeypatch.setattr(dkim.time, "time", lambda: 1795870800)
    ours = dkim_sign.sign(MESSAGE, keys=[key])
    theirs = dkim.sign(
        MESSAGE,
        selector=b"s1",
        domain=b"sender.test",
        privkey=pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=dkim_sign.header_list(MESSAGE),
    )
    assert ours == theirs + MESSAGE


def test_headers_are_oversigned_and_the_body_length_is_not_given(rsa_key):
    key, pem = rsa_key
    signature = dkim_sign.sign(MESSAGE, keys=[key]).split(b"\r\n\r\n")[0]
    tags = dict(
        part.strip().split(b"=", 1)
        for part in b"".join(signature.split(b"\r\n")).split(b":", 1)[1].split(b";")
    )
    signed = [name.strip() for name in tags[b"h"].split(b":")]
    for name in (b"from", b"subject", b"date", b"to", b"message-id", b"list-unsubscribe"):
        assert signed.count(name) == 2, name  # present once, signed twice (RFC 6376 §8.15)
    assert signed.count(b"list-unsubscribe-post") == 1  # absent, signed as absent
    assert b"l" not in tags


BODIES = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"no final line break",
    b"one line\r\n",
    b"trailing  spaces   \r\n\ttabbed\t\tline\t\r\n \r\n\r\n",
    b"a \t b\t\tc  d\r\n   leading\r\n. dot\r\n\r\nafter an empty line\r\n\r\n",
    b"words with single spaces only\r\n" * 50,
]


@pytest.mark.parametrize("body", BODIES)
def test_relaxed_body_is_dkimpys(body):
    assert dkim_sign.relaxed_body(body) == dkim.RelaxedCanonicalization.canonicalize_body(body)


def test_signed_header_names_are_those_present_in_order_then_the_oversigned():
    message = (
        b"Received: from x\r\nFrom: a@sender.test\r\nSubject: folded\r\n  on two lines\r\n"
        b"X-Other: 1\r\nTo: b@dest.test\r\nsubject: again\r\n\r\nFrom: not a header\r\n"
    )
    assert dkim_sign.header_list(message) == [
        b"from",
        b"subject",
        b"to",
        b"subject",
        *(name.encode() for name in dkim_sign.OVERSIGNED),
    ]
