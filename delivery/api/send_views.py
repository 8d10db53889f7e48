"""The REST send API: JSON messages, batches and raw MIME, each a thin door to
accept_message. ``Idempotency-Key`` makes a retried call return the first answer.

Statuses: 201 for an accepted message (it exists from then on, at
/api/v1/messages/{id}/); a batch answers 200 with one result per message, each carrying
the status that message alone would have got (multi-status), so 200 means only "the
batch was read", not "everything was accepted".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery.accept import AcceptError, Sender, accept_message
from delivery.api import send_serializers as shapes
from delivery.api.errors import (
    ApiError,
    from_accept_error,
    from_message_error,
    from_validation_error,
)
from delivery.mime import MessageError, build_message, envelope_recipients
from delivery.models import IdempotencyKey, Message, Source
from domains.roles import Capability

IDEMPOTENCY_HEADER = "Idempotency-Key"


def body_limit() -> int:
    """Largest request body read: a message at the size limit, base64-encoded, with room
    for JSON escaping. Larger bodies are refused before they are parsed."""
    return 2 * settings.SENDMSG_MESSAGE_SIZE_LIMIT + 1024 * 1024


def body_too_large(request: Request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > body_limit()
    except ValueError:
        return False


@dataclass
class Prepared:
    """A message ready for accept_message: built, with its envelope."""

    mail_from: str
    recipients: list[str]
    raw: bytes
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    unsubscribe: bool | None = None  # None: the message's header, else the tenant's default


def prepare_json(data: Any) -> Prepared:
    """Validate one JSON message and build its MIME; raise ApiError for bad input."""
    serializer = shapes.SendSerializer(data=data)
    try:
        serializer.is_valid(raise_exception=True)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    fields = serializer.validated_data
    author = fields["from"]
    try:
        raw = build_message(
            from_addr=author.address,
            from_name=author.name,
            to=fields["to"],
            cc=fields["cc"],
            bcc=fields["bcc"],
            reply_to=fields["reply_to"],
            subject=fields["subject"],
            text=fields["text"],
            html=fields["html"],
            headers=fields["headers"],
            attachments=fields["attachments"],
        )
    except MessageError as exc:
        raise from_message_error(exc) from None
    return Prepared(
        mail_from=author.address,
        recipients=envelope_recipients(fields["to"], fields["cc"], fields["bcc"]),
        raw=raw,
        tags=fields["tags"],
        metadata=fields["metadata"],
        unsubscribe=fields["unsubscribe"],
    )


def prepare_raw(data: Any) -> Prepared:
    serializer = shapes.RawSendSerializer(data=data)
    try:
        serializer.is_valid(raise_exception=True)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    fields = serializer.validated_data
    return Prepared(
        mail_from=fields["mail_from"],
        recipients=fields["rcpt_to"],
        raw=fields["data"],
        tags=fields["tags"],
        metadata=fields["metadata"],
        unsubscribe=fields["unsubscribe"],
    )


def sent(message: Message) -> dict[str, Any]:
    rows = sorted(message.recipients.all(), key=lambda row: row.pk)
    return {
        "id": message.queue_id,
        "message_id": message.message_id,
        "recipients": [{"address": row.address, "id": row.pk} for row in rows],
    }


def accept(prepared: Prepared, *, sender: Sender) -> Message:
    """accept_message for an API call; its refusals become ApiError."""
    try:
        return accept_message(
            sender=sender,
            mail_from=prepared.mail_from,
            recipients=prepared.recipients,
            raw=prepared.raw,
            source=Source.API,
            tags=prepared.tags,
            metadata=prepared.metadata,
            unsubscribe=prepared.unsubscribe,
        )
    except AcceptError as exc:
        raise from_accept_error(exc) from None


class Idempotency:
    """The stored answer for a request's Idempotency-Key (per tenant), if it has one.

    Only successful answers are stored: a refused request wrote nothing, so sending it
    again with the same key is safe. The key row is written in the same transaction as
    the message (accept_message's own block becomes a savepoint), so a stored key always
    means stored messages and the reverse; two concurrent calls with one key end with
    one set of messages, the loser's rolled back by the unique constraint.
    """

    def __init__(self, request: Request) -> None:
        self.tenant_id = request.auth.tenant_id
        self.key = request.headers.get(IDEMPOTENCY_HEADER)
        if self.key is not None and not (
            0 < len(self.key) <= 255 and self.key.isascii() and self.key.isprintable()
        ):
            raise ApiError(
                "invalid_request",
                "An Idempotency-Key is 1 to 255 printable ASCII characters.",
                field=IDEMPOTENCY_HEADER,
            )
        self.digest = ""
        if self.key is not None:
            canonical = json.dumps(
                [request.path, request.data], sort_keys=True, separators=(",", ":"), default=str
            )
            self.digest = hashlib.sha256(canonical.encode()).hexdigest()

    def replay(self) -> Response | None:
        if self.key is None:
            return None
        row = IdempotencyKey.objects.filter(tenant_id=self.tenant_id, key=self.key).first()
        if row is None:
            return None
        if row.request_hash != self.digest:
            raise ApiError(
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request; "
                "use a new key for a new request.",
                field=IDEMPOTENCY_HEADER,
            )
        return Response(
            row.response, status=row.status_code, headers={"Idempotent-Replayed": "true"}
        )

    def run(self, work: Callable[[], tuple[int, dict]]) -> Response:
        if self.key is None:
            status, body = work()
            return Response(body, status=status)
        try:
            with transaction.atomic():
                stored = self.replay()  # again, now holding the write lock
                if stored is not None:
                    return stored
                status, body = work()
                IdempotencyKey.objects.create(
                    tenant_id=self.tenant_id,
                    key=self.key,
                    request_hash=self.digest,
                    status_code=status,
                    response=body,
                )
        except IntegrityError:
            stored = self.replay()
            if stored is None:
                raise
            return stored
        return Response(body, status=status)


class SendApiView(APIView):
    """JSON in, our error shape out, bodies over the limit refused before parsing."""

    parser_classes = [JSONParser]
    capability = Capability.SEND

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if body_too_large(request):
            raise ApiError("message_too_large", f"The request body is over {body_limit()} bytes.")

    def sender(self) -> Sender:
        return Sender(tenant_id=self.request.auth.tenant_id)

    def send_one(self, request: Request, prepare: Callable[[Any], Prepared]) -> Response:
        """One message: replay a stored answer, else prepare, accept and store the answer."""
        once = Idempotency(request)
        if (stored := once.replay()) is not None:
            return stored
        prepared = prepare(request.data)
        return once.run(lambda: (201, sent(accept(prepared, sender=self.sender()))))


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    description=(
        "Any unique string (e.g. a UUID). The same key with the same body returns the first "
        "answer again (header Idempotent-Replayed: true) and sends nothing; the same key "
        "with another body is refused with 422 idempotency_key_reused."
    ),
)


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(shapes.ErrorSerializer, description="See error.code.")
        for status in statuses
    }


class SendView(SendApiView):
    @extend_schema(
        operation_id="send_message",
        summary="Send a message",
        description=(
            "Builds the message from JSON fields and queues it for to + cc + bcc (bcc "
            "never appears in the headers). 201 means the message and its recipients "
            "are stored."
        ),
        tags=["sending"],
        request=shapes.SendSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: shapes.SentSerializer, **_errors(400, 401, 403, 413, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        return self.send_one(request, prepare_json)


class RawSendView(SendApiView):
    @extend_schema(
        operation_id="send_raw_message",
        summary="Send a raw MIME message",
        description=(
            "Queues a complete message, as given, for exactly the envelope recipients "
            "in rcpt_to (headers are not read for recipients)."
        ),
        tags=["sending"],
        request=shapes.RawSendSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: shapes.SentSerializer, **_errors(400, 401, 403, 413, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        return self.send_one(request, prepare_raw)


class BatchSendView(SendApiView):
    @extend_schema(
        operation_id="send_batch",
        summary="Send up to 500 messages",
        description=(
            "Each message is checked and accepted on its own: the answer is 200 with one "
            "result per message, in order, each with the status and body that message "
            "alone would have got (201 with ids, or its error). 4xx for the whole call "
            "only when the batch itself cannot be read."
        ),
        tags=["sending"],
        request=shapes.BatchSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: shapes.BatchResponseSerializer, **_errors(400, 401, 413, 422)},
    )
    def post(self, request: Request) -> Response:
        once = Idempotency(request)
        if (stored := once.replay()) is not None:
            return stored
        batch = shapes.BatchSerializer(data=request.data)
        try:
            batch.is_valid(raise_exception=True)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        prepared: list[Prepared | ApiError] = []
        for item in batch.validated_data["messages"]:
            try:
                prepared.append(prepare_json(item))
            except ApiError as exc:
                prepared.append(exc)
        return once.run(lambda: (200, self.accept_all(prepared)))

    def accept_all(self, prepared: list[Prepared | ApiError]) -> dict[str, Any]:
        results = []
        for item in prepared:
            try:
                if isinstance(item, ApiError):
                    raise item
                results.append({"status": 201, **sent(accept(item, sender=self.sender()))})
            except ApiError as exc:
                results.append({"status": exc.status_code, **exc.body()})
        accepted = sum(1 for result in results if result["status"] == 201)
        return {"accepted": accepted, "failed": len(results) - accepted, "results": results}
