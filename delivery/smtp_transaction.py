"""One SMTP transaction of the relay: MAIL, one RCPT per recipient, DATA.

All the recipients go in one transaction (they share a message and a destination
domain). The return path is the recipient's own VERP address when there is one
recipient, else the message's shared one for that domain (delivery/verp.py). Each
recipient's outcome is recorded as soon as it is known: at its RCPT reply if refused,
else at the reply to DATA.
"""

from __future__ import annotations

import smtplib

from delivery.models import Message, Recipient
from delivery.outcomes import OutcomeBatch
from delivery.replies import SmtpReply
from delivery.verp import group_verp_address, verp_address

NO_SMTPUTF8 = SmtpReply(
    553, "5.6.7", "The recipient's server does not accept non-ASCII addresses (no SMTPUTF8)"
)


class Transaction:
    def __init__(
        self, *, message: Message, data: bytes, domain: str, host: str, outcomes: OutcomeBatch
    ) -> None:
        self.message, self.data, self.domain, self.host = message, data, domain, host
        self.outcomes = outcomes
        self.recorded: set[int] = set()

    def unrecorded(self, recipients: list[Recipient]) -> list[Recipient]:
        """Those whose outcome this transaction did not record (e.g. the link dropped)."""
        return [r for r in recipients if r.pk not in self.recorded]

    def record(self, recipients: list[Recipient], reply: SmtpReply) -> None:
        self.outcomes.add(recipients, reply, mx_host=self.host)
        self.recorded.update(r.pk for r in recipients)

    def return_path(self, recipients: list[Recipient]) -> str:
        message, host = self.message, self.message.domain.return_path_host
        if len(recipients) == 1:
            return verp_address(
                tenant_id=message.tenant_id,
                message_id=message.pk,
                recipient_id=recipients[0].pk,
                host=host,
            )
        return group_verp_address(
            tenant_id=message.tenant_id, message_id=message.pk, domain=self.domain, host=host
        )

    def options(self, client: smtplib.SMTP, recipients: list[Recipient]) -> list[str] | None:
        """MAIL parameters (RFC 1652, 1870, 6531), or None when the message cannot go
        to this server at all (recorded)."""
        options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") else []
        if client.has_extn("size"):
            limit = int((client.esmtp_features.get("size") or "0").split()[0] or 0)
            if limit and len(self.data) > limit:
                reply = SmtpReply(552, "5.3.4", f"Message too big for {self.host} ({limit} max)")
                self.record(recipients, reply)
                return None
            options.append(f"SIZE={len(self.data)}")
        if any(not r.address.isascii() for r in recipients) and client.has_extn("smtputf8"):
            options.append("SMTPUTF8")
        return options

    def run(self, client: smtplib.SMTP, recipients: list[Recipient]) -> None:
        """Raises OSError or SMTPException when the connection fails; ``recorded`` then
        says whose outcome is known."""
        if not client.has_extn("smtputf8"):
            # RFC 6531: a non-ASCII address may only go to a server that offers SMTPUTF8.
            self.record([r for r in recipients if not r.address.isascii()], NO_SMTPUTF8)
            recipients = [r for r in recipients if r.address.isascii()]
        options = self.options(client, recipients) if recipients else None
        if options is None:
            return
        code, text = client.mail(self.return_path(recipients), options)
        if code == 421:  # the server is closing the connection: try elsewhere or later
            raise smtplib.SMTPServerDisconnected(f"{code} {text.decode(errors='replace')}")
        if code != 250:
            self.record(recipients, SmtpReply.parse(code, text))
            client.rset()
            return
        accepted = []
        for recipient in recipients:
            code, text = client.rcpt(recipient.address)
            if code in (250, 251):
                accepted.append(recipient)
            else:
                self.record([recipient], SmtpReply.parse(code, text))
        if not accepted:
            client.rset()
            return
        try:
            code, text = client.data(self.data)
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            self.record(accepted, SmtpReply.parse(exc.smtp_code, exc.smtp_error))
            client.rset()
            return
        self.record(accepted, SmtpReply.parse(code, text))
