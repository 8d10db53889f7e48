"""DKIM-signing a message with its domain's active keys (RFC 6376, RFC 8463).

dkimpy parses, canonicalises and builds the DKIM-Signature header; the RSA step is done
by OpenSSL (``cryptography``): dkimpy's own pure-Python RSA costs ~10 ms a message here,
OpenSSL's about 1 ms. Loading a key into OpenSSL costs more than signing (it checks the
key), so each worker keeps the keys it has loaded, by their encrypted form.
"""

from __future__ import annotations

import base64
import functools
import re
import time

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from dkim import canonicalization

from domains import crypto
from domains.models import DkimKey

# Headers we sign when present (RFC 6376 §5.4.1) ...
SIGNED = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "sendmsg-ref",  # our tracking header (delivery/accept.py), which complaints map by
)
# ... and those signed once more than they occur, so nobody can add one later (§8.15).
OVERSIGNED = (
    "from",
    "subject",
    "date",
    "to",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "sendmsg-ref",
)


ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
CANONICALIZE = (b"relaxed", b"relaxed")


SIGNED_NAMES = frozenset(name.encode() for name in SIGNED)
OVERSIGNED_NAMES = [name.encode() for name in OVERSIGNED]
WHITESPACE_RUN = re.compile(rb"[\t ]{2,}|\t")
TRAILING_WHITESPACE = re.compile(rb"[\t ]+\r\n")


def header_list(data: bytes) -> list[bytes]:
    """The h= list: the names of the headers present that we sign, in order, then the
    oversigned ones once more. ``data`` has CRLF line endings (as stored)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    names = (
        line.split(b":", 1)[0].rstrip().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b"", b" ", b"\t")  # a continuation line has no name
    )
    return [name for name in names if name in SIGNED_NAMES] + OVERSIGNED_NAMES


def relaxed_body(body: bytes) -> bytes:
    """The body in "relaxed" canonical form (RFC 6376 §3.4.4), as dkimpy makes it, but
    only the whitespace runs that change are replaced (dkimpy rewrites every single
    space with itself: a tenth of the relay's CPU for a 5 KB message)."""
    body = WHITESPACE_RUN.sub(b" ", TRAILING_WHITESPACE.sub(b"\r\n", body))
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(body))


@functools.lru_cache(maxsize=256)
def _openssl_key(encrypted: bytes) -> RSAPrivateKey:
    """The OpenSSL key for an encrypted RSA key, loaded (and checked) once."""
    return serialization.load_pem_private_key(crypto.decrypt(encrypted), password=None)


class _OpenSslRsaDkim(dkim.DKIM):
    """dkimpy's signer with RSASSA-PKCS1-v1_5 over SHA-256 done by OpenSSL."""

    def __init__(self, message: bytes, rsa_key: RSAPrivateKey) -> None:
        super().__init__(message, linesep=b"\r\n")
        self._rsa_key = rsa_key

    def sign_rsa(self, *, selector: bytes, domain: bytes, include_headers: list[bytes]) -> bytes:
        """The DKIM-Signature header, as dkimpy's ``sign`` makes it for rsa-sha256 with
        relaxed/relaxed and no l= tag, without its pure-Python parse of the PEM key on
        every message (OpenSSL holds the key, parsed once)."""
        self.signature_algorithm = ALGORITHMS["rsa"]
        canon_policy = dkim.CanonicalizationPolicy.from_c_value(b"/".join(CANONICALIZE))
        self.include_headers = tuple(name.lower() for name in include_headers)
        self.hasher = dkim.HASH_ALGORITHMS[self.signature_algorithm]
        body_hash = base64.b64encode(self.hasher(relaxed_body(self.body)).digest())
        fields = [
            (b"v", b"1"),
            (b"a", self.signature_algorithm),
            (b"c", canon_policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(time.time())).encode("ascii")),
            (b"h", b" : ".join(self.include_headers)),
            (b"bh", body_hash),
            (b"b", b"0" * 60),  # as dkimpy: b= folds onto a line of its own
        ]
        name = b"DKIM-Signature"
        header = self.gen_header(fields, self.include_headers, canon_policy, name, pk=None)
        return name + b": " + header

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):
        # As dkimpy's gen_header for rsa-sha256 without standardize, with the RSA step
        # through OpenSSL: hash the headers and the signature header with an empty b=,
        # sign the digest, then fold the header with the b= value in place.
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        hasher = dkim.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            hasher,
            canon_policy,
            headers,
            include_headers,
            (header_name, b" " + header_value),
            dict(fields),
        )
        signature = self._rsa_key.sign(
            hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        )
        fields = [(b"b", base64.b64encode(signature)) if k == b"b" else (k, v) for k, v in fields]
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)


def _signature(data: bytes, key: DkimKey, headers: list[bytes]) -> bytes:
    common = {
        "selector": key.selector.encode(),
        "domain": key.domain.name.encode(),
        "signature_algorithm": ALGORITHMS[key.algorithm],
        "canonicalize": CANONICALIZE,
        "include_headers": headers,
    }
    if key.algorithm == "rsa":
        openssl_key = _openssl_key(bytes(key.private_key_encrypted))
        return _OpenSslRsaDkim(data, openssl_key).sign_rsa(
            selector=common["selector"], domain=common["domain"], include_headers=headers
        )
    return dkim.sign(data, privkey=key.private_key_pem(), **common)


def sign(data: bytes, *, keys: list[DkimKey]) -> bytes:
    """``data`` (CRLF line endings) with one DKIM-Signature per key prepended; no l= tag.

    Each signature covers the message as given (DKIM-Signature headers are never in h=),
    so RSA and Ed25519 signatures (RFC 8463 dual signing) verify independently.
    """
    headers = header_list(data)
    return b"".join(_signature(data, key, headers) for key in keys) + data
