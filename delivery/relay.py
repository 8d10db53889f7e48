"""Relaying a message to its recipients' MX hosts.

A worker claims the message's due recipients (a lease), signs the message once, and
delivers to each destination domain in one SMTP transaction (delivery/smtp_transaction.py).
Connections to an MX host carry the task's next messages too (delivery/outbound.py).
How TLS is used with a destination's MX hosts (opportunistic, or verified as MTA-STS or
the sending domain requires) is delivery/tls_policy.py's to decide. No database
transaction is held across network I/O.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings
from django.utils import timezone

from delivery import dkim_sign, unsubscribe
from delivery.models import Message, Recipient
from delivery.mx import MxError
from delivery.outbound import Connection, ConnectionCache, kept_connections
from delivery.outcomes import OutcomeBatch
from delivery.replies import SmtpReply
from delivery.routes import Routes
from delivery.smtp_transaction import Transaction
from delivery.tls_policy import TlsFailure, TlsPolicy
from sendmsg import worker_shutdown
from sendmsg.log_context import log_context, message_context

log = logging.getLogger(__name__)

SMTP_ERRORS = (OSError, smtplib.SMTPException)


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
    claimed, _ = deliver_messages([message_id])
    return claimed


def deliver_messages(
    message_ids: list[int], *, stop_starting: float | None = None
) -> tuple[int, list[int]]:
    """Deliver the due recipients of these messages, in order, in one run: one claim for
    all, connections kept for the next message (delivery/outbound.py), outcomes written
    in batches (delivery/outcomes.py).

    A message is started only before ``stop_starting`` (time.monotonic()) and while the
    workers are not stopping (sendmsg/worker_shutdown.py); the leases of those not
    started are given up at once. Returns (recipients claimed and attempted, ids of the
    messages not started).
    """
    token, claimed = Recipient.objects.filter(message_id__in=message_ids).claim(
        lease_seconds=settings.SENDMSG_LEASE_SECONDS
    )
    by_message: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in claimed:
        by_message[recipient.message_id].append(recipient)
    order = [m for m in dict.fromkeys(message_ids) if m in by_message]
    messages = Message.objects.select_related("domain").in_bulk(order)
    keys: dict[int, list] = {}  # signing keys by sending domain, read once per run
    attempted = 0
    connections, routes = kept_connections(), Routes()
    with OutcomeBatch() as outcomes:
        for done, message_id in enumerate(order):
            if done and (worker_shutdown.stopping() or past(stop_starting)):
                left = order[done:]
                Recipient.objects.filter(message_id__in=left, lease_token=token).update(
                    lease_until=timezone.now()
                )
                return attempted, left
            message, recipients = messages[message_id], by_message[message_id]
            with message_context(message, [r.pk for r in recipients]):
                for recipient in recipients:
                    recipient.message = message
                if message.domain_id not in keys:
                    keys[message.domain_id] = message.domain.signing_keys()
                for domain, group, data in transactions(
                    message, recipients, keys[message.domain_id]
                ):
                    deliver_domain(
                        message=message,
                        data=data,
                        domain=domain,
                        recipients=group,
                        connections=connections,
                        outcomes=outcomes,
                        routes=routes,
                    )
            attempted += len(recipients)
    return attempted, []


def past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def transactions(
    message: Message, recipients: list[Recipient], keys: list
) -> Iterator[tuple[str, list[Recipient], bytes]]:
    """(destination domain, recipients, signed data) of each transaction of a message:
    one per domain sharing one signed copy; or, when the message has one-click
    unsubscribe, one per recipient, each with its own headers signed (RFC 8058 §3)."""
    if message.unsubscribe:
        for recipient in recipients:
            data = unsubscribe.personalize(message, recipient)
            yield recipient.domain, [recipient], dkim_sign.sign(data, keys=keys) if keys else data
        return
    signed = sign_message(message, keys)
    by_domain: dict[str, list[Recipient]] = defaultdict(list)
    for recipient in recipients:
        by_domain[recipient.domain].append(recipient)
    for domain, group in by_domain.items():
        yield domain, group, signed


def sign_message(message: Message, keys: list | None = None) -> bytes:
    keys = message.domain.signing_keys() if keys is None else keys
    data = bytes(message.raw)
    return dkim_sign.sign(data, keys=keys) if keys else data


def deliver_domain(
    *,
    message: Message,
    data: bytes,
    domain: str,
    recipients: list[Recipient],
    connections: ConnectionCache,
    outcomes: OutcomeBatch,
    routes: Routes,
) -> None:
    with log_context(recipient_ids=[r.pk for r in recipients], rcpt_domain=domain):
        try:
            hosts = routes.mx_hosts(domain)
        except MxError as exc:
            outcomes.add(recipients, exc.reply, mx_host="")
            return
        tls = routes.tls(domain, message.domain)
        last = SmtpReply(451, "4.4.1", f"No MX host of {domain} could be reached")
        pending = list(recipients)
        for host in hosts:
            if refusal := tls.refuse_host(host):
                last = refusal
                log.info("mx=%s skipped: %s", host, refusal)
                continue
            for address in routes.addresses(host):
                transaction = Transaction(
                    message=message, data=data, domain=domain, host=host, outcomes=outcomes
                )
                try:
                    deliver_to_host(
                        transaction, pending, address=address, tls=tls, cache=connections
                    )
                except HostFailed as exc:
                    last = exc.reply
                    log.info("mx=%s (%s) failed: %s", host, address, exc)
                pending = transaction.unrecorded(pending)
                if not pending:
                    return
        outcomes.add(pending, last, mx_host="")


def deliver_to_host(
    transaction: Transaction,
    recipients: list[Recipient],
    *,
    address: str,
    tls: TlsPolicy,
    cache: ConnectionCache,
) -> None:
    """Run ``transaction`` at one MX address, over a kept connection if there is one.

    A kept connection the server has closed meanwhile (nothing recorded yet) is replaced
    by a new one. Raises HostFailed when the host cannot take the mail now.
    """
    host = transaction.host
    # Mail that requires verified TLS only goes over connections opened that way.
    key = (address, settings.SENDMSG_RELAY_PORT, host, tls.enforced)
    connection = cache.take(key)
    while True:
        if connection is None:
            transaction.outcomes.flush()  # before waiting on the network
            connection = open_connection(address=address, host=host, tls=tls)
        try:
            transaction.run(connection.client, recipients)
        except SMTP_ERRORS as exc:
            connection.client.close()
            if connection.reused and not transaction.recorded:
                connection = None  # closed while kept: once more on a new connection
                continue
            if transaction.unrecorded(recipients):
                raise HostFailed(
                    SmtpReply(451, "4.4.2", f"Connection to {host} lost: {exc}")
                ) from None
            return
        cache.give(key, connection)
        return


def open_connection(*, address: str, host: str, tls: TlsPolicy) -> Connection:
    """A session with MX ``host`` at ``address``: greeted, EHLO, STARTTLS as ``tls`` says.

    Raises HostFailed when this host cannot take the mail now (the next one may).
    """
    try:
        client = _open_client(address=address, host=host, tls=tls)
    except TlsFailure as exc:
        if exc.enforced:
            raise HostFailed(exc.reply) from None
        # MTA-STS testing mode: enforcing would have failed here. Say so, and deliver as
        # without a policy; the failed handshake left this connection unusable.
        log.warning("mta-sts testing mx=%s (%s) would be refused: %s", host, address, exc)
        client = _open_client(address=address, host=host, tls=tls.opportunistic())
    return Connection(client=client, host=host)


def _open_client(*, address: str, host: str, tls: TlsPolicy) -> smtplib.SMTP:
    timeout = settings.SENDMSG_RELAY_TIMEOUT
    try:
        client = smtplib.SMTP(timeout=timeout, local_hostname=settings.SENDMSG_HOSTNAME)
        code, text = client.connect(address, settings.SENDMSG_RELAY_PORT)
    except SMTP_ERRORS as exc:
        raise HostFailed(SmtpReply(451, "4.4.1", f"Connection to {host} failed: {exc}")) from None
    if code != 220:  # e.g. 421 busy: the next host may take it
        client.close()
        raise HostFailed(SmtpReply.parse(code, text))
    try:
        client.ehlo()
        tls.start_tls(client, host=host)
    except TlsFailure:
        client.close()
        raise
    except SMTP_ERRORS as exc:
        client.close()
        raise HostFailed(SmtpReply(451, "4.4.2", f"Connection to {host} lost: {exc}")) from None
    return client
