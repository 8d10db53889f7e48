"""Reading a bounce: what an arriving report says about the recipient it is about.

Two shapes arrive. A DSN (RFC 3464: ``multipart/report; report-type=delivery-status``)
says it in fields, a block per recipient: Action, Status, Diagnostic-Code, Final- and
Original-Recipient, Remote-MTA. Older MTAs send prose instead: Exim's "This message was
created automatically by mail delivery software", qmail's "failure notice", Exchange's
"Undeliverable: …". For prose, the first SMTP reply (or bare enhanced code) after the
recipient's address is taken as the diagnostic; a notice with neither a code nor words
the pattern table knows (reputation/bounce_patterns.py) is not taken as a bounce, so an
out-of-office reply to the return path changes nothing.

A report whose returned message was itself a bounce (a DSN, or sent with the null
return path) is flagged ``about_a_bounce``: it is about a notice, not about the
recipient, and must change nothing (RFC 3464 §2: no notification about a notification).

Nothing here writes: reputation/bounce_processing.py acts on what this returns.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import enum
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from delivery.replies import SmtpReply
from reputation.bounce_patterns import BounceClass, Classification, classify, reason_in_text

FAILED, DELAYED = "failed", "delayed"
MAX_TEXT = 1000  # characters of a diagnostic kept on the event


class ReportKind(enum.StrEnum):
    DSN = "dsn"  # RFC 3464 delivery status notification
    PROSE = "prose"  # a bounce notice in words only
    OTHER = "other"  # a complaint, an auto-reply, anything else


@dataclass(frozen=True)
class Bounce:
    """What a report says happened to one recipient."""

    action: str  # FAILED or DELAYED
    code: int | None
    enhanced: str
    text: str
    remote_mta: str = ""
    final_recipient: str = ""
    original_recipient: str = ""

    @property
    def classification(self) -> Classification:
        found = classify(self.code, self.enhanced, self.text)
        if self.action == DELAYED and found.is_hard:  # still being retried: not final
            return Classification(BounceClass.SOFT, found.reason)
        return found


@dataclass
class Report:
    kind: ReportKind
    about_a_bounce: bool = False
    blocks: list[Bounce] = field(default_factory=list)  # DSN: failed and delayed ones
    prose: str = ""  # PROSE: the notice's words, without the returned message
    prose_action: str = FAILED

    def bounce_for(self, address: str) -> Bounce | None:
        """What the report says about ``address`` (the recipient its return path names),
        or None when it says nothing we can act on."""
        if self.kind == ReportKind.DSN:
            wanted = address.lower()
            named = [
                b
                for b in self.blocks
                if wanted in (b.final_recipient.lower(), b.original_recipient.lower())
            ]
            # A forwarding MTA may report the address it rewrote ours to; the signed
            # return path already names the recipient, so a lone block is about it.
            if not named and len(self.blocks) == 1:
                named = self.blocks
            return named[0] if named else None
        if self.kind == ReportKind.PROSE:
            return _prose_bounce(self.prose, address, self.prose_action)
        return None


def parse_report(raw: bytes) -> Report:
    """Read an arrived report (CRLF or LF line endings)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    kinds = [(part.get_content_type(), part) for part in _parts(message)]
    about_a_bounce = _returns_a_bounce(message)
    if any(kind == "message/feedback-report" for kind, _ in kinds):
        return Report(ReportKind.OTHER)  # a complaint (RFC 5965), not a bounce
    status_parts = [part for kind, part in kinds if kind in STATUS_TYPES]
    if status_parts:
        # Only failed and delayed blocks count: a DSN that says "delivered" or
        # "relayed" (or nothing we can read) is no bounce, whatever its prose says.
        blocks = [b for part in status_parts for b in _dsn_blocks(part)]
        kind = ReportKind.DSN if blocks else ReportKind.OTHER
        return Report(kind, about_a_bounce, blocks=blocks)
    if _looks_like_bounce_notice(message):
        prose, returned = _prose(message)
        about_a_bounce = about_a_bounce or _headers_say_bounce(_first_header_block(returned))
        subject = _unfold(message.get("Subject", ""))
        action = DELAYED if DELAY_WORDS.search(subject) or DELAY_WORDS.search(prose) else FAILED
        return Report(ReportKind.PROSE, about_a_bounce, prose=prose, prose_action=action)
    return Report(ReportKind.OTHER)


# -- DSN fields ----------------------------------------------------------------------------

STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# "550 5.1.1 text", "550-5.1.1 text" (Gmail repeats it on every line), "550 text"
REPLY_PREFIX = re.compile(r"^\s*([245]\d\d)(?:[ -]+|$)(?:#?([245]\.\d{1,3}\.\d{1,3})\b\s*)?")


def _field_groups(part: email.message.Message) -> list[email.message.Message]:
    """The groups of fields of a status part: per message, then per recipient."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return payload
    # message/global-delivery-status (RFC 6533, UTF-8): the library reads it as one
    # message whose body holds the other groups; read it all again as text.
    if isinstance(payload, list):
        text = "".join(m.as_bytes().decode("utf-8", "replace") for m in payload)
    else:
        text = str(payload)
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    return [parser.parsestr(g) for g in re.split(r"\r?\n[ \t]*\r?\n", text) if g.strip()]


def _dsn_blocks(part: email.message.Message) -> list[Bounce]:
    blocks = []
    for fields in _field_groups(part):
        action = _unfold(fields.get("Action", "")).lower().split(" ")[0]
        if action not in (FAILED, DELAYED):
            continue  # per-message fields, or delivered/relayed/expanded: not a bounce
        code, diag_enhanced, text = _diagnostic(fields.get("Diagnostic-Code", ""))
        status = STATUS.match(_unfold(fields.get("Status", "")))
        blocks.append(
            Bounce(
                action=action,
                code=code,
                # The remote's own code beats the reporter's summary (Exim says 5.0.0).
                enhanced=diag_enhanced or (status.group(1) if status else ""),
                text=text,
                remote_mta=_host(fields.get("Remote-MTA", "")),
                final_recipient=_address(fields.get("Final-Recipient", "")),
                original_recipient=_address(fields.get("Original-Recipient", "")),
            )
        )
    return blocks


def _host(value: str) -> str:
    """``dns; mx.example.com. (192.0.2.1, the server for …)`` → ``mx.example.com``."""
    words = _typed_value(value).split()
    return words[0].strip("[].")[:253] if words else ""


def _diagnostic(value: str) -> tuple[int | None, str, str]:
    """(code, enhanced, text) of a Diagnostic-Code such as ``smtp; 550 5.1.1 <a@b>: no``."""
    value = value.partition(";")[2] if ";" in value.split("\n")[0] else value
    code, enhanced, words = None, "", []
    for number, line in enumerate(line for line in value.splitlines() if line.strip()):
        prefix = REPLY_PREFIX.match(line)
        if prefix and (number == 0 or int(prefix.group(1)) == code):
            if number == 0:
                code, enhanced = int(prefix.group(1)), prefix.group(2) or ""
            line = line[prefix.end() :]
        words.append(line)
    return code, enhanced, " ".join(" ".join(words).split())[:MAX_TEXT]


def _typed_value(value: str) -> str:
    """``rfc822; a@b`` → ``a@b`` (the value after an RFC 3464 type)."""
    return _unfold(value).partition(";")[2].strip() if ";" in value else _unfold(value)


def _address(value: str) -> str:
    return _typed_value(value).strip("<> ")


def _unfold(value: str) -> str:
    return " ".join(str(value).split())


# -- prose ---------------------------------------------------------------------------------

BOUNCE_SENDERS = re.compile(
    r"^(mailer-daemon|mailer_daemon|mailerdaemon|postmaster|mail-daemon|microsoftexchange\w*)@",
    re.IGNORECASE,
)
BOUNCE_SUBJECTS = re.compile(
    r"undeliver|delivery (status notification|failure|failed|has failed|notification)"
    r"|mail delivery failed|returned mail|returned to sender|failure notice"
    r"|could not be delivered|non.?delivery|delivery problem|mail system error"
    r"|delayed mail|warning: message .* delayed",
    re.IGNORECASE,
)
DELAY_WORDS = re.compile(
    r"delayed mail|still being retried|warning only|not been delivered yet"
    r"|will (continue to )?(be )?retr(y|ied)|delivery (status notification )?\(delay\)"
    r"|warning: message .* delayed|has been delayed",
    re.IGNORECASE,
)
# Where a notice stops and the message it returns begins.
RETURNED_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(this is a copy of|below this line is a copy|original message"
    r"|returned message|undelivered message|the original message|message headers follow"
    r"|original message headers)",
    re.IGNORECASE | re.MULTILINE,
)
FULL_REPLY = re.compile(r"(?<![\w.#/+:-])([45]\d\d)[ -]+#?([45]\.\d{1,3}\.\d{1,3})(?![\w.])")
BASIC_REPLY = re.compile(r"(?:^[ \t]*|[:;'\"(]\s*)([45]\d\d)[ -](?=[ \t]*\S)", re.MULTILINE)
BARE_ENHANCED = re.compile(r"(?<![\w.])#?([45]\.\d{1,3}\.\d{1,3})(?![\w.])")
TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)


def _looks_like_bounce_notice(message: email.message.Message) -> bool:
    sender = email.utils.parseaddr(message.get("From", ""))
    subject = _unfold(message.get("Subject", ""))
    return bool(
        BOUNCE_SENDERS.match(sender[1])
        or re.search(r"mail delivery (system|subsystem)", sender[0], re.IGNORECASE)
        or BOUNCE_SUBJECTS.search(subject)
    )


def _prose(message: email.message.Message) -> tuple[str, str]:
    """(the notice's words, the returned message's text if it is inline)."""
    texts, htmls = [], []
    for part in _own_parts(message):
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html"):
            (texts if kind == "text/plain" else htmls).append(_decoded(part))
    text = "\n".join(texts) or html.unescape(TAG.sub(" ", "\n".join(htmls)))
    marker = RETURNED_MARKER.search(text)
    if marker:
        return text[: marker.start()], text[marker.end() :].split("\n", 1)[-1]
    return text, ""


def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Every part of the report itself, containers included; never the parts of a
    message it returns (that may be a DSN of its own) nor a status part's field groups."""
    yield message
    if message.is_multipart() and message.get_content_maintype() != "message":
        for part in message.get_payload():
            yield from _parts(part)


def _own_parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """The notice's own leaf parts (its words), not a returned message."""
    for part in _parts(message):
        if not part.is_multipart() and part.get_content_maintype() != "message":
            yield part


def _decoded(part: email.message.Message) -> str:
    data = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _prose_bounce(prose: str, address: str, action: str) -> Bounce | None:
    start = prose.lower().find(address.lower()) if address else -1
    window = prose[start:] if start >= 0 else prose
    # The first reply after the address (a notice lists each address with its error),
    # else the first anywhere (Gmail and Exchange name the address in a sentence).
    for haystack in (window, prose) if start >= 0 else (prose,):
        for regex in (FULL_REPLY, BASIC_REPLY, BARE_ENHANCED):
            found = regex.search(haystack)
            if found:
                return _bounce_at(haystack, found, action, address)
    # No code anywhere: the lines about the address, if the pattern table knows them.
    if start >= 0:
        text = window.split("\n\n", 1)[0]
        text = " ".join(text[len(address) :].split()).strip(" :<>")
    else:
        text = " ".join(prose.split())
    text = text[:MAX_TEXT]
    if reason_in_text(text) is None:
        return None
    return Bounce(action=action, code=None, enhanced="", text=text, final_recipient=address)


def _bounce_at(text: str, found: re.Match, action: str, address: str) -> Bounce:
    """The reply at ``found``, with the lines that continue it (indented deeper)."""
    line_start = text.rfind("\n", 0, found.start(1)) + 1
    first, *following = text[line_start:].split("\n")
    indent = len(first) - len(first.lstrip())
    bare = found.re is BARE_ENHANCED
    lines = [first if bare else text[found.start(1) : line_start + len(first)]]
    for line in following:
        if not line.strip() or len(line) - len(line.lstrip()) <= indent:
            break
        lines.append(line)
    words = " ".join(" ".join(lines).split()).strip(" <>'\"")
    if bare:
        return Bounce(action, None, found.group(1), words[:MAX_TEXT], final_recipient=address)
    reply = SmtpReply.parse(int(found.group(1)), words[3:].lstrip(" -#"))
    return Bounce(
        action, reply.code, reply.enhanced, reply.text[:MAX_TEXT], final_recipient=address
    )


# -- a bounce of a bounce ------------------------------------------------------------------

BOUNCE_HEADER = re.compile(
    r"^(return-path:[ \t]*<>"
    r"|content-type:[ \t]*multipart/report\b[^\n]*(?:\n[ \t][^\n]*)*?"
    r"report-type=\"?delivery-status)",
    re.IGNORECASE | re.MULTILINE,
)


def _returns_a_bounce(message: email.message.Message) -> bool:
    """Whether the message this report returns (whole, or its headers) was a bounce."""
    for part in _parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            returned = part.get_payload()
            if isinstance(returned, list) and returned:
                headers = "".join(f"{k}: {v}\n" for k, v in returned[0].items())
                if _headers_say_bounce(headers):
                    return True
        elif kind in ("text/rfc822-headers", "text/global-headers"):
            if _headers_say_bounce(_decoded(part).replace("\r\n", "\n")):
                return True
    return False


def _first_header_block(text: str) -> str:
    return text.replace("\r\n", "\n").lstrip("\n").split("\n\n", 1)[0]


def _headers_say_bounce(headers: str) -> bool:
    return bool(BOUNCE_HEADER.search(headers))
