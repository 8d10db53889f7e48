"""Accepting a message: the one function behind SMTP submission and the REST API.

Its contract is DESIGN invariant 1: when it returns, the message and every recipient are
committed; when it raises AcceptError nothing was written. It never waits on the
recipients' DNS (invariant 6).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formatdate, getaddresses, make_msgid
from functools import cache, partial

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from delivery import unsubscribe as list_unsubscribe
from delivery.keyed_hash import keyed_hash
from delivery.models import (
    Event,
    EventType,
    Message,
    Recipient,
    RecipientState,
    Source,
    new_queue_id,
)
from delivery.wake import wake_delivery
from domains.models import Domain, DomainStatus
from domains.names import InvalidDomain, domain_of
from reputation.gate import Decision, may_send, suppressed_among, take_permit
from reputation.models import Level, Standing
from reputation.suppressions import listed_as
from sendmsg import read_cache, sql
from sendmsg.log_context import log_context

log = logging.getLogger(__name__)

LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


@dataclass
class AcceptError(Exception):
    """Why a message (or one command of it) is refused, as SMTP would say it."""

    code: int
    enhanced: str
    text: str
    reason: str = ""  # a machine code when SMTP's codes alone don't tell (e.g. suspended)
    retry_after: int | None = None  # seconds, for a throttled sender

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Sender:
    """The authenticated side of a submission: a tenant, maybe limited to some domains."""

    tenant_id: int
    domain_ids: frozenset[int] = field(default_factory=frozenset)


def normalize_line_endings(raw: bytes) -> bytes:
    """CRLF everywhere, ending with one: what we sign is what we send."""
    data = LINE_ENDINGS.sub(b"\r\n", raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def check_gate(
    sender: Sender,
    domain: Domain,
    recipients: list[str] = (),
    suppressed: frozenset[str] | None = None,
) -> frozenset[str]:
    """Ask the reputation gate for mail from ``domain``; refuse as SMTP would, or return
    the suppressed addresses (``suppressed``: as may_send takes it)."""
    decision = may_send(
        tenant_id=sender.tenant_id, recipients=recipients, domain=domain, suppressed=suppressed
    )
    if not decision.allowed:
        raise refusal(decision)
    return decision.suppressed


def refusal(decision: Decision) -> AcceptError:
    """A suspended account gets ``550 5.7.1``; a sender over its rate ``451 4.7.1`` with
    the seconds to wait (a temporary refusal: clients retry, nothing is lost)."""
    if decision.reason in ("account_suspended", "reputation_suspended"):
        return AcceptError(550, "5.7.1", decision.message, reason=decision.reason)
    return AcceptError(
        451,
        "4.7.1",
        decision.message,
        reason=decision.reason,
        retry_after=decision.retry_after,
    )


MAX_LOCAL_PART = 64  # octets (RFC 5321 4.5.3.1.1): with a domain's 253, fits the columns


def sender_domain_name(address: str, *, what: str) -> str:
    try:
        name = domain_of(address)
    except InvalidDomain:
        name = ""
    if not name or len(address.rpartition("@")[0].encode()) > MAX_LOCAL_PART:
        raise AcceptError(553, "5.1.7", f"{what} {address!r} is not a valid address")
    return name


_verified: read_cache.ReadCache[int, dict[str, Domain]] = read_cache.ReadCache("verified domains")


def verified_domain(tenant_id: int, name: str) -> Domain | None:
    """The tenant's verified domain called ``name``, or None.

    The tenant's verified domains are kept for a moment (sendmsg/read_cache.py) and read
    again on a miss, so a domain verified a moment ago counts at once; one that lost its
    verification elsewhere stops counting within ``SENDMSG_STATE_CACHE_SECONDS``.
    """
    domain = _verified.get(tenant_id, partial(_load_verified, tenant_id)).get(name)
    if domain is None and read_cache.ttl() > 0:
        _verified.forget(tenant_id)
        domain = _verified.get(tenant_id, partial(_load_verified, tenant_id)).get(name)
    return domain


def _load_verified(tenant_id: int) -> dict[str, Domain]:
    """The tenant's verified domains by name, each with its ``reputation_level``."""
    fields, query = _verified_sql()
    domains = {}
    for row in sql.fetch_all(query, [tenant_id, DomainStatus.VERIFIED]):
        domain = sql.load(Domain, fields, row[:-1])
        domain.reputation_level = row[-1] or Level.EXCELLENT
        domains[domain.name] = domain
    return domains


def _forget_domains(sender, instance: Domain, **kwargs) -> None:
    _verified.forget(instance.tenant_id)


post_save.connect(_forget_domains, sender=Domain, dispatch_uid="accept-forget-domain")
post_delete.connect(_forget_domains, sender=Domain, dispatch_uid="accept-forget-domain")


@cache
def _verified_sql() -> tuple[list[str], str]:
    """The fields a Domain is loaded with (in the model's order, as from_db wants) and the
    query (sendmsg/sql.py: why not the ORM)."""
    fields, _ = sql.selected(Domain, {"id", "tenant_id", "name", "status", "verified_at"})
    columns = ", ".join(f"d.{sql.column(Domain, name)}" for name in fields)
    standing = sql.column(Standing, "domain")
    return fields, (
        f"SELECT {columns}, s.{sql.column(Standing, 'level')} FROM {sql.table(Domain)} d "
        f"LEFT JOIN {sql.table(Standing)} s ON s.{standing} = d.{sql.column(Domain, 'id')} "
        f"WHERE d.{sql.column(Domain, 'tenant')} = %s AND d.{sql.column(Domain, 'status')} = %s"
    )


def check_sender_domain(sender: Sender, address: str, *, what: str) -> Domain:
    """The tenant's verified domain that ``address`` is on, or AcceptError 553 5.7.1."""
    name = sender_domain_name(address, what=what)
    domain = verified_domain(sender.tenant_id, name)
    if domain is None:
        raise AcceptError(
            553, "5.7.1", f"{what} domain {name} is not a verified sending domain of your account"
        )
    if sender.domain_ids and domain.pk not in sender.domain_ids:
        raise AcceptError(553, "5.7.1", f"This login may not send as {name}")
    return domain


def check_recipient(address: str) -> str:
    """The ASCII domain of a recipient address, or AcceptError 501/553."""
    local, at, _ = address.rpartition("@")
    if not at or not local or len(local.encode()) > MAX_LOCAL_PART:
        raise AcceptError(501, "5.1.3", f"{address!r} is not a valid recipient address")
    try:
        return domain_of(address)
    except InvalidDomain:
        raise AcceptError(553, "5.1.2", f"The domain of {address!r} is not valid") from None


def parse_headers(data: bytes):
    """The header section of a CRLF message (the body is not needed and not parsed)."""
    end = data.find(b"\r\n\r\n")
    return BytesHeaderParser(policy=compat32).parsebytes(data if end < 0 else data[: end + 4])


def header_text(value: object) -> str:
    """A header's text as the message log keeps it: at most a line's 998 characters, and
    a NUL (which a database text column refuses) shown as U+FFFD."""
    return str(value)[:998].replace("\0", "\ufffd")


REF_HEADER = "Sendmsg-Ref"
# A Sendmsg-Ref field (with its folded lines) in a header section, to be dropped.
_CLIENT_REF = re.compile(
    rb"^Sendmsg-Ref[ \t]*:.*\r\n(?:[ \t].*\r\n)*", re.IGNORECASE | re.MULTILINE
)


def tracking_ref(*, tenant_id: int, queue_id: str) -> str:
    """The value of the signed tracking header: ``<queue id>.<HMAC of tenant and queue
    id>``, which a complaint's copy of the message maps back to it by
    (reputation/complaints.py). 96 bits of MAC, under settings.HASH_KEY."""
    mac = keyed_hash(f"{tenant_id}:{queue_id}", purpose="tracking ref")[:24]
    return f"{queue_id}.{mac}"


def _complete_headers(data: bytes, headers, domain: Domain, *, queue_id: str) -> tuple[bytes, str]:
    """Add Date and Message-ID when the sender left them out, and our signed tracking
    header (REF_HEADER) in place of any the sender wrote; the data and its Message-ID."""
    if headers.get(REF_HEADER) is not None:  # never trust a client's
        end = data.find(b"\r\n\r\n")
        end = len(data) if end < 0 else end + 2
        data = _CLIENT_REF.sub(b"", data[:end]) + data[end:]
    ref = tracking_ref(tenant_id=domain.tenant_id, queue_id=queue_id)
    added = f"{REF_HEADER}: {ref}\r\n".encode()
    if headers.get("Date") is None:
        added += f"Date: {formatdate(localtime=False, usegmt=True)}\r\n".encode()
    message_id = headers.get("Message-ID")
    if message_id is None:
        message_id = make_msgid(domain=domain.name)
        added += f"Message-ID: {message_id}\r\n".encode()
    return added + data, str(message_id).strip()


@dataclass
class PreparedMessage:
    """A checked message and its recipients' rows, built and not stored yet."""

    message: Message
    rows: list[Recipient]
    domain: Domain


def accept_message(**kwargs) -> Message:
    """Store a message for delivery; raise AcceptError to refuse it whole (the arguments
    are ``prepare_message``'s)."""
    return store_message(prepare_message(**kwargs))


def prepare_message(
    *,
    sender: Sender,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    source: Source,
    tags: list[str] | None = None,
    metadata: dict | None = None,
    unsubscribe: bool | None = None,
    suppressed: frozenset[str] | None = None,
) -> PreparedMessage:
    """Check a message for delivery to ``recipients`` and build its rows, reading only
    (SMTP does this beside its commit thread); raise AcceptError to refuse it whole.

    Suppressed recipients are stored too, in their final state ``suppressed`` with an
    event, and are never sent to; the others are accepted as usual. ``unsubscribe`` asks
    for one-click unsubscribe headers (delivery/unsubscribe.py); None leaves it to the
    message's Sendmsg-Unsubscribe header (removed here), else to the tenant's default.
    ``suppressed``: the recipients' suppressed addresses, when looked up already
    (reputation.gate.suppressed_among).
    """
    if len(raw) > settings.SENDMSG_MESSAGE_SIZE_LIMIT:
        raise AcceptError(552, "5.3.4", "Message too big for this platform")
    if not recipients:
        raise AcceptError(554, "5.5.1", "No valid recipients")
    if len(recipients) > settings.SENDMSG_MAX_RECIPIENTS:
        raise AcceptError(452, "4.5.3", "Too many recipients; send the rest in another message")
    domain = check_sender_domain(sender, mail_from, what="Sender")
    suppressed = check_gate(sender, domain, recipients, suppressed)
    rcpt_domains = [check_recipient(address) for address in recipients]

    data = normalize_line_endings(raw)
    try:
        data, header_opt_in = list_unsubscribe.take_opt_in(data)
    except list_unsubscribe.OptInError as exc:
        raise AcceptError(550, "5.6.0", str(exc)) from None
    headers = parse_headers(data)
    from_addresses = [addr for _, addr in getaddresses(headers.get_all("From", [])) if addr]
    if len(from_addresses) != 1:
        raise AcceptError(550, "5.6.0", "The message needs exactly one From: address")
    queue_id = new_queue_id()
    data, message_id = _complete_headers(data, headers, domain, queue_id=queue_id)
    try:
        check_sender_domain(sender, from_addresses[0], what="From:")
    except AcceptError as exc:
        # After DATA the refusal is of the message, not of an address: 550 (RFC 5321).
        raise AcceptError(550, exc.enhanced, exc.text) from None

    message = Message(
        tenant_id=sender.tenant_id,
        domain=domain,
        queue_id=queue_id,
        source=source,
        mail_from=mail_from,
        header_from=header_text(from_addresses[0]),
        subject=header_text(headers.get("Subject", "")),
        message_id=header_text(message_id),
        raw=data,
        size=len(data),
        tags=tags or [],
        metadata=metadata or {},
        unsubscribe=list_unsubscribe.wanted(
            tenant_id=sender.tenant_id, asked=unsubscribe, header=header_opt_in
        ),
    )
    rows = [
        Recipient(
            message=message,
            tenant_id=sender.tenant_id,
            address=address,
            domain=d,
            state=(
                RecipientState.SUPPRESSED
                if listed_as(address) in suppressed
                else RecipientState.QUEUED
            ),
            next_attempt_at=message.created_at,
            updated_at=message.created_at,
        )
        for address, d in zip(recipients, rcpt_domains, strict=True)
    ]
    return PreparedMessage(message, rows, domain)


def store_message(prepared: PreparedMessage) -> Message:
    """Store a prepared message: when this returns, the message and every recipient are
    committed (or will be with the caller's transaction); when it raises AcceptError
    nothing was written."""
    (outcome,) = store_messages([prepared])
    if isinstance(outcome, AcceptError):
        raise outcome
    return outcome


def accept_messages(batch: list[dict]) -> list[Message | AcceptError]:
    """``accept_message`` for several messages (each its keyword arguments) with one
    ``store_messages``: one outcome per message, in order, the stored message or why it
    was refused. The recipients' suppressions are read once for each tenant."""
    addresses: dict[int, set[str]] = {}
    for kwargs in batch:
        addresses.setdefault(kwargs["sender"].tenant_id, set()).update(kwargs["recipients"])
    suppressed = {tenant: suppressed_among(tenant, listed) for tenant, listed in addresses.items()}
    outcomes: list[Message | AcceptError | PreparedMessage] = []
    for kwargs in batch:
        try:
            tenant_id = kwargs["sender"].tenant_id
            outcomes.append(prepare_message(**kwargs, suppressed=suppressed[tenant_id]))
        except AcceptError as exc:
            outcomes.append(exc)
    stored = iter(store_messages([o for o in outcomes if isinstance(o, PreparedMessage)]))
    return [next(stored) if isinstance(o, PreparedMessage) else o for o in outcomes]


def store_messages(batch: list[PreparedMessage]) -> list[Message | AcceptError]:
    """Store prepared messages in one atomic block, with one INSERT per table for all of
    them; each spends its permit first. One outcome per message, in order: the stored
    message, or the AcceptError of one its permit refused (nothing of it is written). A
    failed statement rolls back the whole batch and raises."""
    outcomes: list[Message | AcceptError] = []
    with transaction.atomic():
        allowed = []
        for prepared in batch:
            message = prepared.message
            permit = take_permit(tenant_id=message.tenant_id, domain=prepared.domain)
            if permit.allowed:
                allowed.append(prepared)
                outcomes.append(message)
            else:
                outcomes.append(refusal(permit))
        _insert(allowed)
    return outcomes


def _insert(batch: list[PreparedMessage]) -> None:
    """The messages, their recipients and one event for each recipient."""
    sql.insert([prepared.message for prepared in batch])
    for prepared in batch:
        for row in prepared.rows:
            # Its id now; setting row.message_id alone would drop the cached message,
            # and row.message would read it back.
            row.message = prepared.message
    sql.insert([row for prepared in batch for row in prepared.rows])
    sql.insert(
        [
            Event(
                tenant_id=row.tenant_id,
                message=prepared.message,
                recipient=row,
                type=(
                    EventType.ACCEPTED
                    if row.state == RecipientState.QUEUED
                    else EventType.SUPPRESSED
                ),
                created_at=prepared.message.created_at,
            )
            for prepared in batch
            for row in prepared.rows
        ]
    )
    for prepared in batch:
        message, rows = prepared.message, prepared.rows
        # message.recipients.all() answers from these rows, without a query.
        message._prefetched_objects_cache = {"recipients": rows}
        if any(row.state == RecipientState.QUEUED for row in rows):
            transaction.on_commit(partial(wake_delivery, message.pk))
        with log_context(
            queue_id=message.queue_id,
            tenant_id=message.tenant_id,
            message_id=message.pk,
            recipient_ids=[row.pk for row in rows],
        ):
            log.info("accepted recipients=%d source=%s", len(rows), message.source)
