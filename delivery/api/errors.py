"""API errors in one shape: ``{"error": {"code", "message", "field"?}}`` with the status
its code calls for, and the one table that turns accept_message's SMTP answers into them.

Installed for the whole API as ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` in settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from delivery.accept import AcceptError
from delivery.mime import MessageError

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_address": 400,
    "header_injection": 400,
    "reserved_header": 400,
    "no_recipients": 400,
    "too_many_recipients": 400,
    "unauthenticated": 401,
    "invalid_api_key": 401,
    "forbidden": 403,
    "role_forbidden": 403,
    "sender_not_allowed": 403,
    "account_suspended": 403,
    "reputation_suspended": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "conflict": 409,
    "message_too_large": 413,
    "import_too_large": 413,
    "unsupported_media_type": 415,
    "no_content": 422,
    "invalid_message": 422,
    "idempotency_key_reused": 422,
    "rejected": 422,
    "rate_limited": 429,
    "temporarily_unavailable": 503,
}
"""Every machine code the API answers with, and its HTTP status."""

ACCEPT_ERRORS: list[tuple[int | None, str, str]] = [
    # (SMTP code or None for any, enhanced code prefix, our code); the first match wins.
    # A suspended account is also 550 5.7.1 in SMTP, like a From: on a foreign domain;
    # the gate's AcceptError.reason tells them apart (from_accept_error).
    (None, "5.7.", "sender_not_allowed"),
    (None, "5.1.", "invalid_address"),
    (None, "5.3.4", "message_too_large"),
    (None, "4.5.3", "too_many_recipients"),
    (None, "5.5.1", "no_recipients"),
    (None, "5.6.", "invalid_message"),
    (451, "", "rate_limited"),
    (None, "4.7.", "rate_limited"),
    (None, "4.", "temporarily_unavailable"),
    (None, "", "rejected"),
]
"""accept_message's refusals (AcceptError code, enhanced) as API codes: the one table."""

DEFAULT_RETRY_AFTER = 60
"""Seconds a throttled caller is told to wait when the refusal carries no hint."""

DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "invalid_request",
}


class ApiError(exceptions.APIException):
    """An error the API answers with: a machine code, a human message, maybe a field."""

    def __init__(
        self, code: str, message: str, *, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = STATUS_BY_CODE[code]
        self.error_code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        if code == "rate_limited" and retry_after is None:
            self.retry_after = DEFAULT_RETRY_AFTER

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.error_code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def response(self) -> Response:
        return Response(self.body(), status=self.status_code, headers=self.headers())


def from_accept_error(error: AcceptError) -> ApiError:
    # The gate names its refusals (a suspension and a foreign From: are both 550 5.7.1).
    code = (
        error.reason
        if error.reason in STATUS_BY_CODE
        else next(
            code
            for smtp_code, prefix, code in ACCEPT_ERRORS
            if smtp_code in (None, error.code) and error.enhanced.startswith(prefix)
        )
    )
    return ApiError(code, error.text, retry_after=error.retry_after)


def from_message_error(error: MessageError) -> ApiError:
    return ApiError(error.code, error.message, field=error.field)


def _flatten(detail: Any, path: str = "") -> Iterator[tuple[str, exceptions.ErrorDetail]]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key in ("non_field_errors", "detail"):
                yield from _flatten(value, path)
            elif isinstance(key, int) or str(key).isdigit():
                yield from _flatten(value, f"{path}[{key}]")
            else:
                yield from _flatten(value, f"{path}.{key}" if path else str(key))
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            for item in detail:
                yield path, item
        else:  # a list of nested serializers' errors: their position is part of the path
            for index, value in enumerate(detail):
                if value:
                    yield from _flatten(value, f"{path}[{index}]")
    else:
        yield path, detail


def from_validation_error(error: exceptions.ValidationError) -> ApiError:
    """The first field error, with its code when it is one of ours."""
    for field, detail in _flatten(error.detail):
        code = getattr(detail, "code", None)
        if code not in STATUS_BY_CODE:
            code = "invalid_request"
        return ApiError(code, str(detail), field=field or None)
    return ApiError("invalid_request", "The request is not valid.")


def as_api_error(exc: exceptions.APIException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, exceptions.ValidationError):
        error = from_validation_error(exc)
        if exc.status_code != 400:  # e.g. a 409 Conflict raised as a ValidationError
            error.status_code = exc.status_code
            if error.error_code == "invalid_request":
                error.error_code = "conflict" if exc.status_code == 409 else error.error_code
        return error
    code = next((c for kind, c in DRF_CODES.items() if isinstance(exc, kind)), None)
    if code is None:
        code = "invalid_request" if exc.status_code < 500 else "temporarily_unavailable"
    error = ApiError(code, str(exc.detail))
    error.status_code = exc.status_code  # keep DRF's status (401 stays 401, 405 stays 405)
    if isinstance(exc, exceptions.Throttled):
        error.retry_after = int(exc.wait) if exc.wait is not None else DEFAULT_RETRY_AFTER
    return error


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler (401 with WWW-Authenticate, 404 for Http404 …) in our error shape."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if not isinstance(exc, exceptions.APIException):  # Http404, Django's PermissionDenied
        exc = (
            exceptions.NotFound() if response.status_code == 404 else exceptions.PermissionDenied()
        )
    error = as_api_error(exc)
    response.data = error.body()
    response.status_code = error.status_code
    for name, value in error.headers().items():
        response[name] = value
    return response
