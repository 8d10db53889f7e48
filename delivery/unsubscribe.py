"""One-click unsubscribe (RFC 8058): who asked for it, the signed link, and each
recipient's own copy of the message.

A message has it when its sender asked: the API's ``unsubscribe`` field, the
``Sendmsg-Unsubscribe: yes`` header (SMTP and raw sends; removed before the message is
stored), or else the tenant's ``list_unsubscribe`` default. The relay then sends such a
message one recipient per transaction, each copy with its own

    List-Unsubscribe: <https://<public host>/u/<token>>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

added before DKIM signing (RFC 8058 §3: the signature must cover both), any the sender
wrote replaced (never two). The token binds tenant, message and recipient with an HMAC,
like a VERP return path (delivery/verp.py), under a key of its own.

The visible link: ``%unsubscribe_url%`` in a text/plain or text/html part becomes the
same URL (HTML-escaped in HTML). Parts in quoted-printable or base64 are decoded, changed
and encoded again in the same transfer encoding. Attachments, parts of attached messages
and parts in a charset Python does not know are left as written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import quopri
import re
from email.generator import BytesGenerator
from email.message import Message as MimePart
from email.parser import BytesParser
from email.policy import compat32
from io import BytesIO

from django.conf import settings
from django.db.models.signals import post_save

from delivery.models import Message, Recipient
from domains.models import Tenant
from sendmsg import read_cache

OPT_IN_HEADER = "Sendmsg-Unsubscribe"
PLACEHOLDER = "%unsubscribe_url%"
ONE_CLICK = "List-Unsubscribe=One-Click"
TOKEN = re.compile(r"^([0-9a-z]{1,13})-([a-z2-7]{16})$")
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
YES = frozenset({"yes", "true", "on", "1"})
NO = frozenset({"no", "false", "off", "0"})
_REPLACED = (b"list-unsubscribe", b"list-unsubscribe-post")


class OptInError(ValueError):
    """A Sendmsg-Unsubscribe header whose value is neither yes nor no."""


# -- opting in ------------------------------------------------------------------------------

_defaults: read_cache.ReadCache[int, bool] = read_cache.ReadCache("tenant unsubscribe default")


def tenant_default(tenant_id: int) -> bool:
    """The tenant's ``list_unsubscribe`` (kept a moment, like the gate's tenant state)."""

    def load() -> bool | None:
        return (
            Tenant.objects.filter(pk=tenant_id).values_list("list_unsubscribe", flat=True).first()
        )

    return bool(_defaults.get(tenant_id, load))


def _forget_default(sender, instance: Tenant, **kwargs) -> None:
    _defaults.forget(instance.pk)


post_save.connect(_forget_default, sender=Tenant, dispatch_uid="unsubscribe-forget-tenant")


def _header_fields(data: bytes) -> tuple[list[list[bytes]], bytes]:
    """The header section of a CRLF message as fields (each its lines, CRLF kept), and
    the rest (the blank line and the body)."""
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end < 0 else (data[: end + 2], data[end + 2 :])
    fields: list[list[bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields, rest


def _name(field: list[bytes]) -> bytes:
    return field[0].split(b":", 1)[0].strip().lower()


def take_opt_in(data: bytes) -> tuple[bytes, bool | None]:
    """``data`` (CRLF) without its Sendmsg-Unsubscribe header, and what the header asked:
    True, False, or None when there was none. Raises OptInError for another value."""
    fields, rest = _header_fields(data)
    wanted = OPT_IN_HEADER.lower().encode()
    found = [f for f in fields if _name(f) == wanted]
    if not found:
        return data, None
    values = {
        b"".join(f).split(b":", 1)[-1].decode("ascii", "replace").strip().lower() for f in found
    }
    if len(values) != 1 or not values <= YES | NO:
        raise OptInError(f"{OPT_IN_HEADER} must be yes or no")
    kept = b"".join(b"".join(f) for f in fields if _name(f) != wanted)
    return kept + rest, values.pop() in YES


def wanted(*, tenant_id: int, asked: bool | None, header: bool | None) -> bool:
    """Whether a message gets the platform's unsubscribe headers: the API field if given,
    else the header if present, else the tenant's default."""
    if asked is not None:
        return asked
    if header is not None:
        return header
    return tenant_default(tenant_id)


# -- the token and the URL ------------------------------------------------------------------


def _base36(number: int) -> str:
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = DIGITS[digit] + out
        if not number:
            return out


def _mac(tenant_id: int, message_id: int, recipient_id: int) -> str:
    key = hashlib.sha256(f"sendmsg unsubscribe\0{settings.HASH_KEY}".encode()).digest()
    text = f"{tenant_id}:{message_id}:{recipient_id}".encode()
    return base64.b32encode(hmac.new(key, text, "sha256").digest()[:10]).decode().lower()


def token_for(recipient: Recipient) -> str:
    """``<recipient id, base36>-<16 chars of HMAC>``: URL-safe, about 20 characters."""
    mac = _mac(recipient.tenant_id, recipient.message_id, recipient.pk)
    return f"{_base36(recipient.pk)}-{mac}"


def url_for(recipient: Recipient) -> str:
    return f"{settings.SENDMSG_PUBLIC_URL.rstrip('/')}/u/{token_for(recipient)}"


def find_recipient(token: str) -> Recipient | None:
    """The recipient a token was made for, or None if it is malformed or forged."""
    match = TOKEN.match(token)
    if match is None:
        return None
    recipient = Recipient.objects.filter(pk=int(match.group(1), 36)).first()
    if recipient is None:
        return None
    mac = _mac(recipient.tenant_id, recipient.message_id, recipient.pk)
    return recipient if hmac.compare_digest(match.group(2), mac) else None


# -- each recipient's copy ------------------------------------------------------------------


def personalize(message: Message, recipient: Recipient) -> bytes:
    """The message as ``recipient`` gets it (before signing): the unsubscribe headers
    first, any the sender wrote removed, and the placeholder replaced in its text parts."""
    url = url_for(recipient)
    data = replace_placeholder(bytes(message.raw), url)
    fields, rest = _header_fields(data)
    kept = b"".join(b"".join(f) for f in fields if _name(f) not in _REPLACED)
    added = f"List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: {ONE_CLICK}\r\n".encode()
    return added + kept + rest


def replace_placeholder(data: bytes, url: str) -> bytes:
    """``data`` with PLACEHOLDER replaced by ``url`` in its text/plain and text/html parts;
    unchanged (the same bytes) when no such part has it."""
    if PLACEHOLDER.encode() not in data and b"base64" not in data.lower():
        return data  # neither literally there nor possibly hidden in base64
    tree = BytesParser(policy=compat32).parsebytes(data)
    if not _replace_in(tree, url):
        return data
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0).flatten(tree, linesep="\r\n")
    return out.getvalue()


def _replace_in(part: MimePart, url: str) -> bool:
    """Replace in ``part`` and its subparts (not into attached messages); whether any
    changed."""
    if part.is_multipart():
        if part.get_content_maintype() == "message":
            return False
        changed = False
        for sub in part.get_payload():
            changed = _replace_in(sub, url) or changed
        return changed
    if part.get_content_type() not in ("text/plain", "text/html"):
        return False
    if (part.get("Content-Disposition") or "").strip().lower().startswith("attachment"):
        return False
    value = html.escape(url) if part.get_content_subtype() == "html" else url
    encoding = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    if encoding in ("7bit", "8bit", "binary"):
        # The bytes as they came (nothing to decode); 8-bit ones go back out unchanged
        # as surrogate escapes, which BytesGenerator writes as the original bytes.
        raw = part.get_payload(decode=True)
        if PLACEHOLDER.encode() not in raw:
            return False
        raw = raw.replace(PLACEHOLDER.encode(), value.encode())
        part.set_payload(raw.decode("ascii", "surrogateescape"))
        return True
    if encoding not in ("base64", "quoted-printable"):
        return False
    charset = part.get_content_charset() or "us-ascii"
    try:
        text = part.get_payload(decode=True).decode(charset)
    except (LookupError, UnicodeDecodeError):
        return False
    if PLACEHOLDER not in text:
        return False
    body = text.replace(PLACEHOLDER, value).encode(charset)
    if encoding == "base64":
        part.set_payload(base64.encodebytes(body).decode("ascii"))
    else:
        # quopri reads a line break as LF only (a CR would become =0D); the generator
        # writes CRLF.
        part.set_payload(quopri.encodestring(body.replace(b"\r\n", b"\n")).decode("ascii"))
    return True
