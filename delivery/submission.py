"""SMTP submission (aiosmtpd handler): AUTH, then MAIL/RCPT/DATA into accept_message."""

from __future__ import annotations

import base64
import binascii
import logging

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from delivery.accept import (
    AcceptError,
    Sender,
    accept_message,
    check_recipient,
    check_sender_domain,
    check_tenant,
)
from delivery.credentials import SmtpIdentity, check_smtp_login
from delivery.models import Source
from sendmsg.smtp import INTERNAL_ERROR, BaseHandler, in_thread

log = logging.getLogger(__name__)

AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"


def _sender(session: Session) -> Sender:
    identity: SmtpIdentity = session.auth_data
    return Sender(tenant_id=identity.tenant_id, domain_ids=identity.domain_ids)


def _check_mail_from(sender: Sender, address: str) -> None:
    check_tenant(sender)
    check_sender_domain(sender, address, what="Sender")


class SubmissionHandler(BaseHandler):
    """Authenticated submission; every ORM call runs off the event loop (STYLE #7)."""

    async def _login(self, server: SMTP, username: bytes, password: bytes) -> AuthResult:
        try:
            user, secret = username.decode(), password.decode()
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        identity = await in_thread(check_smtp_login)(user, secret)
        if identity is None:
            log.warning("AUTH failed user=%r peer=%s", user[:64], server.session.peer[0])
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        return AuthResult(success=True, handled=False, auth_data=identity)

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

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            await in_thread(_check_mail_from)(_sender(session), address)
        except AcceptError as exc:
            return str(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            check_recipient(address)
        except AcceptError as exc:
            return str(exc)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            message = await in_thread(accept_message)(
                sender=_sender(session),
                mail_from=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                raw=envelope.original_content or b"",
                source=Source.SMTP,
            )
        except AcceptError as exc:
            return str(exc)
        except Exception:
            log.exception("accept failed for a message from %s", envelope.mail_from)
            return INTERNAL_ERROR
        return f"250 2.0.0 Ok: queued as {message.queue_id}"
