"""The usual heartbeat over HTTP without DRF's machinery: a fleet's steady traffic, answered in one statement.

A worker machine's workers each POST `workers/<id>/heartbeat/` every few seconds, and nearly every one says the
same thing: its credential, its operation RUNNING on it in the run it claimed, its progress. `lean_heartbeat()`
answers exactly that case, with the credential checked by the statement that records the heartbeat
(services.workers.worker_heartbeat_running): no serializer, no model instance, no second query. Anything else
(another authentication, a body it does not take as plainly valid, a throttled credential, a credential the
statement refuses, an operation that is not RUNNING on this worker and run) returns None, and the DRF view answers
it in full: its errors, its rules, its reply. So the lean path accepts only bodies the view's serializer accepts
(it reads the limits from the serializer's own fields) and stores what the view would store; a test feeds both
paths the same bodies.
"""

from __future__ import annotations

import json
import math

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from operations.api.authentication import WorkerCredentialAuthentication
from operations.api.serializers import WorkerHeartbeatInputSerializer
from operations.api.throttling import CredentialCalls
from operations.ids import InvalidIdentifier
from operations.models import Worker
from operations.services.credentials import KEY_PREFIX, key_digest
from operations.services.workers import (
    CredentialRefused,
    CurrentOperation,
    Progress,
    WorkerReply,
    worker_heartbeat_running,
)

_AUTHORIZATION_PREFIX = WorkerCredentialAuthentication.keyword + " "
_ACCEPTED = {"", "*/*", "application/json"}
_INPUT = WorkerHeartbeatInputSerializer()
_ATTEMPT = _INPUT.fields["attempt"]
_PROGRESS = _INPUT.fields["progress"].fields
_RENDERER = JSONRenderer()
_DATETIME = serializers.DateTimeField()
# What DRF's Response adds to a reply of this view, so that both paths answer alike.
REPLY_HEADERS = {"Vary": "Accept", "Allow": "POST, OPTIONS"}


def lean_heartbeat(request: HttpRequest, worker_id: str) -> HttpResponse | None:
    """The reply to the usual heartbeat with a worker credential, or None for the DRF view to answer."""
    header = request.headers.get("Authorization", "")
    if (request.method != "POST" or not header.startswith(_AUTHORIZATION_PREFIX)
            or request.content_type != "application/json"
            or request.headers.get("Accept", "") not in _ACCEPTED):
        return None
    key = header[len(_AUTHORIZATION_PREFIX):]
    if not key.startswith(KEY_PREFIX) or len(key) > 200 or not key.isascii() or " " in key:
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None  # the view's parser says what it says of it
    report = _plainly_valid(body)
    if report is None:
        return None
    digest = key_digest(key)
    if not CredentialCalls(digest).allow_request(request, None):
        return None  # the view answers 429, with its Retry-After
    current, progress = report
    try:
        reply = worker_heartbeat_running(key=key, worker_id=worker_id, current_operation=current, progress=progress)
    except (CredentialRefused, InvalidIdentifier):
        return None  # the view says why: 401, 403 or 400
    if reply is None:
        return None
    response = HttpResponse(_RENDERER.render(worker_reply_body(reply)), content_type="application/json")
    for name, value in REPLY_HEADERS.items():
        response[name] = value
    return response


def _refuse_constant(name: str):
    raise ValueError(name)  # NaN and Infinity are not JSON


def _plainly_valid(body: bytes) -> tuple[CurrentOperation, Progress | None] | None:
    """The heartbeat's operation, run and progress if the body is plainly what the serializer accepts (its own
    fields' limits); None if it is anything else, however valid, for the serializer to judge."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if type(data) is not dict or not data.keys() <= _INPUT.fields.keys():
        return None
    operation_id, attempt, progress = data.get("operation_id"), data.get("attempt"), data.get("progress", {})
    if (type(operation_id) is not str or not operation_id.isascii() or attempt is None
            or not _integer(_ATTEMPT, attempt)):
        return None
    if "progress" in data:
        if type(progress) is not dict or not progress.keys() <= _PROGRESS.keys():
            return None
        if not all(_plain(_PROGRESS[name], value) for name, value in progress.items()):
            return None
    return CurrentOperation(operation_id=operation_id, attempt=attempt), Progress(**progress) if progress else None


def _integer(field: serializers.IntegerField, value) -> bool:
    if value is None:
        return field.allow_null
    return type(value) is int and field.min_value <= value <= field.max_value


def _plain(field: serializers.Field, value) -> bool:
    if isinstance(field, serializers.IntegerField):
        return _integer(field, value)
    if isinstance(field, serializers.FloatField):
        return (type(value) in (int, float) and math.isfinite(value)
                and field.min_value <= value <= field.max_value)
    if isinstance(field, serializers.CharField):  # as the field keeps it: trimmed, printable UTF-8, not too long
        return (type(value) is str and len(value) <= field.max_length and (value or field.allow_blank)
                and value == value.strip() and value.isprintable())
    return False


def worker_body(worker: Worker) -> dict:
    """A worker as the API shows it (WorkerSerializer's fields; a test holds the two equal)."""
    return {
        "worker_id": worker.worker_id,
        "worker_type": worker.worker_type,
        "host": worker.host,
        "pid": worker.pid,
        "capabilities": worker.capabilities,
        "status": worker.status,
        "current_operation": worker.current_operation_id,
        "registered_at": _DATETIME.to_representation(worker.registered_at),
        "last_seen_at": _DATETIME.to_representation(worker.last_seen_at),
    }


def worker_reply_body(reply: WorkerReply) -> dict:
    """A register or heartbeat reply (WorkerReplySerializer documents it)."""
    instruction = reply.instruction
    return {
        "worker": worker_body(reply.worker),
        "action": reply.action.value,
        "operation": None
        if instruction is None
        else {
            "operation_id": instruction.operation_id,
            "action": instruction.action.value,
            "status": instruction.status,
            "attempt": instruction.attempt,
            "cancel_requested": instruction.cancel_requested,
            "cancel_requested_at": _DATETIME.to_representation(instruction.cancel_requested_at)
            if instruction.cancel_requested_at
            else None,
            "reason": instruction.reason,
        },
    }
