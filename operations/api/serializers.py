"""Input and output serializers of the operations API; no logic beyond validation."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar

from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from operations.ids import (
    OPERATION_ID_FORMAT,
    WORKER_ID_FORMAT,
    InvalidIdentifier,
    parse_operation_id,
    parse_worker_id,
)
from operations.models import (
    TERMINAL_STATUSES,
    Operation,
    OperationEvent,
    OperationStatus,
    OperationType,
    Worker,
    WorkerType,
)
from operations.restarts import CAUSES_OF, restart_summary
from operations.services.workers import REPORTED_CAUSES

RECENT_EVENTS = 50

# The largest values the columns hold (PostgreSQL integer and bigint): a larger
# one is a 400 here, not a database error (a 500) on write.
MAX_INTEGER = 2**31 - 1  # Operation.attempt, Worker.pid
MAX_BIG_INTEGER = 2**63 - 1  # Operation.progress_current, progress_total


# --- input: unknown fields refused

UNKNOWN_FIELD = "unknown_field"  # the code of the error: the API's detail names every such field at once


class StrictSerializer(serializers.Serializer):
    """Input that refuses the fields it does not know, naming each: a misspelt `epochz` must not run with the
    default epochs, and a field a client takes for another must not be dropped in silence.

    `renamed` says where a field of an earlier version of the API went; `also_allowed` names the query
    parameters a list takes beside its filters (pagination's)."""

    renamed: ClassVar[dict[str, str]] = {}
    also_allowed: ClassVar[tuple[str, ...]] = ()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [name for name in data if name not in self.fields and name not in self.also_allowed]
            if unknown:
                raise serializers.ValidationError(
                    {str(name): [ErrorDetail(self.unknown_field(str(name)), code=UNKNOWN_FIELD)] for name in unknown}
                )
        return super().to_internal_value(data)

    def unknown_field(self, name: str) -> str:
        if name in self.renamed:
            return f"Unknown field. It is now called {self.renamed[name]}."
        known = [field for field in self.fields if not self.fields[field].read_only]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return f"Unknown field.{hint} The fields are: {', '.join(known)}."


# --- validated identifiers

class OperationIdField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("help_text", OPERATION_ID_FORMAT)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            parse_operation_id(value)
        except InvalidIdentifier:
            raise serializers.ValidationError(f"Not an operation id: expected {OPERATION_ID_FORMAT}.") from None
        return value


class WorkerIdField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 320)
        kwargs.setdefault("help_text", WORKER_ID_FORMAT)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            _host, _cluster, pid = parse_worker_id(value)
        except InvalidIdentifier:
            raise serializers.ValidationError(f"Not a worker id: expected {WORKER_ID_FORMAT}.") from None
        if pid > MAX_INTEGER:
            raise serializers.ValidationError(f"Not a worker id: its pid is larger than {MAX_INTEGER}.")
        return value


class StorableJSONField(serializers.JSONField):
    """JSON that can be stored and shown again: jsonb refuses the NUL character in a string or key,
    and a value nested deeper than MAX_JSON_DEPTH would exhaust the stack when it is encoded."""

    MAX_JSON_DEPTH = 64

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        # Iterative, not recursive, for the same reason.
        pending = [(value, 0)]
        while pending:
            item, depth = pending.pop()
            if depth > self.MAX_JSON_DEPTH:
                raise serializers.ValidationError(f"Nested deeper than {self.MAX_JSON_DEPTH} levels.")
            if isinstance(item, dict):
                pending.extend((child, depth + 1) for child in [*item.keys(), *item.values()])
            elif isinstance(item, list):
                pending.extend((child, depth + 1) for child in item)
            elif isinstance(item, str) and "\x00" in item:
                raise serializers.ValidationError("Null characters are not allowed.")
        return value


class JSONObjectField(StorableJSONField):
    """A JSON object (not a list, string or number)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value


# --- operations (output)

class ProgressSerializer(serializers.Serializer):
    current = serializers.IntegerField(source="progress_current")
    total = serializers.IntegerField(source="progress_total", allow_null=True)
    unit = serializers.CharField(source="progress_unit")


class OperationEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OperationEvent
        fields = ["from_status", "to_status", "reason", "actor", "principal", "at"]
        extra_kwargs = {"principal": {"help_text": "Who authenticated the request behind it when not the actor "
                                                   "(a worker's credential, a user acting as a worker); else empty."}}


class CheckpointSummarySerializer(serializers.Serializer):
    checkpoint_type = serializers.CharField()
    created_at = serializers.DateTimeField()
    version = serializers.IntegerField()
    state_summary = serializers.DictField(help_text="epoch, bar_index or phase")
    state_size_bytes = serializers.IntegerField()
    artifacts_size_bytes = serializers.IntegerField()
    artifacts = serializers.ListField(child=serializers.CharField())


class RestartSerializer(serializers.Serializer):
    restarts = serializers.IntegerField(help_text="Automatic resumes made, counted against max_restarts.")
    max_restarts = serializers.IntegerField(help_text="Automatic resumes allowed (0: the policy is off for it).")
    counter = serializers.CharField(help_text="`restarts/max_restarts`, as the CLI and the admin show it.")
    state = serializers.ChoiceField(
        choices=["none", "planned", "exhausted", "crash_loop", "off", "not_restartable"],
        help_text="planned: the control loop resumes it at `next_at` (once a worker is available).",
    )
    next_at = serializers.DateTimeField(allow_null=True, help_text="When the planned automatic resume is due.")
    cause = serializers.CharField(allow_blank=True, help_text="Why its last run ended short of completion.")
    text = serializers.CharField(allow_blank=True, help_text="The policy's decision, in a sentence.")


class OperationSerializer(serializers.ModelSerializer):
    # Declared read-only relations are not inspected for nullability: allow_null puts `nullable` in the schema.
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                         help_text="Username; null for an operation made from the command line.")
    checkpoint = serializers.SerializerMethodField()
    resumable = serializers.BooleanField(read_only=True)
    worker = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    progress = ProgressSerializer(source="*", read_only=True)
    restart = serializers.SerializerMethodField(help_text="The restart policy's counter and decision.")
    summary = serializers.JSONField(read_only=True, help_text=(
        "The result's headline figures, by name (null where a figure has no value, e.g. the Sharpe ratio of a flat "
        "equity curve); empty while there is no result. training: epochs_completed, best_epoch, best_val_loss, "
        "best_val_accuracy, final_val_loss, final_val_accuracy, train_seconds; backtesting: total_return, "
        "buy_and_hold_return, annualised_return, sharpe, max_drawdown, number_of_trades, win_rate, exposure, "
        "final_equity, bars (returns and rates as fractions: 0.1 is 10 %); agent_research: verdict, reasons, score, "
        "total_return, sharpe, max_drawdown, number_of_trades. The whole result is in the operation's detail and "
        "at `operations/<id>/result/`, never in a list."))

    class Meta:
        model = Operation
        fields = [
            "operation_id",
            "operation_type",
            "status",
            "version",
            "owner",
            "worker",
            "attempt",
            "is_backend_local",
            "parent",
            "params",
            "summary",
            "error_message",
            "progress_percent",
            "progress_message",
            "progress",
            "created_at",
            "started_at",
            "completed_at",
            "last_heartbeat_at",
            "cancel_requested_at",
            "checkpoint",
            "resumable",
            "max_restarts",
            "restarts",
            "restart",
        ]
        read_only_fields = fields

    # One of each nested serializer for the whole list, not one a row: building a serializer copies its fields,
    # which cost a page of 50 operations more than the rest of its serializing.
    @cached_property
    def restart_serializer(self) -> RestartSerializer:
        return RestartSerializer()

    @cached_property
    def checkpoint_serializer(self) -> CheckpointSummarySerializer:
        return CheckpointSummarySerializer()

    @extend_schema_field(RestartSerializer)
    def get_restart(self, operation: Operation) -> dict[str, Any]:
        return self.restart_serializer.to_representation(restart_summary(operation))

    @extend_schema_field(CheckpointSummarySerializer(allow_null=True))
    def get_checkpoint(self, operation: Operation) -> dict[str, Any] | None:
        if self.context.get("created"):
            return None  # created by this request: nothing has run to save one
        checkpoint = getattr(operation, "checkpoint", None)  # the checkpoint store's reverse relation
        return self.checkpoint_serializer.to_representation(checkpoint.summary()) if checkpoint else None


class ChildOperationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Operation
        fields = ["operation_id", "operation_type", "status", "progress_percent"]
        read_only_fields = fields


class OperationDetailSerializer(OperationSerializer):
    """An operation with its result, its recent events and its children. With `created` in its context (the
    operation the request has just created: the 201 body) it does not look for a checkpoint or children."""

    recent_events = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField(help_text="The operations it started (an agent session's).")

    class Meta(OperationSerializer.Meta):
        fields = OperationSerializer.Meta.fields + ["result", "recent_events", "children"]
        read_only_fields = fields

    @extend_schema_field(OperationEventSerializer(many=True))
    def get_recent_events(self, operation: Operation) -> list[dict[str, Any]]:
        events = operation.events.all()[:RECENT_EVENTS]
        return OperationEventSerializer(events, many=True).data

    @extend_schema_field(ChildOperationSerializer(many=True))
    def get_children(self, operation: Operation) -> list[dict[str, Any]]:
        if self.context.get("created"):
            return []  # created by this request: nothing has run to start one
        return ChildOperationSerializer(operation.children.order_by("created_at"), many=True).data


class OperationResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = Operation
        fields = ["operation_id", "operation_type", "status", "result"]
        read_only_fields = fields
        extra_kwargs = {"result": {"help_text": "The whole result, as its runner wrote it; null until it completes."}}


class OperationFilterSerializer(StrictSerializer):
    also_allowed = ("page", "page_size")

    status = serializers.ChoiceField(choices=OperationStatus.choices, required=False)
    type = serializers.ChoiceField(choices=OperationType.choices, required=False)
    resumable = serializers.BooleanField(required=False, allow_null=True, default=None)


# --- workers

class WorkerSerializer(serializers.ModelSerializer):
    current_operation = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Worker
        fields = [
            "worker_id",
            "worker_type",
            "host",
            "pid",
            "capabilities",
            "status",
            "current_operation",
            "registered_at",
            "last_seen_at",
        ]
        read_only_fields = fields


MAX_REPORTS = 100  # outcomes one registration may report: a registration's cost stays bounded


class CompletedReportInputSerializer(StrictSerializer):
    operation_id = OperationIdField()
    status = serializers.ChoiceField(choices=[(s.value, s.label) for s in TERMINAL_STATUSES])
    attempt = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, help_text="The run it reports (the attempt its worker claimed)."
    )
    result = StorableJSONField(required=False, allow_null=True)
    error_message = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    completed_at = serializers.DateTimeField(required=False, allow_null=True)
    cause = serializers.ChoiceField(
        choices=[(cause.value, cause.label) for cause in REPORTED_CAUSES], required=False, default="",
        allow_blank=True,
        help_text="Why a FAILED or CANCELLED run ended: the restart policy resumes it automatically after a "
                  "`shutdown` or a `transient_error` (an `error` unless given, or `cancelled` for CANCELLED).",
    )

    def validate(self, data):
        cause, status = data.get("cause", ""), data["status"]
        if cause and cause not in CAUSES_OF.get(status, ()):
            raise serializers.ValidationError({"cause": f"{cause!r} does not go with status {status}."})
        return data


class WorkerRegisterInputSerializer(StrictSerializer):
    worker_id = WorkerIdField()
    worker_type = serializers.ChoiceField(
        choices=[WorkerType.API], default=WorkerType.API,
        help_text="`api`: a worker that reports over the API (a cluster's workers register in-process).",
    )
    capabilities = JSONObjectField(required=False, default=dict)
    current_operation_id = OperationIdField(required=False, allow_null=True)
    current_attempt = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, required=False, allow_null=True,
        help_text="Required with current_operation_id: the run the worker executes.",
    )
    completed_operations = CompletedReportInputSerializer(
        many=True, required=False, default=list, max_length=MAX_REPORTS,
        help_text=f"At most {MAX_REPORTS} per registration: a worker with more registers again for the rest.",
    )

    def validate(self, data):
        return attempt_given(data, "current_operation_id", "current_attempt")


class ProgressInputSerializer(StrictSerializer):
    current = serializers.IntegerField(min_value=0, max_value=MAX_BIG_INTEGER, required=False)
    total = serializers.IntegerField(min_value=0, max_value=MAX_BIG_INTEGER, required=False, allow_null=True)
    unit = serializers.CharField(max_length=32, required=False, allow_blank=True)
    percent = serializers.FloatField(min_value=0, max_value=100, required=False)
    message = serializers.CharField(max_length=500, required=False, allow_blank=True)


class WorkerHeartbeatInputSerializer(StrictSerializer):
    operation_id = OperationIdField(required=False, allow_null=True)
    attempt = serializers.IntegerField(
        min_value=1, max_value=MAX_INTEGER, required=False, allow_null=True,
        help_text="Required with operation_id: the run the worker executes.",
    )
    progress = ProgressInputSerializer(required=False)

    def validate(self, data):
        return attempt_given(data, "operation_id", "attempt")


def attempt_given(data: dict, operation_field: str, attempt_field: str) -> dict:
    """A worker speaks of an operation only with the run it means: its attempt."""
    if data.get(operation_field) and data.get(attempt_field) is None:
        raise serializers.ValidationError({attempt_field: f"Required with {operation_field}: the run (attempt)."})
    return data


class InstructionSerializer(serializers.Serializer):
    operation_id = serializers.CharField()
    action = serializers.ChoiceField(choices=["continue", "stop"])
    status = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField(allow_null=True)
    cancel_requested = serializers.BooleanField()
    cancel_requested_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()


class WorkerReplySerializer(serializers.Serializer):
    worker = WorkerSerializer()
    action = serializers.ChoiceField(
        choices=["continue", "stop"], help_text="What to do with the current operation."
    )
    operation = InstructionSerializer(allow_null=True, source="instruction")


class CompletedResultSerializer(serializers.Serializer):
    operation_id = serializers.CharField()
    applied = serializers.BooleanField(help_text="False when the report changed nothing (a replay, or fenced out).")


class WorkerRegisterReplySerializer(WorkerReplySerializer):
    completed_operations = CompletedResultSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    database = serializers.ChoiceField(choices=["ok", "unreachable"])
    control_loop_started_at = serializers.DateTimeField(allow_null=True)
    last_orphan_sweep_at = serializers.DateTimeField(allow_null=True)
    operations_pending_reconciliation = serializers.IntegerField(allow_null=True)
