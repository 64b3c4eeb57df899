"""Checkpoint endpoints: thin views over checkpoints.services (resume is the runtime's: runtime/api.py)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from checkpoints.exceptions import CheckpointNotFound
from checkpoints.models import Checkpoint
from checkpoints.services import (
    MAX_AGE_DAYS,
    checkpoint_discard,
    checkpoint_maintenance,
    checkpoint_stats,
    checkpoints_expired,
)
from operations import permissions, selectors
from operations.api.permissions import CleansUpCheckpoints
from operations.api.serializers import OperationIdField, StrictSerializer
from operations.api.shared import ERRORS, ErrorSerializer, path_value


class CheckpointSerializer(serializers.ModelSerializer):
    operation_id = serializers.CharField(source="operation.operation_id")
    operation_type = serializers.CharField(source="operation.operation_type")
    operation_status = serializers.CharField(source="operation.status")
    resumable = serializers.BooleanField(source="operation.resumable")
    state_summary = serializers.SerializerMethodField()
    total_size_bytes = serializers.IntegerField()
    age_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Checkpoint
        fields = [
            "operation_id",
            "operation_type",
            "operation_status",
            "resumable",
            "checkpoint_type",
            "created_at",
            "age_seconds",
            "version",
            "state_summary",
            "state",
            "artifacts_path",
            "manifest",
            "state_size_bytes",
            "artifacts_size_bytes",
            "total_size_bytes",
        ]
        read_only_fields = fields

    def get_state_summary(self, checkpoint: Checkpoint) -> dict[str, Any]:
        return checkpoint.summary()["state_summary"]

    def get_age_seconds(self, checkpoint: Checkpoint) -> float:
        return round((timezone.now() - checkpoint.created_at).total_seconds(), 3)


class CheckpointFilterSerializer(StrictSerializer):
    also_allowed = ("page", "page_size")

    operation_id = OperationIdField(required=False)
    older_than_days = serializers.FloatField(required=False, min_value=0, max_value=MAX_AGE_DAYS)


class CleanupInputSerializer(StrictSerializer):
    max_age_days = serializers.FloatField(required=False, min_value=0, max_value=MAX_AGE_DAYS, allow_null=True,
                                          default=None)
    dry_run = serializers.BooleanField(required=False, default=False)


class CleanupReplySerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    deleted = serializers.ListField(child=serializers.CharField(), help_text="Operations whose checkpoint went")
    count = serializers.IntegerField()
    orphan_folders = serializers.ListField(
        child=serializers.CharField(),
        help_text="Artifact folders no checkpoint points at, removed (older than CHECKPOINT_ORPHAN_GRACE_SECONDS: "
                  "a younger one may be a save in progress)",
    )


class StatsSerializer(serializers.Serializer):
    total_checkpoints = serializers.IntegerField()
    total_size_bytes = serializers.IntegerField()
    oldest_checkpoint = serializers.DateTimeField(allow_null=True)
    by_type = serializers.DictField(child=serializers.IntegerField())


def cleanup_reply(report: dict[str, list[str]], *, dry_run: bool) -> dict[str, Any]:
    """What a cleanup did (would do): the API's reply and the command's --json."""
    return CleanupReplySerializer({"dry_run": dry_run, "deleted": report["expired"], "count": len(report["expired"]),
                                   "orphan_folders": report["orphan_folders"]}).data


def visible_checkpoints(request: Request):
    return Checkpoint.objects.select_related("operation").visible_to(request.user)


def visible_checkpoint(request: Request, operation_id: str) -> Checkpoint:
    operation_id = path_value(OperationIdField, "operation_id", operation_id)
    selectors.operation_get(operation_id=operation_id, user=request.user)  # another user's: 404
    checkpoint = visible_checkpoints(request).filter(operation_id=operation_id).first()
    if checkpoint is None:
        raise CheckpointNotFound(operation_id)
    return checkpoint


class CheckpointListView(generics.ListAPIView):
    serializer_class = CheckpointSerializer

    @extend_schema(parameters=[CheckpointFilterSerializer], responses={200: CheckpointSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = CheckpointFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        checkpoints = visible_checkpoints(self.request).order_by("created_at")
        if "operation_id" in filters.validated_data:
            checkpoints = checkpoints.filter(operation_id=filters.validated_data["operation_id"])
        if "older_than_days" in filters.validated_data:
            older = checkpoints_expired(filters.validated_data["older_than_days"])
            checkpoints = checkpoints.filter(pk__in=older.values("pk"))
        return checkpoints


class CheckpointDetailView(APIView):
    @extend_schema(responses={200: CheckpointSerializer, **ERRORS})
    def get(self, request: Request, operation_id: str) -> Response:
        return Response(CheckpointSerializer(visible_checkpoint(request, operation_id)).data)

    @extend_schema(
        responses={204: None, 409: OpenApiResponse(ErrorSerializer, description="CHECKPOINT_IN_USE"), **ERRORS}
    )
    def delete(self, request: Request, operation_id: str) -> Response:
        checkpoint = visible_checkpoint(request, operation_id)
        permissions.require(request.user, checkpoint.operation, permissions.DELETE_CHECKPOINT,
                            "delete the checkpoint of")
        checkpoint_discard(checkpoint.operation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CheckpointCleanupView(APIView):
    permission_classes = [CleansUpCheckpoints]

    @extend_schema(
        request=CleanupInputSerializer,
        responses={200: CleanupReplySerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = CleanupInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = checkpoint_maintenance(
            max_age_days=data.validated_data["max_age_days"], dry_run=data.validated_data["dry_run"]
        )
        return Response(cleanup_reply(report, dry_run=data.validated_data["dry_run"]))


class CheckpointStatsView(APIView):
    @extend_schema(responses={200: StatsSerializer, 401: ERRORS[401], 403: ERRORS[403]})
    def get(self, request: Request) -> Response:
        return Response(StatsSerializer(checkpoint_stats(visible_checkpoints(request))).data)
