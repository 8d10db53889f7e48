"""Postal-compatible send API, so Postal's clients (django-anymail's Postal backend among
them) switch to us unchanged: ``POST /api/v1/send/message`` and ``/api/v1/send/raw``.

As in Postal's legacy API: the key comes in ``X-Server-API-Key`` (here: one of our API
keys), parameters as a JSON body or as JSON in a form field ``params``, and every answer
is HTTP 200 with ``{"status", "time", "flags", "data"}``; ``status`` is ``success``,
``error`` (``data.code`` says which) or ``parameter-error``. Validation follows Postal's
order, so a request with several faults gets the error Postal would name.

Where we differ: ``data.messages[rcpt].id`` is our Recipient id and ``token`` the queue
id (one message for all recipients, where Postal stores one per recipient); ``bounce`` is
accepted and ignored; ``sender`` (the Sender: header) must be on a verified domain of
yours; refusals Postal has no code for get codes of ours in its style (table below); the
raw endpoint's missing parameters also carry ``data.code`` (NoMailFrom, NoRcptTo, NoData).
A key whose role may not send (a viewer key) gets ``AccessDenied``, Postal's code for a
caller who may not use the endpoint, with a message naming the role it needs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from email.utils import getaddresses
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, serializers
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery import mime
from delivery.accept import AcceptError, Sender, check_sender_domain
from delivery.api.auth import role_forbidden
from delivery.api.errors import ApiError, from_accept_error
from delivery.api.send_views import Prepared, accept, body_limit, body_too_large
from delivery.credentials import check_api_key
from delivery.models import ApiKey, Message
from domains.roles import Capability, can

KEY_HEADER = "X-Server-API-Key"
MAX_PER_FIELD = 50

POSTAL_MESSAGES = {
    "AccessDenied": "Must be authenticated as a server.",
    "InvalidServerAPIKey": "The API token provided in X-Server-API-Key was not valid.",
    "ServerSuspended": "Sending is suspended for this account; contact support.",
    "NoRecipients": "There are no recipients defined to receive this message",
    "NoContent": "There is no content defined for this e-mail",
    "TooManyToAddresses": "The maximum number of To addresses has been reached (maximum 50)",
    "TooManyCCAddresses": "The maximum number of CC addresses has been reached (maximum 50)",
    "TooManyBCCAddresses": "The maximum number of BCC addresses has been reached (maximum 50)",
    "FromAddressMissing": "The From address is missing and is required",
    "UnauthenticatedFromAddress": (
        "The From address is not authorised to send mail from this server"
    ),
    "AttachmentMissingName": "An attachment is missing a name",
    "AttachmentMissingData": "An attachment is missing data",
}

POSTAL_CODES = {
    # our API code -> Postal-style code; Postal's own where it has one
    "sender_not_allowed": "UnauthenticatedFromAddress",
    "account_suspended": "ServerSuspended",
    "reputation_suspended": "ServerSuspended",
    "no_recipients": "NoRecipients",
    "no_content": "NoContent",
    "invalid_address": "InvalidAddress",
    "header_injection": "HeaderInjection",
    "reserved_header": "ReservedHeader",
    "too_many_recipients": "TooManyRecipients",
    "message_too_large": "MessageTooLarge",
    "invalid_message": "InvalidMessage",
    "rate_limited": "RateLimited",
    "temporarily_unavailable": "TemporarilyUnavailable",
    "rejected": "Rejected",
}
"""Our codes as Postal-style codes; ``invalid_request`` becomes a parameter-error."""


class PostalError(Exception):
    """An answer other than success, in Postal's terms."""

    def __init__(
        self, code: str | None, message: str | None = None, *, status: str = "error", **extra: Any
    ) -> None:
        self.status = status
        self.data: dict[str, Any] = {"message": message or POSTAL_MESSAGES.get(code or "", "")}
        if code:
            self.data["code"] = code
        self.data.update(extra)
        super().__init__(code or self.data["message"])


def parameter_error(message: str, code: str | None = None) -> PostalError:
    return PostalError(code, message, status="parameter-error")


def from_api_error(error: ApiError) -> PostalError:
    code = POSTAL_CODES.get(error.error_code)
    if code is None:
        return parameter_error(error.message)
    message = POSTAL_MESSAGES.get(code, error.message)
    extra: dict[str, Any] = {}
    if message != error.message:
        extra["detail"] = error.message  # ours, more precise than Postal's fixed text
    if error.field:
        extra["field"] = error.field
    if error.retry_after is not None:
        extra["retry_after"] = error.retry_after
    return PostalError(code, message, **extra)


def from_message_error(error: mime.MessageError) -> PostalError:
    code = POSTAL_CODES.get(error.code)
    if code is None:
        return parameter_error(f"{error.field}: {error.message}")
    return PostalError(code, f"{error.field}: {error.message}", field=error.field)


# -- reading Postal's parameters ----------------------------------------------------------


def _text(params: dict, name: str) -> str:
    value = params.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise parameter_error(f"`{name}` should be a string")
    return str(value)


def _mailboxes(params: dict, name: str, too_many: str | None = None) -> list[mime.Mailbox]:
    """Postal takes an array of addresses or one comma-separated string, at most 50."""
    value = params.get(name)
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        mime.check_header_text(value, name)
        items: list = [(n, a) for n, a in getaddresses([value]) if a]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise parameter_error(f"`{name}` should be an array of addresses")
    if too_many and len(items) > MAX_PER_FIELD:
        raise PostalError(too_many)
    return [
        mime.parse_mailbox(item, f"{name}[{i}]")
        if isinstance(item, str)
        else mime.make_mailbox(address=item[1], name=item[0], field=f"{name}[{i}]")
        for i, item in enumerate(items)
    ]


def _base64(value: str) -> bytes:
    """Decoded like Ruby's Base64.decode64: characters outside the alphabet are skipped."""
    data = re.sub(r"[^A-Za-z0-9+/]", "", value)
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return base64.b64decode(data[: len(data) // 4 * 4])


def _attachments(params: dict) -> list[mime.Attachment]:
    value = params.get("attachments") or []
    if not isinstance(value, list):
        raise parameter_error("`attachments` should be an array")
    result = []
    for item in value:
        if not isinstance(item, dict):
            continue  # as Postal does
        name, data = item.get("name"), item.get("data")
        if not isinstance(name, str) or not name.strip():
            raise PostalError("AttachmentMissingName")
        if not isinstance(data, str) or not data.strip():
            raise PostalError("AttachmentMissingData")
        content_type = item.get("content_type") or "application/octet-stream"
        if not isinstance(content_type, str):
            raise parameter_error("`content_type` of an attachment should be a string")
        result.append(
            mime.Attachment(filename=name, content=_base64(data), content_type=content_type)
        )
    return result


def _headers(params: dict) -> dict[str, str]:
    value = params.get("headers") or {}
    if not isinstance(value, dict):
        raise parameter_error("`headers` should be a hash")
    return {str(name): "" if v is None else str(v) for name, v in value.items()}


def _authorised(sender: Sender, address: str, what: str) -> None:
    try:
        check_sender_domain(sender, address, what=what)
    except AcceptError as exc:
        raise from_api_error(from_accept_error(exc)) from None


def prepare_message(params: dict, sender: Sender) -> Prepared:
    """Postal's checks in Postal's order, then our MIME builder's."""
    try:
        to = _mailboxes(params, "to", "TooManyToAddresses")
        cc = _mailboxes(params, "cc", "TooManyCCAddresses")
        bcc = _mailboxes(params, "bcc", "TooManyBCCAddresses")
        if not (to or cc or bcc):
            raise PostalError("NoRecipients")
        plain, html = _text(params, "plain_body"), _text(params, "html_body")
        if not plain.strip() and not html.strip():
            raise PostalError("NoContent")
        from_value = _text(params, "from")
        if not from_value.strip():
            raise PostalError("FromAddressMissing")
        author = mime.parse_mailbox(from_value, "from")
        _authorised(sender, author.address, "From:")
        on_behalf = _text(params, "sender")
        if on_behalf:
            _authorised(sender, mime.parse_mailbox(on_behalf, "sender").address, "Sender:")
        attachments = _attachments(params)
        raw = mime.build_message(
            from_addr=author.address,
            from_name=author.name,
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=_mailboxes(params, "reply_to"),
            subject=_text(params, "subject"),
            text=plain,
            html=html,
            headers=_headers(params),
            attachments=attachments,
            sender=on_behalf or None,
        )
        tag = mime.check_header_text(_text(params, "tag"), "tag")
    except mime.MessageError as exc:
        raise from_message_error(exc) from None
    return Prepared(
        mail_from=author.address,
        recipients=mime.envelope_recipients(to, cc, bcc),
        raw=raw,
        tags=[tag] if tag else [],
    )


def prepare_raw(params: dict) -> Prepared:
    rcpt_to, mail_from, data = params.get("rcpt_to"), params.get("mail_from"), params.get("data")
    if not isinstance(rcpt_to, list):
        raise parameter_error("`rcpt_to` parameter is required but is missing", "NoRcptTo")
    if not isinstance(mail_from, str) or not mail_from.strip():
        raise parameter_error("`mail_from` parameter is required but is missing", "NoMailFrom")
    if not isinstance(data, str) or not data.strip():
        raise parameter_error("`data` parameter is required but is missing", "NoData")
    if not all(isinstance(item, str) for item in rcpt_to):
        raise parameter_error("`rcpt_to` should be an array of addresses")
    try:
        envelope_from = mime.parse_address(mail_from, "mail_from")
        recipients = [mime.parse_address(a, f"rcpt_to[{i}]") for i, a in enumerate(rcpt_to)]
    except mime.MessageError as exc:
        raise from_message_error(exc) from None
    return Prepared(
        mail_from=envelope_from,
        recipients=mime.envelope_recipients(recipients),
        raw=_base64(data),
    )


def result(message: Message) -> dict[str, Any]:
    rows = sorted(message.recipients.all(), key=lambda row: row.pk)
    return {
        "message_id": message.message_id.strip().strip("<>"),
        "messages": {row.address: {"id": row.pk, "token": message.queue_id} for row in rows},
    }


# -- views --------------------------------------------------------------------------------


class ServerApiKeyAuthentication(authentication.BaseAuthentication):
    """Our API key in Postal's header. Never raises: the view answers in Postal's terms."""

    def authenticate(self, request: Request) -> tuple[None, ApiKey] | None:
        key = request.headers.get(KEY_HEADER, "").strip()
        api_key = check_api_key(key) if key else None
        return (None, api_key) if api_key is not None else None


class ServerApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = ServerApiKeyAuthentication
    name = "PostalServerApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": KEY_HEADER,
            "description": "One of your API keys (sm_<prefix>_<secret>), as Postal clients send it",
        }


class PostalAttachmentSerializer(serializers.Serializer):
    name = serializers.CharField()
    content_type = serializers.CharField(required=False)
    data = serializers.CharField(help_text="base64")


class PostalMessageSerializer(serializers.Serializer):
    to = serializers.ListField(child=serializers.CharField(), required=False, max_length=50)
    cc = serializers.ListField(child=serializers.CharField(), required=False, max_length=50)
    bcc = serializers.ListField(child=serializers.CharField(), required=False, max_length=50)
    sender = serializers.CharField(required=False, help_text="The Sender: header.")
    subject = serializers.CharField(required=False)
    tag = serializers.CharField(required=False)
    reply_to = serializers.CharField(required=False)
    plain_body = serializers.CharField(required=False)
    html_body = serializers.CharField(required=False)
    attachments = PostalAttachmentSerializer(many=True, required=False)
    headers = serializers.DictField(child=serializers.CharField(), required=False)
    bounce = serializers.BooleanField(required=False, help_text="Accepted and ignored.")

    def get_fields(self) -> dict[str, serializers.Field]:
        return {"from": serializers.CharField(), **super().get_fields()}


class PostalRawSerializer(serializers.Serializer):
    mail_from = serializers.CharField()
    rcpt_to = serializers.ListField(child=serializers.CharField())
    data = serializers.CharField(help_text="The message (RFC 5322), base64-encoded.")
    bounce = serializers.BooleanField(required=False, help_text="Accepted and ignored.")


class PostalEnvelopeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success", "error", "parameter-error"])
    time = serializers.FloatField(help_text="Seconds the request took.")
    flags = serializers.DictField()
    data = serializers.DictField(
        help_text='success: {"message_id", "messages": {"<rcpt>": {"id", "token"}}}; '
        'otherwise {"code"?, "message"}'
    )


class PostalView(APIView):
    """Postal's legacy API conventions: its key header, its envelope, always HTTP 200."""

    authentication_classes = [ServerApiKeyAuthentication]
    permission_classes: list = []
    parser_classes = [JSONParser, FormParser]

    def dispatch(self, request, *args, **kwargs):
        self.started = time.monotonic()
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if body_too_large(request):
            raise PostalError("MessageTooLarge", f"The request body is over {body_limit()} bytes.")

    def envelope(self, status: str, data: dict[str, Any], headers: dict | None = None) -> Response:
        elapsed = round(time.monotonic() - getattr(self, "started", time.monotonic()), 3)
        body = {"status": status, "time": elapsed, "flags": {}, "data": data}
        return Response(body, status=200, headers=headers)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, PostalError):
            retry = exc.data.get("retry_after")
            return self.envelope(
                exc.status, exc.data, {"Retry-After": str(retry)} if retry else None
            )
        if isinstance(exc, exceptions.APIException):  # unreadable body, wrong method …
            return self.envelope("parameter-error", {"message": str(exc.detail)})
        return super().handle_exception(exc)

    def params(self, request: Request) -> dict:
        if request.content_type.startswith("application/json"):
            data = request.data
        else:
            try:
                data = json.loads(request.data.get("params") or "{}")
            except ValueError:
                raise parameter_error("`params` is not valid JSON") from None
        if not isinstance(data, dict):
            raise parameter_error("Send the parameters as a JSON object")
        return data

    def sender(self, request: Request) -> Sender:
        if request.auth is None:
            if request.headers.get(KEY_HEADER, "").strip():
                raise PostalError("InvalidServerAPIKey")
            raise PostalError("AccessDenied")
        if not can(request.auth.role, Capability.SEND):
            raise PostalError(
                "AccessDenied", role_forbidden(request.auth.role, Capability.SEND).message
            )
        if request.auth.tenant.suspended:
            raise PostalError("ServerSuspended")
        return Sender(tenant_id=request.auth.tenant_id)

    def accepted(self, prepared: Prepared, sender: Sender) -> Response:
        try:
            message = accept(prepared, sender=sender)
        except ApiError as exc:
            raise from_api_error(exc) from None
        return self.envelope("success", result(message))


class PostalSendMessageView(PostalView):
    @extend_schema(
        operation_id="postal_send_message",
        summary="Send a message (Postal-compatible)",
        description=(
            "Postal's /api/v1/send/message for existing Postal clients: key in "
            "X-Server-API-Key, always HTTP 200, the outcome in status and data.code."
        ),
        tags=["postal-compatible"],
        request={"application/json": PostalMessageSerializer},
        responses={200: PostalEnvelopeSerializer},
    )
    def post(self, request: Request) -> Response:
        sender = self.sender(request)
        return self.accepted(prepare_message(self.params(request), sender), sender)


class PostalSendRawView(PostalView):
    @extend_schema(
        operation_id="postal_send_raw",
        summary="Send a raw message (Postal-compatible)",
        description=(
            "Postal's /api/v1/send/raw: a base64 message for exactly the addresses in "
            "rcpt_to; always HTTP 200."
        ),
        tags=["postal-compatible"],
        request={"application/json": PostalRawSerializer},
        responses={200: PostalEnvelopeSerializer},
    )
    def post(self, request: Request) -> Response:
        sender = self.sender(request)
        return self.accepted(prepare_raw(self.params(request)), sender)
