"""Relaying a message to its recipients' MX hosts.

A worker claims the message's due recipients (a lease), signs the message once, and
delivers each destination domain over one connection, one transaction per recipient
because each carries its own VERP return path. No transaction is held across network I/O.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from delivery import dkim_sign
from delivery.models import EventType, Message, Recipient, RecipientState
from delivery.mx import MxError, host_addresses, mx_hosts
from delivery.replies import SmtpReply
from delivery.verp import verp_address
from sendmsg.resolver import make_resolver

log = logging.getLogger(__name__)


def worst_transaction_seconds() -> int:
    """The longest one SMTP transaction may take: six steps (connect, EHLO, STARTTLS,
    MAIL, RCPT, DATA) each allowed SENDMSG_RELAY_TIMEOUT."""
    return settings.SENDMSG_RELAY_TIMEOUT * 6


class HostFailed(Exception):
    """This MX host could not take the mail now; the next one may."""

    def __init__(self, reply: SmtpReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def deliver_message(message_id: int) -> int:
    """Deliver every due recipient of one message; returns how many were claimed."""
    _, claimed = Recipient.objects.filter(message_id=message_id).claim(
        lease_seconds=settings.SENDMSG_LEASE_SECONDS
    )
    if not claimed:
        return 0
    message = claimed[0].message
    signed = sign_message(message)
    by_domain: dict[str, list[Recipient]] = defaultdict(list)
    for recipient in claimed:
        by_domain[recipient.domain].append(recipient)
    for domain, recipients in by_domain.items():
        deliver_domain(message=message, data=signed, domain=domain, recipients=recipients)
    return len(claimed)


def sign_message(message: Message) -> bytes:
    keys = message.domain.signing_keys()
    data = bytes(message.raw)
    return dkim_sign.sign(data, keys=keys) if keys else data


def deliver_domain(
    *, message: Message, data: bytes, domain: str, recipients: list[Recipient]
) -> None:
    resolver = make_resolver()
    try:
        hosts = mx_hosts(domain, resolver)
    except MxError as exc:
        for recipient in recipients:
            record_outcome(recipient, exc.reply, mx_host="")
        return
    last = SmtpReply(451, "4.4.1", f"No MX host of {domain} could be reached")
    pending = list(recipients)
    for host in hosts:
        for address in host_addresses(host, resolver):
            try:
                pending = send_over_connection(
                    message=message, data=data, address=address, host=host, recipients=pending
                )
            except HostFailed as exc:
                last = exc.reply
                log.info("queue_id=%s mx=%s (%s) failed: %s", message.queue_id, host, address, exc)
                continue
            if not pending:
                return
    for recipient in pending:
        record_outcome(recipient, last, mx_host="")


def _tls_context() -> ssl.SSLContext:
    # Opportunistic TLS (RFC 7435): encrypt when offered, without requiring a valid cert.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def send_over_connection(
    *, message: Message, data: bytes, address: str, host: str, recipients: list[Recipient]
) -> list[Recipient]:
    """Send to each recipient over one connection; returns those still to try elsewhere."""
    timeout = settings.SENDMSG_RELAY_TIMEOUT
    try:
        client = smtplib.SMTP(timeout=timeout, local_hostname=settings.SENDMSG_HOSTNAME)
        code, text = client.connect(address, settings.SENDMSG_RELAY_PORT)
    except (OSError, smtplib.SMTPException) as exc:
        raise HostFailed(SmtpReply(451, "4.4.1", f"Connection to {host} failed: {exc}")) from None
    if code != 220:
        client.close()
        raise HostFailed(SmtpReply.parse(code, text))
    remaining = list(recipients)
    try:
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=_tls_context())
            client.ehlo()
        options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") else []
        while remaining:
            recipient = remaining[0]
            reply = send_one(
                client, message=message, data=data, recipient=recipient, options=options
            )
            record_outcome(recipient, reply, mx_host=host)
            remaining.pop(0)
        client.quit()
    except (OSError, smtplib.SMTPException) as exc:
        client.close()
        if remaining:
            raise HostFailed(SmtpReply(451, "4.4.2", f"Connection to {host} lost: {exc}")) from None
    return remaining


def send_one(
    client: smtplib.SMTP, *, message: Message, data: bytes, recipient: Recipient, options: list[str]
) -> SmtpReply:
    """One transaction: MAIL with the recipient's VERP address, RCPT, DATA."""
    return_path = verp_address(
        tenant_id=message.tenant_id,
        message_id=message.pk,
        recipient_id=recipient.pk,
        host=message.domain.return_path_host,
    )
    if not recipient.address.isascii():
        # RFC 6531: a non-ASCII address may only travel to a server that offers SMTPUTF8.
        if not client.has_extn("smtputf8"):
            return SmtpReply(
                553,
                "5.6.7",
                "The recipient's server does not accept non-ASCII addresses (no SMTPUTF8)",
            )
        options = [*options, "SMTPUTF8"]
    code, text = client.mail(return_path, options)
    if code != 250:
        client.rset()
        return SmtpReply.parse(code, text)
    code, text = client.rcpt(recipient.address)
    if code not in (250, 251):
        client.rset()
        return SmtpReply.parse(code, text)
    code, text = client.data(data)
    return SmtpReply.parse(code, text)


def record_outcome(recipient: Recipient, reply: SmtpReply, *, mx_host: str) -> None:
    """Turn a reply into the recipient's next state (and its event)."""
    token = recipient.lease_token
    if reply.is_success:
        state, event, retry_at = RecipientState.DELIVERED, EventType.DELIVERED, None
    elif reply.is_permanent:
        state, event, retry_at = RecipientState.BOUNCED, EventType.BOUNCED, None
    else:
        retry_at = next_attempt_at(recipient)
        if retry_at is None:
            state, event = RecipientState.EXPIRED, EventType.EXPIRED
        else:
            state, event = RecipientState.DEFERRED, EventType.DEFERRED
    if not recipient.finish(
        state=state, reply=reply, lease_token=token, event=event, retry_at=retry_at, mx_host=mx_host
    ):
        log.warning("recipient_id=%s lease lost before recording %s", recipient.pk, reply)
        return
    log.info(
        "queue_id=%s recipient_id=%s %s mx=%s reply=%s",
        recipient.message.queue_id,
        recipient.pk,
        state,
        mx_host or "-",
        reply,
    )


def retry_delay(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts (at least 1), as Postfix's defaults
    have it: SENDMSG_RETRY_FIRST_SECONDS (300), doubling, at most
    SENDMSG_RETRY_MAX_SECONDS (4,000)."""
    first, cap = settings.SENDMSG_RETRY_FIRST_SECONDS, settings.SENDMSG_RETRY_MAX_SECONDS
    return timedelta(seconds=min(cap, first * 2 ** min(max(attempts - 1, 0), 32)))


def next_attempt_at(recipient: Recipient):
    """When to retry after this failed attempt, or None when the message has been queued
    for its whole lifetime (SENDMSG_MESSAGE_EXPIRY_HOURS, default 5 days): then it
    expires. As with Postfix, a retry due after the lifetime is still made, once."""
    now = timezone.now()
    lifetime = timedelta(hours=settings.SENDMSG_MESSAGE_EXPIRY_HOURS)
    if now >= recipient.message.created_at + lifetime:
        return None
    return now + retry_delay(recipient.attempts + 1)
