"""Request and response shapes of the send API. Header-bearing fields are checked with
delivery.mime's rules, so a bad field is reported with its path and its own code."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, ClassVar

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from delivery import mime

MAX_BATCH = 500
MAX_TAGS = 20
MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 10_000


def _invalid(error: mime.MessageError) -> ValidationError:
    return ValidationError(ErrorDetail(error.message, code=error.code))


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyTextField(serializers.CharField):
    """A text or HTML body. DRF's CharField looks for lone surrogates (which JSON can
    carry as escapes, and which no encoding can write) one character at a time in Python:
    ~0.2 ms for 5 KB. The same check here is one regular-expression search, and none at
    all for ASCII text (``str.isascii`` reads a flag CPython keeps on every string)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", "")
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitSurrogateCharactersValidator)
        ]

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not value.isascii() and LONE_SURROGATE.search(value):
            raise ValidationError("Lone surrogate characters are not allowed.")
        return value


class HeaderTextField(serializers.CharField):
    """Text that ends up in a header: no line breaks, also not through encoded-words."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if isinstance(data, str):
            try:
                mime.check_header_text(data, self.field_name or "value")
            except mime.MessageError as exc:
                raise _invalid(exc) from None
        return super().run_validation(data)


MAILBOX_SCHEMA = {
    "oneOf": [
        {"type": "string", "example": "Acme News <news@acme.test>"},
        {
            "type": "object",
            "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
            "required": ["email"],
        },
    ]
}


@extend_schema_field(MAILBOX_SCHEMA)
class MailboxField(serializers.Field):
    """``"Name <local@domain>"``, ``"local@domain"`` or ``{"email": …, "name": …}``."""

    # Doubled braces: DRF formats these messages with str.format.
    default_error_messages = {"invalid": 'Give an address as a string or {{"email", "name"}}.'}

    def to_internal_value(self, data: Any) -> mime.Mailbox:
        try:
            if isinstance(data, str):
                return mime.parse_mailbox(data, self.field_name)
            if isinstance(data, dict) and isinstance(data.get("email"), str):
                name = data.get("name") or ""
                if not isinstance(name, str):
                    self.fail("invalid")
                return mime.make_mailbox(address=data["email"], name=name, field=self.field_name)
        except mime.MessageError as exc:
            raise _invalid(exc) from None
        self.fail("invalid")

    def to_representation(self, value: mime.Mailbox) -> str:
        return str(value.header_value())


class MailboxListField(serializers.ListField):
    """A list of mailboxes; a single one is taken as a list of one."""

    child = MailboxField()

    def to_internal_value(self, data: Any) -> list[mime.Mailbox]:
        if isinstance(data, (str, dict)):
            data = [data]
        return super().to_internal_value(data)


class AddressField(serializers.CharField):
    """A bare envelope address, ``local@domain``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            return mime.parse_address(value, self.field_name)
        except mime.MessageError as exc:
            raise _invalid(exc) from None


@extend_schema_field(OpenApiTypes.BYTE)
class Base64Field(serializers.CharField):
    """Base64 text (line breaks allowed) decoded to bytes."""

    default_error_messages = {"base64": "This is not valid base64."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def run_validation(self, data: Any = serializers.empty) -> bytes:
        value = super().run_validation(data)
        return value if isinstance(value, bytes) else b""  # CharField returns "" early

    def to_internal_value(self, data: Any) -> bytes:
        text = re.sub(r"\s+", "", super().to_internal_value(data))
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self.fail("base64")


class HeadersField(serializers.DictField):
    """Custom headers by name; names the platform sets itself are refused."""

    child = HeaderTextField(allow_blank=True)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        headers = super().to_internal_value(data)
        errors = {}
        for name, value in headers.items():
            try:
                mime.check_custom_header(name, value)
            except mime.MessageError as exc:
                errors[name] = [ErrorDetail(exc.message, code=exc.code)]
        if errors:
            raise ValidationError(errors)
        return headers


class MetadataField(serializers.DictField):
    """Flat key/value pairs kept with the message (strings, numbers, booleans, null)."""

    child = serializers.JSONField()

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        metadata = super().to_internal_value(data)
        if len(metadata) > MAX_METADATA_KEYS:
            raise ValidationError(f"At most {MAX_METADATA_KEYS} keys.")
        for key, value in metadata.items():
            if len(key) > 128:
                raise ValidationError({key: ["Keys are at most 128 characters."]})
            if not (value is None or isinstance(value, (str, int, float, bool))):
                raise ValidationError({key: ["Values are strings, numbers, booleans or null."]})
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise ValidationError(f"At most {MAX_METADATA_BYTES} bytes as JSON.")
        return metadata


def _copy_field(field: serializers.Field) -> serializers.Field:
    """A copy of an unbound field for one serializer instance: its own attributes (so
    binding it, or reassigning one, leaves the original alone) around the original's
    configuration (arguments, error messages, validators), which validation only reads.
    A list or dict field's child, or a list serializer's child serializer, is copied the
    same way and bound to the copy: nothing bound to one instance is shared."""
    # copy.copy(field) without its __reduce_ex__ round trip, which costs 4 times as much.
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    child = field.__dict__.get("child")
    if isinstance(child, serializers.Field):
        clone.child = _copy_field(child)
        clone.child.parent = clone  # field_name and source stay "", as __init__ bound them
        if field._kwargs.get("child") is child:  # DRF keeps the argument; repr() reads it
            clone._kwargs = {**field._kwargs, "child": clone.child}
    return clone


# Why: DRF gives each serializer instance ``copy.deepcopy(_declared_fields)``, and a
# field's deep copy re-runs its __init__, list children and nested serializers included;
# that was most of the CPU of validating a send request. Here the fields are built once
# per class and each instance gets ``_copy_field`` copies, with the attributes a deep
# copy would have. (No docstring: drf-spectacular would show it for every subclass
# without one of its own, such as AttachmentSerializer, in the OpenAPI schema.)
class PrototypeSerializer(serializers.Serializer):
    _prototype_fields: ClassVar[dict[str, serializers.Field]]  # set on each subclass

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        prototypes = cls.__dict__.get("_prototype_fields")
        if prototypes is None:
            # Threads racing here each build a set; whichever is kept, none is ever bound.
            prototypes = super().get_fields()
            cls._prototype_fields = prototypes
        return {name: _copy_field(field) for name, field in prototypes.items()}


def unsubscribe_field() -> serializers.BooleanField:
    return serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Add one-click unsubscribe (RFC 8058): each recipient gets its own "
            "List-Unsubscribe and List-Unsubscribe-Post headers, and %unsubscribe_url% in "
            "the text and HTML becomes its unsubscribe link. Omitted or null: the "
            "account's default."
        ),
    )


def tags_field() -> serializers.ListField:
    return serializers.ListField(
        child=HeaderTextField(min_length=1, max_length=128),
        max_length=MAX_TAGS,
        required=False,
        default=list,
    )


class AttachmentSerializer(PrototypeSerializer):
    filename = HeaderTextField(max_length=255)
    content = Base64Field(allow_blank=True, help_text="The file, base64-encoded.")
    content_type = HeaderTextField(required=False, default="application/octet-stream")
    content_id = HeaderTextField(
        required=False,
        default="",
        allow_blank=True,
        help_text="Makes the part inline: the HTML refers to it as cid:<content_id>.",
    )

    def validate(self, attrs: dict) -> mime.Attachment:
        attachment = mime.Attachment(**attrs)
        try:
            mime.check_attachment(attachment, "attachment")
        except mime.MessageError as exc:
            part = exc.field.rsplit(".", 1)[-1]
            raise ValidationError({part: [ErrorDetail(exc.message, code=exc.code)]}) from None
        return attachment


def check_recipient_count(recipients: list[str], field: str) -> None:
    if not recipients:
        raise ValidationError(
            {field: [ErrorDetail("Give at least one recipient.", code="no_recipients")]}
        )
    if len(recipients) > settings.SENDMSG_MAX_RECIPIENTS:
        raise ValidationError(
            {
                field: [
                    ErrorDetail(
                        f"At most {settings.SENDMSG_MAX_RECIPIENTS} recipients a message; "
                        "send the rest in another message.",
                        code="too_many_recipients",
                    )
                ]
            }
        )


class SendSerializer(PrototypeSerializer):
    """One message as JSON. ``from`` is declared in get_fields (a Python keyword)."""

    to = MailboxListField(required=False, default=list)
    cc = MailboxListField(required=False, default=list)
    bcc = MailboxListField(
        required=False, default=list, help_text="Envelope only: never written to the headers."
    )
    reply_to = MailboxListField(required=False, default=list)
    subject = HeaderTextField(required=False, default="", allow_blank=True, max_length=998)
    text = BodyTextField()
    html = BodyTextField()
    headers = HeadersField(required=False, default=dict)
    attachments = AttachmentSerializer(many=True, required=False, default=list)
    tags = tags_field()
    metadata = MetadataField(required=False, default=dict)
    unsubscribe = unsubscribe_field()

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "from": MailboxField(help_text="The From: address; a verified domain of yours."),
            **super().get_fields(),
        }

    def validate(self, attrs: dict) -> dict:
        check_recipient_count(
            mime.envelope_recipients(attrs["to"], attrs["cc"], attrs["bcc"]), "to"
        )
        if not attrs["text"] and not attrs["html"]:
            raise ValidationError(
                {"text": [ErrorDetail("A message needs text, html or both.", code="no_content")]}
            )
        return attrs


class RawSendSerializer(PrototypeSerializer):
    """A complete MIME message with its envelope; recipients are never read from headers."""

    mail_from = AddressField(help_text="Envelope sender; a verified domain of yours.")
    rcpt_to = serializers.ListField(child=AddressField())
    data = Base64Field(allow_blank=True, help_text="The message (RFC 5322), base64-encoded.")
    tags = tags_field()
    metadata = MetadataField(required=False, default=dict)
    unsubscribe = unsubscribe_field()

    def validate(self, attrs: dict) -> dict:
        attrs["rcpt_to"] = mime.envelope_recipients(attrs["rcpt_to"])
        check_recipient_count(attrs["rcpt_to"], "rcpt_to")
        if not attrs["data"].strip():
            raise ValidationError(
                {"data": [ErrorDetail("The message is empty.", code="no_content")]}
            )
        return attrs


@extend_schema_field(SendSerializer(many=True))
class MessageListField(serializers.ListField):
    """Each message is checked on its own, so one bad entry does not sink the batch."""

    child = serializers.JSONField()


class BatchSerializer(PrototypeSerializer):
    messages = MessageListField(min_length=1, max_length=MAX_BATCH)


# -- responses (for the schema) -----------------------------------------------------------


class SentRecipientSerializer(serializers.Serializer):
    address = serializers.CharField()
    id = serializers.IntegerField(help_text="The recipient's id; its state is in the message.")


class SentSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Queue id: GET /api/v1/messages/{id}/ follows it.")
    message_id = serializers.CharField(help_text="The Message-ID header.")
    recipients = SentRecipientSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False)
    retry_after = serializers.IntegerField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class BatchResultSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="What this message alone would have got.")
    id = serializers.CharField(required=False)
    message_id = serializers.CharField(required=False)
    recipients = SentRecipientSerializer(many=True, required=False)
    error = ErrorDetailSerializer(required=False)


class BatchResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = BatchResultSerializer(many=True, help_text="One per message, in request order.")
