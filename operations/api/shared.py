"""What every app's API shares, in one place: one error body for the whole API ({"code", "detail",
"details"}) and the error responses its schema documents, the JSON parser and the pagination (both named in
the settings), the actor of a request, an identifier taken from the path, and starting an operation from a
validated request.

Every app's views import these from here; no app imports another app's views.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from operations.api.serializers import UNKNOWN_FIELD, StrictSerializer
from operations.exceptions import ServiceError
from operations.models import Operation
from operations.pagination import EXACT_COUNT_LIMIT, ListPaginator
from operations.services.lifecycle import operation_create

# --- errors

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


def _unknown_fields(errors: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every (field path, message) of a field the request should not have sent (StrictSerializer's)."""
    found = []
    if isinstance(errors, dict):
        for name, value in errors.items():
            path = f"{prefix}[{name}]" if isinstance(name, int) else (f"{prefix}.{name}" if prefix else str(name))
            found += _unknown_fields(value, path)
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if isinstance(value, (dict, list)):
                found += _unknown_fields(value, f"{prefix}[{index}]")
            elif getattr(value, "code", None) == UNKNOWN_FIELD:
                found.append((prefix, str(value)))
    return found


def _validation_detail(errors: Any) -> str:
    unknown = _unknown_fields(errors)
    if len(unknown) == 1:
        field, message = unknown[0]
        return f"Unknown field '{field}'.{message.removeprefix('Unknown field.')}"
    if unknown:
        names = ", ".join(repr(field) for field, _ in unknown)
        fields = unknown[0][1].partition(" The fields are: ")[2]
        return f"Unknown fields: {names}." + (f" The fields are: {fields}" if fields else "")
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
    # Imported here, not with this module: rest_framework.views reads this module's JSONParser (the settings name
    # it) when it is first imported, and would find this module half-imported.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
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


def json_bad_request(request, exception=None) -> JsonResponse:
    """A request Django refused before any view (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields)."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse(error_body("REQUEST_TOO_LARGE", f"The request body is larger than {limit:,} bytes."),
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    return JsonResponse(error_body("BAD_REQUEST", "The request was refused before it reached the API."),
                        status=status.HTTP_400_BAD_REQUEST)


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("NOT_FOUND", f"No endpoint at {request.path}."), status=status.HTTP_404_NOT_FOUND)


def json_server_error(request) -> JsonResponse:
    return JsonResponse(
        error_body("SERVER_ERROR", "The server failed to answer this request; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


ErrorSerializer = inline_serializer(
    "Error",
    fields={"code": serializers.CharField(), "detail": serializers.CharField(), "details": serializers.DictField()},
)
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="VALIDATION_ERROR: the detail names the field"),
    401: OpenApiResponse(ErrorSerializer, description="No or bad credential"),
    403: OpenApiResponse(ErrorSerializer, description="Not allowed"),
    404: OpenApiResponse(ErrorSerializer, description="Not found (another user's operation too)"),
    429: OpenApiResponse(ErrorSerializer, description="THROTTLED: too many requests; Retry-After says when to retry"),
}
# What a request that starts an operation may answer besides.
START_ERRORS = {
    **ERRORS,
    409: OpenApiResponse(ErrorSerializer, description="TOO_MANY_ACTIVE_OPERATIONS: the user's cap is reached"),
}


# --- requests

def requests_refuse_unknown_fields(result: dict, generator, request, public) -> dict:
    """The schema says what StrictSerializer does: a request body's object takes no property it does not list."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object" and "properties" in component:
            component["additionalProperties"] = False
    return result


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, and a body nested too deeply for Python's parser is a 400 too, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class Pagination(PageNumberPagination):
    """Pages of a list, whose `count` is exact up to EXACT_COUNT_LIMIT and an estimate past it
    (operations/pagination.py); `next` is exact either way."""

    django_paginator_class = ListPaginator
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_paginated_response_schema(self, schema: dict) -> dict:
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["description"] = (
            f"The items the filters leave: exact up to {EXACT_COUNT_LIMIT:,}; above {EXACT_COUNT_LIMIT:,}, the "
            "database's estimate (it may differ by a few percent from the items the pages hold). `next` is null "
            "exactly on the last page either way.")
        return response


def user_actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


def path_value(field_class: type[serializers.Field], name: str, value: str) -> str:
    """Validate an identifier taken from the URL; a bad one is a 400 naming it."""
    try:
        return field_class().run_validation(value)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({name: exc.detail}) from None


# --- starting an operation

MAX_RESTARTS_PER_OPERATION = 100


class OperationRequestSerializer(StrictSerializer):
    """The request that starts an operation (a training, a backtest, a research session): validated once, kept
    as the operation's params, read back by its runner. Every kind takes `max_restarts`, the restart policy's
    (kept on the operation, not in its params)."""

    max_restarts = serializers.IntegerField(
        min_value=0, max_value=MAX_RESTARTS_PER_OPERATION, required=False,
        help_text="Automatic resumes allowed after a lost worker or a transient error (0: none; MAX_RESTARTS "
                  "unless given).",
    )

    def to_params(self) -> dict[str, Any]:
        """The validated request as it is stored: JSON (dates as ISO strings)."""
        params = {name: value for name, value in self.validated_data.items() if name != "max_restarts"}
        return json.loads(json.dumps(params, cls=DjangoJSONEncoder))


def operation_start(request: OperationRequestSerializer, *, operation_type: str, actor: str, owner=None,
                    **create: Any) -> Operation:
    """Validate a request and record the operation it asks for, enqueued after commit.

    Raises rest_framework's ValidationError naming the field: the API's 400, a command's error naming the
    option; TooManyActiveOperations (409) when the owner has MAX_ACTIVE_OPERATIONS_PER_USER not ended. `create`: the rest of operation_create's arguments (a parent, is_backend_local).
    """
    request.is_valid(raise_exception=True)
    # A user's own requests count against their cap; the children a research session starts do not.
    limit = None if create.get("parent") else settings.MAX_ACTIVE_OPERATIONS_PER_USER
    # Not given: a research session's children follow their session; the others take MAX_RESTARTS.
    parent = create.get("parent")
    given = request.validated_data.get("max_restarts")
    create.setdefault("max_restarts", parent.max_restarts if given is None and parent is not None else given)
    return operation_create(operation_type=operation_type, params=request.to_params(), actor=actor, owner=owner,
                            active_limit=limit, **create)
