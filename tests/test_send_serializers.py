"""The send API's request shapes on their own: every error with its path, message and code,
the validated data, and serializer instances that share nothing a request could change
(the fields are built once per class and copied per instance), also across threads."""

from __future__ import annotations

import base64
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError

from delivery.api.errors import from_validation_error
from delivery.api.send_serializers import (
    BatchSerializer,
    RawSendSerializer,
    SendSerializer,
)
from delivery.mime import Attachment, Mailbox

ATTACHMENT = {"filename": "a.txt", "content": base64.b64encode(b"hello").decode()}


def message(**fields: Any) -> dict:
    body = {"from": "news@acme.test", "to": ["alice@dest.test"], "subject": "Hi", "text": "Hi"}
    body.update(fields)
    return body


def first_error(serializer_class: type, data: Any) -> dict:
    """What the API answers for this body: the first error, as from_validation_error has it."""
    serializer = serializer_class(data=data)
    with pytest.raises(ValidationError) as caught:
        serializer.is_valid(raise_exception=True)
    return from_validation_error(caught.value).body()["error"]


def details(errors: Any) -> Any:
    """serializer.errors with each ErrorDetail as (message, code)."""
    if isinstance(errors, dict):
        return {key: details(value) for key, value in errors.items()}
    if isinstance(errors, list):
        return [details(value) for value in errors]
    assert isinstance(errors, ErrorDetail)
    return (str(errors), errors.code)


NOT_ONE_OF = 'Give an address as a string or {"email", "name"}.'


@pytest.mark.parametrize(
    "body, field, code, text",
    [
        (
            {"to": ["alice@dest.test"], "text": "x"},
            "from",
            "invalid_request",
            "This field is required.",
        ),
        (message(**{"from": None}), "from", "invalid_request", "This field may not be null."),
        (message(**{"from": 5}), "from", "invalid_request", NOT_ONE_OF),
        (message(**{"from": {"email": 5}}), "from", "invalid_request", NOT_ONE_OF),
        (
            message(**{"from": {"email": "a@acme.test", "name": 5}}),
            "from",
            "invalid_request",
            NOT_ONE_OF,
        ),
        (message(**{"from": "a@acme.test, b@acme.test"}), "from", "invalid_address", None),
        (
            message(**{"from": {"email": "a@acme.test", "name": "x\ny"}}),
            "from",
            "header_injection",
            None,
        ),
        (message(to=[]), "to", "no_recipients", "Give at least one recipient."),
        (message(to=None), "to", "invalid_request", "This field may not be null."),
        (message(to=5), "to", "invalid_request", 'Expected a list of items but got type "int".'),
        (message(to=[None]), "to[0]", "invalid_request", "This field may not be null."),
        (message(to=["bad", "alice@dest.test", 5]), "to[0]", "invalid_address", None),
        (message(bcc="x"), "bcc[0]", "invalid_address", None),
        (message(reply_to=["ok@acme.test", "bad"]), "reply_to[1]", "invalid_address", None),
        (
            message(to=[f"r{i}@dest.test" for i in range(101)]),
            "to",
            "too_many_recipients",
            "At most 100 recipients a message; send the rest in another message.",
        ),
        (message(subject=None), "subject", "invalid_request", "This field may not be null."),
        (message(subject=True), "subject", "invalid_request", "Not a valid string."),
        (message(subject="a\r\nBcc: x"), "subject", "header_injection", None),
        (
            message(subject="x" * 999),
            "subject",
            "invalid_request",
            "Ensure this field has no more than 998 characters.",
        ),
        (message(text="", html=""), "text", "no_content", "A message needs text, html or both."),
        (message(text=None), "text", "invalid_request", "This field may not be null."),
        (message(text={"a": 1}), "text", "invalid_request", "Not a valid string."),
        (
            message(text="\ud800"),
            "text",
            "invalid_request",
            "Lone surrogate characters are not allowed.",
        ),
        (
            message(html="é\udfff"),
            "html",
            "invalid_request",
            "Lone surrogate characters are not allowed.",
        ),
        (message(headers={"Subject": "v"}), "headers.Subject", "reserved_header", None),
        (message(headers={"X-A": "a\nb"}), "headers.X-A", "header_injection", None),
        (
            message(headers={"X-A": None}),
            "headers.X-A",
            "invalid_request",
            "This field may not be null.",
        ),
        (
            message(headers=[]),
            "headers",
            "invalid_request",
            'Expected a dictionary of items but got type "list".',
        ),
        (
            message(attachments=ATTACHMENT),
            "attachments",
            "invalid_request",
            'Expected a list of items but got type "dict".',
        ),
        (
            message(attachments=[{}]),
            "attachments[0].filename",
            "invalid_request",
            "This field is required.",
        ),
        (
            message(attachments=[None]),
            "attachments[0]",
            "invalid_request",
            "This field may not be null.",
        ),
        (
            message(attachments=[ATTACHMENT, {"filename": "", "content": "!!"}]),
            "attachments[1].filename",
            "invalid_request",
            "This field may not be blank.",
        ),
        (
            message(attachments=[ATTACHMENT, ATTACHMENT, {"filename": "b", "content": "!!"}]),
            "attachments[2].content",
            "invalid_request",
            "This is not valid base64.",
        ),
        (
            message(attachments=[dict(ATTACHMENT, content_type="multipart/mixed")]),
            "attachments[0].content_type",
            "invalid_request",
            None,
        ),
        (message(tags=[""]), "tags[0]", "invalid_request", "This field may not be blank."),
        (message(tags=["a\nb"]), "tags[0]", "header_injection", None),
        (
            message(tags=[str(i) for i in range(21)]),
            "tags",
            "invalid_request",
            "Ensure this field has no more than 20 elements.",
        ),
        (
            message(metadata={"a": [1]}),
            "metadata.a",
            "invalid_request",
            "Values are strings, numbers, booleans or null.",
        ),
        (
            message(metadata={str(i): i for i in range(51)}),
            "metadata",
            "invalid_request",
            "At most 50 keys.",
        ),
        ([], None, "invalid_request", "Invalid data. Expected a dictionary, but got list."),
        (None, None, "invalid_request", "No data provided"),
        # Several bad fields: the API names the first, in the order the fields are declared.
        (message(to=["bad"], subject="a\nb", text=None), "to[0]", "invalid_address", None),
    ],
)
def test_send_errors_have_their_path_code_and_message(body, field, code, text):
    error = first_error(SendSerializer, body)
    assert error.get("field") == field and error["code"] == code, error
    if text is not None:  # messages from delivery.mime are its own business
        assert error["message"] == text


def test_all_errors_of_one_body_keep_their_shape():
    serializer = SendSerializer(
        data={
            "to": 5,
            "subject": True,
            "text": None,
            "headers": {"X-A": None},
            "attachments": [{"filename": "a"}, None, ATTACHMENT],
            "tags": ["", "ok"],
        }
    )
    assert not serializer.is_valid()
    assert details(serializer.errors) == {
        "from": [("This field is required.", "required")],
        "to": [('Expected a list of items but got type "int".', "not_a_list")],
        "subject": [("Not a valid string.", "invalid")],
        "text": [("This field may not be null.", "null")],
        "headers": {"X-A": [("This field may not be null.", "null")]},
        "attachments": {
            0: {"content": [("This field is required.", "required")]},
            1: [("This field may not be null.", "null")],
        },
        "tags": {0: [("This field may not be blank.", "blank")]},
    }


def test_send_validated_data():
    serializer = SendSerializer(
        data=message(
            **{"from": {"email": "news@acme.test", "name": "Acme"}},
            to="alice@dest.test",
            cc=[{"email": "bob@dest.test"}],
            subject=" padded ",
            text="Hé\n",
            headers={"X-Campaign": "spring"},
            attachments=[dict(ATTACHMENT, content=" aGVs\nbG8= ", content_id="logo")],
            tags=["t"],
            metadata={"n": 1, "ok": True},
            ignored="yes",
        )
    )
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {
        "from": Mailbox(address="news@acme.test", name="Acme"),
        "to": [Mailbox(address="alice@dest.test")],
        "cc": [Mailbox(address="bob@dest.test")],
        "bcc": [],
        "reply_to": [],
        "subject": " padded ",
        "text": "Hé\n",
        "html": "",
        "headers": {"X-Campaign": "spring"},
        "attachments": [
            Attachment(
                filename="a.txt",
                content=b"hello",
                content_type="application/octet-stream",
                content_id="logo",
            )
        ],
        "tags": ["t"],
        "metadata": {"n": 1, "ok": True},
        "unsubscribe": None,  # not given: the header's or the tenant's choice
    }
    assert list(serializer.validated_data)[0] == "from"


def test_raw_and_batch_errors():
    raw = {"mail_from": "a@acme.test", "rcpt_to": ["c@dest.test"], "data": "   "}
    assert first_error(RawSendSerializer, raw) == {
        "code": "no_content",
        "message": "The message is empty.",
        "field": "data",
    }
    assert first_error(RawSendSerializer, {**raw, "rcpt_to": "c@dest.test"})["field"] == "rcpt_to"
    assert first_error(BatchSerializer, {"messages": []}) == {
        "code": "invalid_request",
        "message": "Ensure this field has at least 1 elements.",
        "field": "messages",
    }
    assert first_error(BatchSerializer, {"messages": [message(), None]})["field"] == "messages[1]"
    batch = BatchSerializer(data={"messages": [message(), message(to=[])]})
    assert batch.is_valid() and batch.validated_data["messages"][1]["to"] == []


def walk(field: Any) -> Iterator[Any]:
    yield field
    child = getattr(field, "child", None)
    if child is not None:
        yield from walk(child)
    if isinstance(field, serializers.Serializer):
        for nested in field.fields.values():
            yield from walk(nested)


def test_each_instance_has_its_own_fields_bound_to_it():
    first, second = SendSerializer(data=message()), SendSerializer(data=message())
    mine = [f for field in first.fields.values() for f in walk(field)]
    theirs = [f for field in second.fields.values() for f in walk(field)]
    assert len(mine) == len(theirs) > len(first.fields)  # children and nested fields too
    assert not {id(f) for f in mine} & {id(f) for f in theirs}
    assert all(f.root is first for f in mine) and all(f.root is second for f in theirs)
    nested = first.fields["attachments"].child.fields["filename"]
    assert nested.parent.parent is first.fields["attachments"] and nested.context is first.context


def test_changing_one_instance_fields_leaves_others_alone():
    changed = SendSerializer(data=message(tags=[""], to=[], cc=["bob@dest.test"]))
    changed.fields["tags"].child.allow_blank = True
    assert changed.is_valid(), changed.errors
    assert changed.validated_data["tags"] == [""]

    required = SendSerializer(data=message())
    required.fields["cc"].required = True
    assert not required.is_valid() and list(required.errors) == ["cc"]

    other = SendSerializer(data=message(tags=[""]))
    assert not other.is_valid()
    assert details(other.errors) == {"tags": {0: [("This field may not be blank.", "blank")]}}


def test_validation_in_threads_at_once_gives_each_its_own_answer():
    class FreshSendSerializer(SendSerializer):  # its fields are first built in the threads
        pass

    bodies = [
        message(to=["alice@dest.test"], tags=["a"], attachments=[ATTACHMENT]),
        message(to=["bob@dest.test", "bad"], attachments=[ATTACHMENT, {"filename": ""}]),
    ]

    def outcome(body: dict) -> Any:
        serializer = FreshSendSerializer(data=body)
        if serializer.is_valid():
            return serializer.validated_data
        return details(serializer.errors)

    results: list[list[Any]] = [[], []]
    start = threading.Barrier(2)

    def run(index: int) -> None:
        start.wait()
        for _ in range(300):
            results[index].append(outcome(bodies[index]))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    expected = [outcome(body) for body in bodies]
    assert expected[0]["to"] == [Mailbox(address="alice@dest.test")]
    assert set(expected[1]) == {"to", "attachments"}
    for index in range(2):
        assert len(results[index]) == 300
        assert all(result == expected[index] for result in results[index])


def test_schema_components_keep_their_own_descriptions():
    schemas = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    assert "description" not in schemas["Attachment"]
    assert "description" not in schemas["Batch"]
    assert schemas["Send"]["description"].startswith("One message as JSON.")
    assert schemas["Send"]["properties"]["from"]["description"] == (
        "The From: address; a verified domain of yours."
    )
