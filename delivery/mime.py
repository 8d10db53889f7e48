"""Building a message from JSON fields: MIME written with the stdlib's encoders, CRLF line
endings, 7bit only, and no way for any field to add, split or override a header.

Python 3.11 before 3.11.10 writes an encoded-word such as ``=?UTF-8?Q?a=0D=0ABcc:_x@y?=``
back out as a real header line (CVE-2024-6923), so every header-bearing value is checked
here with its encoded-words decoded, and the finished header block is parsed again and
must list exactly the headers we set.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.charset import Charset
from email.errors import HeaderParseError
from email.header import decode_header
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.utils import formataddr, getaddresses
from urllib.parse import quote

from domains.names import InvalidDomain, normalize_domain

# Line breaks as the email package sees them (str.splitlines) and other C0 controls.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Lenient on purpose, like the email package's own parser: whitespace inside the payload
# and words glued to other text still count as encoded-words.
ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=")
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL_PART = re.compile(rf"{ATEXT}(?:\.{ATEXT})*")
HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext: printable ASCII but ':'
MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
MIME_PARAMETER = re.compile(r'\s*;\s*([A-Za-z0-9!#$&^_.+-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]+)')
CONTENT_ID = re.compile(r"[!-;=?-~]{1,250}")  # printable ASCII without '<' and '>'

RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "return-path",
        "received",
        "received-spf",
        "delivered-to",
        "dkim-signature",
        "domainkey-signature",
        "authentication-results",
        "mime-version",
    }
)
"""Set by the platform or by a field of their own; a custom header may not replace them."""
RESERVED_PREFIXES = ("content-", "resent-", "arc-", "x-sendmsg-")
MAX_HEADER_VALUE = 4000
MAX_HEADER_TEXT = 8000


class MessageError(ValueError):
    """A field that cannot go into a message; ``field`` names it, ``code`` says why."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class HeaderInjection(MessageError):
    code = "header_injection"


class InvalidAddress(MessageError):
    code = "invalid_address"


class ReservedHeader(MessageError):
    code = "reserved_header"


class NoContent(MessageError):
    code = "no_content"


@dataclass(frozen=True)
class Mailbox:
    """An address (local part as given, domain in its ASCII form) with a display name."""

    address: str
    name: str = ""

    def header_value(self) -> Address:
        local, _, domain = self.address.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str = ""
    """Set for an inline part; the HTML refers to it as ``cid:<content_id>``."""


# -- checks -------------------------------------------------------------------------------


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("utf-8", "surrogateescape")
    if encoding.lower() == "q":
        return re.sub(
            rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), data.replace(b"_", b" ")
        )
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    for candidate in (data + b"=" * (-len(data) % 4), data[:-1] + b"=" * (-len(data[:-1]) % 4)):
        try:
            return base64.b64decode(candidate)
        except (binascii.Error, ValueError):
            continue
    return data


def _decode_words(value: str, field: str) -> str:
    """``value`` with each encoded-word replaced by its text; refuses one hiding a break."""

    def decode(match: re.Match) -> str:
        charset = match[1].split("*", 1)[0] or "ascii"
        raw = _word_bytes(match[2], match[3])
        try:
            text = raw.decode(charset, "replace")
        except LookupError:
            text = raw.decode("latin-1")
        if b"\r" in raw or b"\n" in raw or CONTROL.search(text):
            raise HeaderInjection(
                field, "contains an encoded-word (RFC 2047) that decodes to a line break"
            )
        return text

    return ENCODED_WORD.sub(decode, value)


def check_header_text(value: str, field: str) -> str:
    """``value`` unchanged if it can safely go into a header; else HeaderInjection."""
    if len(value) > MAX_HEADER_TEXT:  # also bounds the encoded-word scan below
        raise MessageError(field, f"is longer than {MAX_HEADER_TEXT} characters")
    if CONTROL.search(value):
        raise HeaderInjection(field, "must not contain line breaks or control characters")
    text = value
    for _ in range(5):  # an encoded-word may hide another one
        decoded = _decode_words(text, field)
        if decoded == text:
            break
        text = decoded
    return value


def _display_text(value: str) -> str:
    """A display name or header text with its encoded-words decoded (the writer encodes
    again whatever needs it); unchanged if one cannot be decoded."""
    if "=?" not in value:
        return value
    # decode_header gives the text around encoded-words back as raw-unicode-escape bytes.
    try:
        return "".join(
            part.decode(charset.split("*")[0] if charset else "raw-unicode-escape", "replace")
            if isinstance(part, bytes)
            else part
            for part, charset in decode_header(value)
        )
    except (HeaderParseError, LookupError, ValueError):
        return value


def parse_address(value: str, field: str) -> str:
    """A bare address (``local@domain``, no name) for an envelope, domain in ASCII form."""
    check_header_text(value, field)
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise InvalidAddress(field, f"{value!r} is not an email address")
    if not local.isascii():
        raise InvalidAddress(
            field, f"{value!r}: a non-ASCII local part needs SMTPUTF8, which the API cannot send"
        )
    if len(local) > 64 or not LOCAL_PART.fullmatch(local):
        raise InvalidAddress(field, f"{value!r} is not a valid email address")
    try:
        ascii_domain = normalize_domain(domain)
    except InvalidDomain as exc:
        raise InvalidAddress(field, str(exc)) from None
    return f"{local}@{ascii_domain}"


def make_mailbox(*, address: str, name: str = "", field: str) -> Mailbox:
    check_header_text(name, field)
    return Mailbox(address=parse_address(address, field), name=_display_text(name).strip())


def parse_mailbox(value: str | Mailbox, field: str) -> Mailbox:
    """One mailbox from ``"Name <local@domain>"`` or ``"local@domain"``."""
    if isinstance(value, Mailbox):
        return make_mailbox(address=value.address, name=value.name, field=field)
    check_header_text(value, field)
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        raise InvalidAddress(field, f"{value!r} is not one email address")
    name, address = pairs[0]
    return make_mailbox(address=address, name=name, field=field)


def check_custom_header(name: str, value: str, field: str = "headers") -> None:
    where = f"{field}.{name}"
    check_header_text(name, where)
    if not HEADER_NAME.fullmatch(name):
        raise MessageError(where, "is not a valid header name")
    lower = name.lower()
    if lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIXES):
        raise ReservedHeader(where, f"{name} is set by the platform or by its own field")
    check_header_text(value, where)
    if len(value) > MAX_HEADER_VALUE:
        raise MessageError(where, f"is longer than {MAX_HEADER_VALUE} characters")


def check_attachment(attachment: Attachment, field: str) -> None:
    check_header_text(attachment.filename, f"{field}.filename")
    if not attachment.filename.strip():
        raise MessageError(f"{field}.filename", "is required")
    if len(attachment.filename) > 255:
        raise MessageError(f"{field}.filename", "is longer than 255 characters")
    check_header_text(attachment.content_type, f"{field}.content_type")
    try:
        mime_type, _ = split_content_type(attachment.content_type)
    except ValueError:
        raise MessageError(
            f"{field}.content_type",
            "is not a MIME type such as image/png or text/csv; charset=utf-8",
        ) from None
    if mime_type.split("/")[0] in ("multipart", "message"):
        raise MessageError(
            f"{field}.content_type",
            "multipart and message types cannot be attached; use application/octet-stream "
            "or send raw MIME",
        )
    if attachment.content_id:
        check_header_text(attachment.content_id, f"{field}.content_id")
        if not CONTENT_ID.fullmatch(attachment.content_id):
            raise MessageError(f"{field}.content_id", "must be printable ASCII without < or >")


def split_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters; ValueError if malformed."""
    main, _, rest = value.strip().partition(";")
    if not MIME_TYPE.fullmatch(main.strip()):
        raise ValueError(value)
    rest = ";" + rest if rest else ""
    params, position = {}, 0
    for match in MIME_PARAMETER.finditer(rest):
        if match.start() != position:
            raise ValueError(value)
        name, raw = match[1].lower(), match[2]
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
    if rest[position:].strip(" ;"):
        raise ValueError(value)
    return main.strip().lower(), params


# -- writing ------------------------------------------------------------------------------
#
# Written by hand with a few stdlib encoders (formataddr, Charset, binascii, base64): the
# email package's header registry, set_content and generator made a simple message cost
# 0.7 ms of CPU, ten times what this does. A header is a list of words, joined by single
# spaces and never split inside; _fold breaks the line before a word that would pass
# column 78. Whatever this writer does, _check_written has the last word on the headers.

LINE_LENGTH = 78  # RFC 5322 2.1.1: SHOULD; folding happens between words only
MAX_WORD = 900  # a word on a line of its own, with a header name, stays under 998 octets
MAX_BODY_LINE = 998  # RFC 5322 2.1.1: MUST, so longer text lines go out encoded
UTF8 = Charset("utf-8")  # header_encode picks the shorter of Q and B encoding


def _fold(name: str, words: Sequence[str]) -> str:
    """``name: words`` and CRLF, a line break before a word that would pass LINE_LENGTH.

    An empty word stands for one of several spaces in a row. A break comes only between
    two words, so no line is blank and the first one holds a word."""
    lines, line, started = [], name + ":", False
    for word in words:
        if started and word and len(line) + 1 + len(word) > LINE_LENGTH:
            lines.append(line)
            line = ""
        line += " " + word
        started = started or bool(word)
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 encoded-words for ``text``, never splitting a character: 39 UTF-8 octets
    make at most 64 characters, so most headers' first line stays within 78."""
    words, chunk, size = [], "", 0
    for char in text:
        octets = len(char.encode())
        if size + octets > 39:
            words.append(UTF8.header_encode(chunk))
            chunk, size = "", 0
        chunk += char
        size += octets
    return [*words, UTF8.header_encode(chunk)]


def _fits(words: list[str]) -> bool:
    return max(map(len, words)) <= MAX_WORD


def _text_words(value: str) -> list[str]:
    """Unstructured text (Subject, a custom header): as it is if ASCII, else encoded-words.

    Encoded-words in the value are decoded first, so all encoding in the result is ours."""
    text = _display_text(value)
    words = text.split(" ") if text.isascii() else []
    return words if words and _fits(words) else _encoded_words(text)


def _address_words(boxes: Sequence[Mailbox]) -> list[str]:
    """``Name <local@domain>, …``; a non-ASCII name as encoded-words, the address as is."""
    words: list[str] = []
    for box in boxes:
        if words:
            words[-1] += ","
        plain = formataddr((box.name, box.address)).split(" ") if box.name.isascii() else []
        words += (
            plain if plain and _fits(plain) else [*_encoded_words(box.name), f"<{box.address}>"]
        )
    return words


def _parameter_words(name: str, value: str) -> list[str]:
    """``name="value"``; non-ASCII or long values as RFC 2231 pieces, each a parameter of
    its own (``name*0*=utf-8''…``, ``name*1*=…``)."""
    if value.isascii():
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        if len(quoted) <= MAX_WORD - len(name):
            return [f'{name}="{quoted}"']
    pieces, piece = [], ""
    for char in value:
        code = quote(char, safe="")
        if len(piece) + len(code) > 60:
            pieces.append(piece)
            piece = ""
        piece += code
    pieces.append(piece)
    if len(pieces) == 1:
        return [f"{name}*=utf-8''{piece}"]
    first = f"{name}*0*=utf-8''{pieces[0]}"
    return [first, *(f"{name}*{i}*={piece}" for i, piece in enumerate(pieces[1:], 1))]


def _with_parameters(value: str, params: Mapping[str, str]) -> list[str]:
    """``value; name="param"; …`` as words."""
    words = [value]
    for name, param in params.items():
        words += _parameter_words(name, param)
    return [word + ";" for word in words[:-1]] + words[-1:]


@dataclass
class _Part:
    """A MIME entity: its header fields as words, and its body."""

    headers: dict[str, list[str]]
    body: bytes
    """Encoded, CRLF line endings, ending with CRLF."""

    def head(self) -> str:
        return "".join(_fold(name, words) for name, words in self.headers.items())

    def as_bytes(self) -> bytes:
        return self.head().encode("ascii") + b"\r\n" + self.body


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _text_part(text: str, subtype: str) -> _Part:
    """UTF-8 with CRLF line breaks: 7bit when it can be, else quoted-printable or base64,
    whichever is shorter, so no relay hop needs 8BITMIME."""
    lines = text.encode().splitlines()
    data = b"\r\n".join(lines) + b"\r\n"
    if data.isascii() and b"\0" not in data and max(map(len, lines), default=0) <= MAX_BODY_LINE:
        cte, body = "7bit", data
    else:
        quoted, encoded = binascii.b2a_qp(data, istext=True), _base64(data)
        cte, body = (
            ("quoted-printable", quoted) if len(quoted) <= len(encoded) else ("base64", encoded)
        )
    content_type = _with_parameters(f"text/{subtype}", {"charset": "utf-8"})
    return _Part({"Content-Type": content_type, "Content-Transfer-Encoding": [cte]}, body)


def _attachment_part(attachment: Attachment, *, inline: bool) -> _Part:
    mime_type, params = split_content_type(attachment.content_type)
    params = {k: v for k, v in params.items() if k not in ("name", "boundary")}
    disposition = "inline" if inline else "attachment"
    headers = {
        "Content-Type": _with_parameters(mime_type, params),
        "Content-Transfer-Encoding": ["base64"],
        "Content-Disposition": _with_parameters(disposition, {"filename": attachment.filename}),
    }
    if attachment.content_id:
        headers["Content-ID"] = [f"<{attachment.content_id}>"]
    return _Part(headers, _base64(attachment.content))


def _multipart(subtype: str, parts: Sequence[_Part]) -> _Part:
    """The parts between boundary lines; the boundary appears in none of them."""
    written = [part.as_bytes() for part in parts]
    while True:
        boundary = f"==============={random.randrange(sys.maxsize):019d}=="
        delimiter = b"--" + boundary.encode()
        if not any(delimiter in part for part in written):
            break
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in written)
    content_type = _with_parameters(f"multipart/{subtype}", {"boundary": boundary})
    return _Part({"Content-Type": content_type}, body + delimiter + b"--\r\n")


def _mailboxes(values: Iterable[str | Mailbox], field: str) -> list[Mailbox]:
    return [parse_mailbox(value, f"{field}[{i}]") for i, value in enumerate(values)]


def _body(text: str, html: str, attachments: Sequence[Attachment]) -> _Part:
    """text/plain, text/html or multipart/alternative; multipart/related around the HTML
    for the inline parts it refers to; multipart/mixed when there are attachments."""
    inline = [a for a in attachments if html and a.content_id and f"cid:{a.content_id}" in html]
    html_part = _text_part(html, "html") if html else None
    if html_part and inline:
        related = [_attachment_part(a, inline=True) for a in inline]
        html_part = _multipart("related", [html_part, *related])
    if text and html_part:
        body = _multipart("alternative", [_text_part(text, "plain"), html_part])
    else:
        body = html_part or _text_part(text, "plain")
    others = [a for a in attachments if not any(a is b for b in inline)]
    if others:
        body = _multipart("mixed", [body, *(_attachment_part(a, inline=False) for a in others)])
    return body


def _check_written(data: bytes, expected: list[str]) -> None:
    """Parse the written header block again: it must hold exactly the headers we set."""
    written = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
    if [name.lower() for name in written.keys()] != [name.lower() for name in expected]:
        raise HeaderInjection("headers", "a field would have added or split a header")
    for name, value in written.items():
        check_header_text(re.sub(r"\r?\n(?=[ \t])", "", str(value)), name)


def build_message(
    *,
    from_addr: str,
    from_name: str = "",
    to: Sequence[str | Mailbox] = (),
    cc: Sequence[str | Mailbox] = (),
    bcc: Sequence[str | Mailbox] = (),
    reply_to: Sequence[str | Mailbox] = (),
    subject: str = "",
    text: str = "",
    html: str = "",
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[Attachment] = (),
    sender: str | Mailbox | None = None,
) -> bytes:
    """The message as CRLF bytes, ready for accept_message.

    Date and Message-ID are left to accept_message. Bcc addresses are checked like the
    others but never written: they belong in the envelope only. Raises a MessageError
    subclass naming the field at fault.
    """
    author = make_mailbox(address=from_addr, name=from_name, field="from")
    on_behalf = parse_mailbox(sender, "sender") if sender else None
    to_boxes, cc_boxes = _mailboxes(to, "to"), _mailboxes(cc, "cc")
    _mailboxes(bcc, "bcc")
    reply_boxes = _mailboxes(reply_to, "reply_to")
    check_header_text(subject, "subject")
    custom = dict(headers or {})
    for name, value in custom.items():
        check_custom_header(name, value)
    for i, attachment in enumerate(attachments):
        check_attachment(attachment, f"attachments[{i}]")
    if not text and not html:
        raise NoContent("text", "a message needs text, html or both")

    body = _body(text, html, attachments)
    fields = {"From": _address_words([author])}
    if on_behalf:
        fields["Sender"] = _address_words([on_behalf])
    if to_boxes:
        fields["To"] = _address_words(to_boxes)
    if cc_boxes:
        fields["Cc"] = _address_words(cc_boxes)
    if reply_boxes:
        fields["Reply-To"] = _address_words(reply_boxes)
    if subject:
        fields["Subject"] = _text_words(subject)
    for name, value in custom.items():
        fields[name] = _text_words(value)
    fields["MIME-Version"] = ["1.0"]
    message = _Part(fields | body.headers, body.body)
    # ASCII by construction; encode("ascii") would rather fail than write 8-bit headers.
    head = message.head().encode("ascii") + b"\r\n"
    _check_written(head, list(message.headers))
    return head + message.body


def envelope_recipients(*groups: Iterable[str | Mailbox]) -> list[str]:
    """The addresses of all groups in order, each once (compared case-insensitively)."""
    seen: set[str] = set()
    result = []
    for group in groups:
        for value in group:
            address = value.address if isinstance(value, Mailbox) else value
            if address.lower() not in seen:
                seen.add(address.lower())
                result.append(address)
    return result
