"""One error body for the whole API: {"code", "detail", "details"} (SPEC §9)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from operations.exceptions import ServiceError

_CODES: list[tuple[type[Exception], str]] = [
    (exceptions.ValidationError, "VALIDATION_ERROR"),
    (exceptions.ParseError, "VALIDATION_ERROR"),
    (exceptions.NotAuthenticated, "NOT_AUTHENTICATED"),
    (exceptions.AuthenticationFailed, "AUTHENTICATION_FAILED"),
    (exceptions.PermissionDenied, "PERMISSION_DENIED"),
    (exceptions.NotFound, "NOT_FOUND"),
    (exceptions.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
    (exceptions.NotAcceptable, "NOT_ACCEPTABLE"),
    (exceptions.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE"),
    (exceptions.Throttled, "THROTTLED"),
]


def error_body(code: str, detail: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "detail": detail, "details": details or {}}


def _first_field_error(errors: Any, prefix: str = "") -> tuple[str, str] | None:
    """The first (field path, message) in a DRF error structure, to name it in `detail`."""
    if isinstance(errors, dict):
        for name, value in errors.items():
            if isinstance(name, int):  # a list's errors, keyed by index (DRF's LIST_SERIALIZER_ERRORS_AS_DICT)
                path = f"{prefix}[{name}]"
            elif name == "non_field_errors" and prefix:  # a nested object as a whole: name the field itself
                path = prefix
            else:
                path = name if not prefix else f"{prefix}.{name}"
            found = _first_field_error(value, path)
            if found:
                return found
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if isinstance(value, (dict, list)):
                found = _first_field_error(value, f"{prefix}[{index}]" if prefix else str(index))
                if found:
                    return found
            elif value:
                return prefix, str(value)
    elif errors:
        return prefix, str(errors)
    return None


def _validation_detail(errors: Any) -> str:
    found = _first_field_error(errors)
    if not found:
        return "Invalid input."
    field, message = found
    if not field or field in ("non_field_errors", "0"):
        return f"Invalid input: {message}"
    return f"Invalid value for field '{field}': {message}"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.detail, exc.details), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's 500 handler answers (in JSON under /api/)
    code = next((name for kind, name in _CODES if isinstance(exc, kind)), "ERROR")
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(code, _validation_detail(exc.detail), details)
    elif isinstance(exc, exceptions.ParseError):
        response.data = error_body(code, f"Malformed request body: {exc.detail}")
    else:
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("NOT_FOUND", f"No endpoint at {request.path}."), status=status.HTTP_404_NOT_FOUND)


def json_server_error(request) -> JsonResponse:
    return JsonResponse(
        error_body("SERVER_ERROR", "The server failed to answer this request; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
