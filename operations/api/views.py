"""Thin DRF views: validate, call one service or selector, report."""

from __future__ import annotations

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from operations import permissions, selectors
from operations.api.authentication import WORKER_AUTHENTICATION, WorkerPrincipal, principal_of
from operations.api.heartbeat import lean_heartbeat, worker_reply_body
from operations.api.permissions import ActsAsWorker, SeesWorkers
from operations.api.serializers import (
    HealthSerializer,
    OperationDetailSerializer,
    OperationFilterSerializer,
    OperationIdField,
    OperationResultSerializer,
    OperationSerializer,
    WorkerHeartbeatInputSerializer,
    WorkerIdField,
    WorkerRegisterInputSerializer,
    WorkerRegisterReplySerializer,
    WorkerReplySerializer,
    WorkerSerializer,
)
from operations.api.shared import ERRORS, ErrorSerializer, path_value, user_actor
from operations.api.throttling import WorkerCalls
from operations.exceptions import WorkerOfAnotherHost
from operations.ids import parse_worker_id
from operations.models import ControlLoop, Worker
from operations.services.lifecycle import CancelOutcome, operation_cancel
from operations.services.workers import (
    CompletedReport,
    CurrentOperation,
    Progress,
    worker_get,
    worker_heartbeat,
    worker_register,
)

# --- operations

class OperationListView(generics.ListAPIView):
    serializer_class = OperationSerializer

    @extend_schema(parameters=[OperationFilterSerializer], responses={200: OperationSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = OperationFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.without_results(selectors.operation_list(
            user=self.request.user,
            status=filters.validated_data.get("status"),
            operation_type=filters.validated_data.get("type"),
            resumable=filters.validated_data.get("resumable"),
        ))


class OperationDetailView(APIView):
    @extend_schema(responses={200: OperationDetailSerializer, **ERRORS})
    def get(self, request: Request, operation_id: str) -> Response:
        operation_id = path_value(OperationIdField, "operation_id", operation_id)
        operation = selectors.operation_get(operation_id=operation_id, user=request.user)
        return Response(OperationDetailSerializer(operation).data)


class OperationResultView(APIView):
    @extend_schema(responses={200: OperationResultSerializer, **ERRORS})
    def get(self, request: Request, operation_id: str) -> Response:
        operation_id = path_value(OperationIdField, "operation_id", operation_id)
        operation = selectors.operation_get(operation_id=operation_id, user=request.user)
        return Response(OperationResultSerializer(operation).data)


class OperationCancelView(APIView):
    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(OperationDetailSerializer, description="Cancelled at once"),
            202: OpenApiResponse(OperationDetailSerializer, description="Cancel requested; its worker acknowledges"),
            409: OpenApiResponse(ErrorSerializer, description="OPERATION_NOT_CANCELLABLE: already terminal"),
            **ERRORS,
        },
    )
    def post(self, request: Request, operation_id: str) -> Response:
        operation_id = path_value(OperationIdField, "operation_id", operation_id)
        visible = selectors.operation_get(operation_id=operation_id, user=request.user)  # 404 unless visible
        permissions.require(request.user, visible, permissions.CANCEL, "cancel")
        outcome = operation_cancel(operation_id=operation_id, actor=user_actor(request))
        operation = selectors.operation_get(operation_id=operation_id, user=request.user)
        code = status.HTTP_200_OK if outcome is CancelOutcome.CANCELLED else status.HTTP_202_ACCEPTED
        return Response(OperationDetailSerializer(operation).data, status=code)


# --- workers

class WorkerListView(generics.ListAPIView):
    serializer_class = WorkerSerializer
    authentication_classes = WORKER_AUTHENTICATION
    permission_classes = [ActsAsWorker | SeesWorkers]
    queryset = Worker.objects.order_by("worker_id")

    @extend_schema(responses={200: WorkerSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class WorkerDetailView(APIView):
    authentication_classes = WORKER_AUTHENTICATION
    permission_classes = [ActsAsWorker | SeesWorkers]

    @extend_schema(responses={200: WorkerSerializer, **ERRORS})
    def get(self, request: Request, worker_id: str) -> Response:
        worker_id = path_value(WorkerIdField, "worker_id", worker_id)
        return Response(WorkerSerializer(worker_get(worker_id)).data)


def acting_for(request: Request, worker_id: str) -> str:
    """The principal of a worker endpoint's request, once sure it may act for `worker_id`: a worker credential
    only for the worker ids of its host (a user holding act_as_worker, for any)."""
    if isinstance(request.user, WorkerPrincipal):
        host, _cluster, _pid = parse_worker_id(worker_id)
        if host != request.user.credential.host:
            raise WorkerOfAnotherHost(worker_id, request.user.credential.host)
    return principal_of(request.user)


class WorkerRegisterView(APIView):
    authentication_classes = WORKER_AUTHENTICATION
    throttle_classes = [WorkerCalls]
    permission_classes = [ActsAsWorker]

    @extend_schema(request=WorkerRegisterInputSerializer, responses={200: WorkerRegisterReplySerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        data = WorkerRegisterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        principal = acting_for(request, values["worker_id"])
        current = None
        if values.get("current_operation_id"):
            current = CurrentOperation(
                operation_id=values["current_operation_id"], attempt=values.get("current_attempt")
            )
        reply = worker_register(
            worker_id=values["worker_id"],
            worker_type=values["worker_type"],
            capabilities=values["capabilities"],
            current_operation=current,
            completed_operations=[CompletedReport(**report) for report in values["completed_operations"]],
            principal=principal,
            adopt=False,
        )
        body = worker_reply_body(reply)
        body["completed_operations"] = [
            {"operation_id": operation_id, "applied": applied} for operation_id, applied in reply.completed.items()
        ]
        return Response(body)


class WorkerHeartbeatView(APIView):
    """The usual heartbeat is answered by lean_heartbeat() (operations/api/heartbeat.py) before DRF reads the
    request; every other one, and every error, here."""

    authentication_classes = WORKER_AUTHENTICATION
    throttle_classes = [WorkerCalls]
    permission_classes = [ActsAsWorker]

    def dispatch(self, request, *args, **kwargs):
        return lean_heartbeat(request, kwargs["worker_id"]) or super().dispatch(request, *args, **kwargs)

    @extend_schema(request=WorkerHeartbeatInputSerializer, responses={200: WorkerReplySerializer, **ERRORS})
    def post(self, request: Request, worker_id: str) -> Response:
        worker_id = path_value(WorkerIdField, "worker_id", worker_id)
        principal = acting_for(request, worker_id)
        data = WorkerHeartbeatInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        current = None
        if values.get("operation_id"):
            current = CurrentOperation(operation_id=values["operation_id"], attempt=values.get("attempt"))
        progress = Progress(**values["progress"]) if values.get("progress") else None
        reply = worker_heartbeat(worker_id=worker_id, current_operation=current, progress=progress,
                                 principal=principal, adopt=False)
        return Response(worker_reply_body(reply))


# --- health

class HealthView(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer})
    def get(self, request: Request) -> Response:
        try:
            loop = ControlLoop.objects.filter(pk=1).first()
            awaiting = selectors.operations_awaiting_reconciliation()
        except DatabaseError:
            body = {
                "status": "unavailable",
                "database": "unreachable",
                "control_loop_started_at": None,
                "last_orphan_sweep_at": None,
                "operations_pending_reconciliation": None,
            }
            return Response(HealthSerializer(body).data, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        body = {
            "status": "ok",
            "database": "ok",
            "control_loop_started_at": loop.started_at if loop else None,
            "last_orphan_sweep_at": loop.last_sweep_at if loop else None,
            "operations_pending_reconciliation": awaiting,
        }
        return Response(HealthSerializer(body).data)
