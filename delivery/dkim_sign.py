"""DKIM-signing a message with its domain's active key (RFC 6376)."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32

import dkim

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
)


ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}


def header_list(data: bytes) -> list[bytes]:
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    present = [name.lower() for name in headers.keys() if name.lower() in SIGNED]
    return [name.encode() for name in present + list(OVERSIGNED)]


def sign(data: bytes, *, keys: list[DkimKey]) -> bytes:
    """``data`` (CRLF line endings) with one DKIM-Signature per key prepended; no l= tag.

    Each signature covers the message as given (DKIM-Signature headers are never in h=),
    so RSA and Ed25519 signatures (RFC 8463 dual signing) verify independently.
    """
    headers = header_list(data)
    signatures = b""
    for key in keys:
        signatures += dkim.sign(
            data,
            selector=key.selector.encode(),
            domain=key.domain.name.encode(),
            privkey=key.private_key_pem(),
            signature_algorithm=ALGORITHMS[key.algorithm],
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
        )
    return signatures + data
