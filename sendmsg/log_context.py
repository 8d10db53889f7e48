"""Structured logs: the ids of the work in hand on every line logged while doing it.

A unit of work on the delivery path (a message being accepted or relayed, one SMTP
transaction, a batch of outcomes, a webhook delivery, the sweeper's run) runs inside
``log_context(...)``; every record logged inside it, by our code or by a library we
call, gets its fields from ``ContextFilter`` (installed on the console handler in
sendmsg/settings.py LOGGING). Contexts nest: an inner one adds to the outer one's fields,
and a field given as None is left out inside it. The fields are kept in a contextvar: a
thread (the SMTP listener's database thread, the webhook senders' pool) does not inherit
them, so the work handed to it opens its own context.

An exception leaving a context keeps that context's fields, so a traceback logged
further out (a task failure, the SMTP handler's error) still names the message.

The field names used on the delivery path: ``queue_id`` (the id a client sees),
``message_id`` (the message's database id), ``recipient_ids`` (those concerned),
``tenant_id``, and ``message_ids`` where one step covers several messages.

``SENDMSG_LOG_FORMAT`` picks the formatter: ``plain`` (the time, level, logger and
message, then `` key=value`` pairs) or ``json`` (one JSON object a line).
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

FORMATS = ("plain", "json")

_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "sendmsg_log_fields", default=None
)
_EXCEPTION_FIELDS = "_sendmsg_log_fields"

ORDER = ("queue_id", "message_id", "recipient_ids", "message_ids", "tenant_id")
"""Fields in this order first on a line, then any others as they were given."""


def current() -> dict[str, Any]:
    """The fields of the contexts entered in this thread (or task) now."""
    return dict(_fields.get() or {})


class log_context:  # noqa: N801 (used as a function: ``with log_context(...)``)
    """Adds ``fields`` to every record logged inside the block (None leaves one out)."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Self:
        self._token = _fields.set(_merged(_fields.get() or {}, self.fields))
        return self

    def add(self, **fields: Any) -> None:
        """More fields for the rest of the block (e.g. the database id once stored)."""
        _fields.set(_merged(_fields.get() or {}, fields))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not hasattr(exc, _EXCEPTION_FIELDS):
            try:  # the innermost context is the most precise: the first one wins
                setattr(exc, _EXCEPTION_FIELDS, current())
            except (AttributeError, TypeError):  # an exception type without a __dict__
                pass
        assert self._token is not None
        _fields.reset(self._token)


def message_context(message: Any, recipient_ids: list[int], **fields: Any) -> log_context:
    """The context of one message (a delivery.models.Message) and those of its
    recipients concerned, and any more ``fields``; it replaces the ``message_ids`` of a
    step around it."""
    return log_context(
        queue_id=message.queue_id,
        message_id=message.pk,
        recipient_ids=list(recipient_ids),
        tenant_id=message.tenant_id,
        message_ids=None,
        **fields,
    )


def _merged(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    merged = {**outer, **inner}
    return {key: value for key, value in merged.items() if value is not None}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields for ``record``: those ContextFilter put on it; else those the exception
    it carries kept from where it was raised (the contexts around the logging call are
    usually the outer ones of those); else the current context's."""
    fields = getattr(record, "log_fields", None)
    if fields is not None:
        return fields
    exc = record.exc_info[1] if record.exc_info else None
    fields = getattr(exc, _EXCEPTION_FIELDS, None) or current()
    first = {key: fields[key] for key in ORDER if key in fields}
    return {**first, **fields}


class ContextFilter(logging.Filter):
    """Puts the current context's fields on each record as ``record.log_fields``. On a
    handler, it runs in the thread that logged, where the context is."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.log_fields = fields_of(record)
        return True


def _plain_value(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``; a traceback follows on its own lines."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        pairs = "".join(f" {k}={_plain_value(v)}" for k, v in fields_of(record).items())
        return super().formatMessage(record) + pairs


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the context's
    fields, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
