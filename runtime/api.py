"""The resume endpoint: a thin view over runtime.resume."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from operations import permissions, selectors
from operations.api.serializers import OperationIdField
from operations.api.shared import ERRORS, ErrorSerializer, path_value, user_actor
from runtime.resume import operation_resume


class ResumedFromSerializer(serializers.Serializer):
    checkpoint_type = serializers.CharField()
    created_at = serializers.DateTimeField()
    epoch = serializers.IntegerField(required=False)
    bar_index = serializers.IntegerField(required=False)
    phase = serializers.CharField(required=False)
    progress_percent = serializers.FloatField()


class ResumeReplySerializer(serializers.Serializer):
    operation_id = serializers.CharField()
    status = serializers.CharField()
    resumed_from = ResumedFromSerializer()


class OperationResumeView(APIView):
    @extend_schema(
        request=None,
        responses={
            202: ResumeReplySerializer,
            409: OpenApiResponse(ErrorSerializer, description="OPERATION_NOT_RESUMABLE or RESUME_CONFLICT"),
            422: OpenApiResponse(ErrorSerializer, description="CHECKPOINT_CORRUPTED, naming the artifacts"),
            503: OpenApiResponse(ErrorSerializer, description="RESUME_ENQUEUE_FAILED: status put back"),
            **ERRORS,
        },
    )
    def post(self, request: Request, operation_id: str) -> Response:
        operation_id = path_value(OperationIdField, "operation_id", operation_id)
        visible = selectors.operation_get(operation_id=operation_id, user=request.user)  # another user's: 404
        permissions.require(request.user, visible, permissions.RESUME, "resume")
        result = operation_resume(operation_id=operation_id, actor=user_actor(request))
        return Response(ResumeReplySerializer(result.as_dict()).data, status=status.HTTP_202_ACCEPTED)
