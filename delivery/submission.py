"""SMTP submission (aiosmtpd handler): AUTH, then MAIL/RCPT/DATA into accept_message.

The handler only speaks the protocol: it turns commands into calls of the accept path
(``delivery/accept.py``) and the credential check, and their results into replies. The
session limits it enforces (settings, read once when the listener starts):

- messages per session: the MAIL after the last one allowed gets ``421 4.7.0`` and the
  connection closes (the client reconnects and goes on);
- recipients per message: the RCPT over ``SENDMSG_MAX_RECIPIENTS`` gets ``452 4.5.3``,
  which tells a client to send the rest in another transaction (RFC 5321 §4.5.3.1.10);
- recipients per session: ``452 4.5.3`` at RCPT, then ``421 4.7.0`` at the next MAIL;
- a non-ASCII address without the SMTPUTF8 parameter: ``553 5.6.7`` (RFC 6531 §3.7.4.1).

Line length, message size, the idle timeout and connections per client address are the
protocol's business (``sendmsg/smtp.py``, ``delivery/management/commands/smtpd.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from django.conf import settings

from delivery import auth_throttle
from delivery.accept import (
    AcceptError,
    Sender,
    accept_messages,
    check_gate,
    check_recipient,
    check_sender_domain,
)
from delivery.credentials import SmtpIdentity, check_smtp_login
from delivery.models import Source
from sendmsg.smtp import (
    INTERNAL_ERROR,
    BaseHandler,
    client_address,
    in_group_batch,
    in_thread,
    in_worker,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure; please try again later"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
DUPLICATE_RECIPIENT = "250 2.1.5 Recipient OK (already given; it gets one copy)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients; send the rest in another message"
SESSION_RECIPIENTS = "452 4.5.3 Too many recipients in this session; reconnect for the rest"
SESSION_MESSAGES = "421 4.7.0 Too many messages in this session; please reconnect"
SESSION_RECIPIENTS_CLOSE = "421 4.7.0 Too many recipients in this session; please reconnect"
SENDER_RECHECK_SECONDS = 5.0
NEEDS_SMTPUTF8 = "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL FROM"

# RFC 5321 §4.3.2: what may answer the end of DATA. Codes the accept path uses for other
# stages (553 for an address) become the nearest of these, keeping the enhanced code.
DATA_REPLY_CODES = {250, 450, 451, 452, 550, 552, 554}


@dataclass(frozen=True)
class SessionLimits:
    messages: int
    recipients_per_message: int
    recipients: int

    @classmethod
    def from_settings(cls) -> SessionLimits:
        return cls(
            messages=settings.SENDMSG_SMTP_MAX_MESSAGES_PER_SESSION,
            recipients_per_message=settings.SENDMSG_MAX_RECIPIENTS,
            recipients=settings.SENDMSG_SMTP_MAX_RECIPIENTS_PER_SESSION,
        )


@dataclass
class SessionUsage:
    """What one session has used so far (kept on aiosmtpd's Session; STARTTLS resets it
    along with everything else, and nothing can be sent before STARTTLS)."""

    messages: int = 0
    recipients: int = 0
    # The envelope sender last found allowed, and when (time.monotonic()).
    sender_allowed: tuple[str, float] | None = None

    @classmethod
    def of(cls, session: Session) -> SessionUsage:
        usage = getattr(session, "sendmsg_usage", None)
        if usage is None:
            usage = cls()
            session.sendmsg_usage = usage  # type: ignore[attr-defined]
        return usage


def _sender(session: Session) -> Sender:
    identity: SmtpIdentity = session.auth_data
    return Sender(tenant_id=identity.tenant_id, domain_ids=identity.domain_ids)


def _check_mail_from(sender: Sender, address: str) -> None:
    check_gate(sender, check_sender_domain(sender, address, what="Sender"))


def _recently_allowed(usage: SessionUsage, address: str) -> bool:
    """Whether this session's last message had the same sender, allowed moments ago.

    A session usually sends many messages from one address: the MAIL check (an early
    refusal) is then not repeated for each. The end of DATA checks sender and gate anyway.
    """
    if usage.sender_allowed is None:
        return False
    allowed, at = usage.sender_allowed
    return allowed == address and time.monotonic() - at < SENDER_RECHECK_SECONDS


async def _throttle(call: Callable[[auth_throttle.Subject], T], subject, *, default: T) -> T:
    """``call(subject)`` off the loop; ``default`` if the cache fails.

    The throttle fails open: logins are random 128-bit secrets, so a cache outage costs
    little protection, while failing closed would stop every tenant's mail.
    """
    try:
        return await in_worker(call)(subject)
    except Exception:
        log.exception("AUTH throttle unavailable; going on without it")
        return default


def _data_reply(error: AcceptError) -> str:
    code = error.code
    if code not in DATA_REPLY_CODES:
        code = 550 if code >= 500 else 451
    return f"{code} {error.enhanced} {error.text}"


def _same_recipient(address: str) -> str:
    """A key under which two spellings of one mailbox compare equal (the domain's case)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


class SubmissionHandler(BaseHandler):
    """Authenticated submission; every ORM call runs off the event loop (STYLE #7)."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits.from_settings()

    # -- AUTH ------------------------------------------------------------------------

    async def _login(self, server: SMTP, username: bytes, password: bytes) -> AuthResult:
        """Check a login, throttled per client address and username (auth_throttle)."""
        assert server.session is not None
        subject = auth_throttle.Subject(
            address=client_address(server.session.peer),
            username=username.decode("utf-8", "replace")[:256],
        )
        locked_for = await _throttle(auth_throttle.locked_for, subject, default=0)
        if locked_for:
            return self._refuse(auth_throttle.locked_reply(locked_for))
        try:
            user, secret = username.decode(), password.decode()
        except UnicodeDecodeError:
            identity = None
        else:
            try:
                identity = await in_thread(check_smtp_login)(user, secret)
            except Exception:
                log.exception("AUTH could not be checked for peer=%s", subject.address)
                return self._refuse(AUTH_UNAVAILABLE)
        if identity is None:
            delay = await _throttle(auth_throttle.record_failure, subject, default=0.0)
            await asyncio.sleep(delay)
            return self._refuse(AUTH_FAILED)
        await _throttle(auth_throttle.record_success, subject, default=None)
        return AuthResult(success=True, handled=False, auth_data=identity, message=AUTH_OK)

    @staticmethod
    def _refuse(reply: str) -> AuthResult:
        return AuthResult(success=False, handled=False, message=reply)

    async def _initial(self, server: SMTP, args: list[str], challenge: str) -> bytes | None:
        """The initial response given with AUTH, else the answer to ``challenge``.

        None when the client cancelled or sent bad base64 (already answered).
        """
        if len(args) == 1:
            blob = await server.challenge_auth(challenge)
            return None if blob is MISSING else blob
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._login(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        username = await self._initial(server, args, SMTP.AuthLoginUsernameChallenge)
        if username is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._login(server, username, password)

    # -- the transaction -------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        usage = SessionUsage.of(session)
        if usage.messages >= self.limits.messages:
            return SESSION_MESSAGES
        if usage.recipients >= self.limits.recipients:
            return SESSION_RECIPIENTS_CLOSE
        if not address.isascii() and "SMTPUTF8" not in options:
            return NEEDS_SMTPUTF8
        if not _recently_allowed(usage, address):
            try:
                await in_thread(_check_mail_from)(_sender(session), address)
            except AcceptError as exc:
                return str(exc)
            usage.sender_allowed = (address, time.monotonic())
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        usage = SessionUsage.of(session)
        if not address.isascii() and not envelope.smtp_utf8:
            return NEEDS_SMTPUTF8
        if len(envelope.rcpt_tos) >= self.limits.recipients_per_message:
            return TOO_MANY_RECIPIENTS
        if usage.recipients >= self.limits.recipients:
            return SESSION_RECIPIENTS
        try:
            check_recipient(address)
        except AcceptError as exc:
            return str(exc)
        key = _same_recipient(address)
        if any(_same_recipient(given) == key for given in envelope.rcpt_tos):
            return DUPLICATE_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        usage.recipients += 1
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        SessionUsage.of(session).messages += 1
        try:
            # The messages arriving together are stored in one batch (accept_messages).
            message = await in_group_batch(
                accept_messages,
                {
                    "sender": _sender(session),
                    "mail_from": envelope.mail_from,
                    "recipients": list(envelope.rcpt_tos),
                    "raw": envelope.original_content or b"",
                    "source": Source.SMTP,
                },
            )
        except AcceptError as exc:
            return _data_reply(exc)
        except Exception:
            # Nothing was committed (accept_message's contract); the client may retry.
            log.exception("accept failed for a message from %s", envelope.mail_from)
            return INTERNAL_ERROR
        return f"250 2.0.0 Ok: queued as {message.queue_id}"
