"""VERP return paths: a bounce address per recipient, signed so it can't be forged.

``b-<recipient id, base36>-<16 chars of HMAC>@rp.<tenant domain>``: the HMAC binds
tenant, message and recipient, and the local part stays far below RFC 5321's 64 octets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from django.conf import settings

PATTERN = re.compile(r"^b-([0-9a-z]{1,13})-([a-z2-7]{16})$")
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = DIGITS[digit] + out
        if not number:
            return out


def _mac(*, tenant_id: int, message_id: int, recipient_id: int) -> str:
    key = hashlib.sha256(f"sendmsg verp\0{settings.HASH_KEY}".encode()).digest()
    digest = hmac.new(key, f"{tenant_id}:{message_id}:{recipient_id}".encode(), "sha256").digest()
    return base64.b32encode(digest[:10]).decode().lower()


def verp_address(*, tenant_id: int, message_id: int, recipient_id: int, host: str) -> str:
    mac = _mac(tenant_id=tenant_id, message_id=message_id, recipient_id=recipient_id)
    return f"b-{_base36(recipient_id)}-{mac}@{host}"


def parse_local_part(local: str) -> tuple[int, str] | None:
    """(recipient id, mac) from a VERP local part, or None if it is not one of ours."""
    match = PATTERN.match(local.lower())
    if not match:
        return None
    return int(match.group(1), 36), match.group(2)


def mac_matches(mac: str, *, tenant_id: int, message_id: int, recipient_id: int) -> bool:
    expected = _mac(tenant_id=tenant_id, message_id=message_id, recipient_id=recipient_id)
    return hmac.compare_digest(mac, expected)


def find_recipient(address: str):
    """The recipient a VERP bounce address was made for, or None if forged or unknown."""
    from delivery.models import Recipient

    local, at, host = address.rpartition("@")
    parsed = parse_local_part(local) if at else None
    if parsed is None:
        return None
    recipient_id, mac = parsed
    recipient = Recipient.objects.select_related("message__domain").filter(pk=recipient_id).first()
    if recipient is None or recipient.message.domain.return_path_host != host.lower().rstrip("."):
        return None
    if not mac_matches(
        mac,
        tenant_id=recipient.tenant_id,
        message_id=recipient.message_id,
        recipient_id=recipient.pk,
    ):
        return None
    return recipient
