"""One SMTP transaction of the relay: MAIL, one RCPT per recipient, DATA.

All the recipients go in one transaction (they share a message and a destination
domain). When the server offers PIPELINING (RFC 2920), as nearly every MX does, MAIL,
the RCPTs and DATA go in one write and their replies are read together: one round trip
before the message instead of two or more. The return path is the recipient's own VERP
address when there is one recipient, else the message's shared one for that domain
(delivery/verp.py). Each recipient's outcome is recorded as soon as it is known: at its
RCPT reply if refused, else at the reply to DATA.
"""

from __future__ import annotations

import re
import smtplib

from delivery.models import Message, Recipient
from delivery.outcomes import OutcomeBatch
from delivery.replies import SmtpReply
from delivery.verp import group_verp_address, verp_address

LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)

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
        if client.has_extn("pipelining"):
            self.run_pipelined(client, recipients, options)
            return
        code, text = client.mail(self.return_path(recipients), options)
        if not self.mail_accepted(client, recipients, code, text):
            return
        accepted = []
        for recipient in recipients:  # each refusal recorded as it comes
            accepted += self.accepted([recipient], [client.rcpt(recipient.address)])
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

    def run_pipelined(
        self, client: smtplib.SMTP, recipients: list[Recipient], options: list[str]
    ) -> None:
        """MAIL, every RCPT and DATA in one write (RFC 2920); then the message after a
        354, or RSET."""
        if "SMTPUTF8" in options:
            client.command_encoding = "utf-8"  # as smtplib.SMTP.mail does
        mail_from = f"MAIL FROM:{smtplib.quoteaddr(self.return_path(recipients))}"
        commands = [
            " ".join([mail_from, *options]),
            *(f"RCPT TO:{smtplib.quoteaddr(r.address)}" for r in recipients),
            "DATA",
        ]
        client.send("".join(command + "\r\n" for command in commands))
        code, text = client.getreply()
        rcpt_replies = [client.getreply() for _ in recipients]
        data_code, data_text = client.getreply()
        if not self.mail_accepted(client, recipients, code, text, reset=False):
            if data_code == 354:  # a server that takes DATA anyway gets an empty message
                client.send(".\r\n")
                client.getreply()
            client.rset()
            return
        accepted = self.accepted(recipients, rcpt_replies)
        if data_code != 354:
            if accepted:  # DATA itself refused
                self.record(accepted, SmtpReply.parse(data_code, data_text))
            client.rset()
            return
        if not accepted:  # 354 with no recipient: end the empty message, record nothing
            client.send(".\r\n")
            client.getreply()
            client.rset()
            return
        data = LEADING_DOT.sub(b"..", self.data)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        client.send(data + b".\r\n")
        code, text = client.getreply()
        self.record(accepted, SmtpReply.parse(code, text))

    def mail_accepted(
        self,
        client: smtplib.SMTP,
        recipients: list[Recipient],
        code: int,
        text: bytes,
        *,
        reset: bool = True,
    ) -> bool:
        """Whether MAIL got 250; a refusal is recorded for every recipient (then RSET,
        unless ``reset`` is False), a 421 raises."""
        if code == 421:  # the server is closing the connection: try elsewhere or later
            raise smtplib.SMTPServerDisconnected(f"{code} {text.decode(errors='replace')}")
        if code == 250:
            return True
        self.record(recipients, SmtpReply.parse(code, text))
        if reset:
            client.rset()
        return False

    def accepted(
        self, recipients: list[Recipient], replies: list[tuple[int, bytes]]
    ) -> list[Recipient]:
        """The recipients whose RCPT got 250 or 251; each refusal is recorded."""
        accepted = []
        for recipient, (code, text) in zip(recipients, replies, strict=True):
            if code in (250, 251):
                accepted.append(recipient)
            else:
                self.record([recipient], SmtpReply.parse(code, text))
        return accepted
