"""VERP return paths: bounce addresses signed so they can't be forged.

A transaction to one recipient uses that recipient's own address,
``b-<recipient id, base36>-<16 chars of HMAC>@rp.<tenant domain>``: the HMAC binds
tenant, message and recipient, so a bounce maps back to exactly one recipient by the
address alone.

A transaction to several recipients of one message at one destination domain (RFC 5321
lets them share it) has one return path for all of them,
``m-<message id, base36>-<16 chars of HMAC>@…``, whose HMAC binds tenant, message and the
recipients' domain. A bounce to it maps to exactly one recipient through the recipient
address it reports (a DSN's Final-Recipient, RFC 3464 §2.3.2), which must be one of the
message's recipients at that domain. Both local parts stay far below RFC 5321's 64 octets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from django.conf import settings

PATTERN = re.compile(r"^([bm])-([0-9a-z]{1,13})-([a-z2-7]{16})$")
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
FINAL_RECIPIENT = re.compile(
    rb"^(?:Final|Original)-Recipient:\s*rfc822\s*;\s*<?([^\s<>]+@[^\s<>]+)>?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def _base36(number: int) -> str:
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = DIGITS[digit] + out
        if not number:
            return out


def _mac(*parts: object) -> str:
    key = hashlib.sha256(f"sendmsg verp\0{settings.HASH_KEY}".encode()).digest()
    digest = hmac.new(key, ":".join(map(str, parts)).encode(), "sha256").digest()
    return base64.b32encode(digest[:10]).decode().lower()


def verp_address(*, tenant_id: int, message_id: int, recipient_id: int, host: str) -> str:
    """The return path of a transaction to this one recipient."""
    return f"b-{_base36(recipient_id)}-{_mac(tenant_id, message_id, recipient_id)}@{host}"


def group_verp_address(*, tenant_id: int, message_id: int, domain: str, host: str) -> str:
    """The return path of a transaction to several recipients at ``domain`` (ASCII)."""
    mac = _mac(tenant_id, message_id, "domain", domain.lower())
    return f"m-{_base36(message_id)}-{mac}@{host}"


def reported_recipients(report: bytes) -> list[str]:
    """Recipient addresses a bounce reports (Final- or Original-Recipient fields)."""
    found = [m.decode("utf-8", "replace") for m in FINAL_RECIPIENT.findall(report)]
    return list(dict.fromkeys(found))


def _parse(address: str) -> tuple[str, int, str, str] | None:
    """(kind, id, mac, host) of one of our return paths, or None."""
    local, at, host = address.rpartition("@")
    match = PATTERN.match(local.lower()) if at else None
    if not match:
        return None
    return match.group(1), int(match.group(2), 36), match.group(3), host.lower().rstrip(".")


def is_return_path(address: str) -> bool:
    """Whether ``address`` is a return path we made (signature checked)."""
    return bool(_candidates(address))


def _candidates(address: str) -> list:
    """The recipients a return path may stand for: one, or a message's at one domain."""
    from delivery.models import Recipient

    parsed = _parse(address)
    if parsed is None:
        return []
    kind, number, mac, host = parsed
    if kind == "b":
        rows = Recipient.objects.select_related("message__domain").filter(pk=number)
        return [
            r
            for r in rows
            if r.message.domain.return_path_host == host
            and hmac.compare_digest(mac, _mac(r.tenant_id, r.message_id, r.pk))
        ]
    rows = Recipient.objects.select_related("message__domain").filter(message_id=number)
    return [
        r
        for r in rows
        if r.message.domain.return_path_host == host
        and hmac.compare_digest(mac, _mac(r.tenant_id, r.message_id, "domain", r.domain.lower()))
    ]


def find_recipient(address: str, report: bytes = b""):
    """The recipient a bounce to ``address`` is about, or None if forged or unmatchable.

    A per-recipient return path names its recipient; a shared one needs ``report`` (the
    bounce itself) to name exactly one of the recipients it stands for.
    """
    candidates = _candidates(address)
    if candidates and _parse(address)[0] == "b":
        return candidates[0]
    reported = {a.lower() for a in reported_recipients(report)}
    matches = [r for r in candidates if r.address.lower() in reported]
    return matches[0] if len(matches) == 1 else None
