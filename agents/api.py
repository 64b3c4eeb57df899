from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Assessment
from agents.params import SessionParamsSerializer
from agents.services import session_start
from operations import permissions
from operations.api.serializers import OperationDetailSerializer
from operations.api.shared import ERRORS, START_ERRORS, user_actor
from operations.api.throttling import STARTING


class SessionCreateView(APIView):
    throttle_classes = STARTING

    @extend_schema(request=SessionParamsSerializer, responses={201: OperationDetailSerializer, **START_ERRORS})
    def post(self, request: Request) -> Response:
        operation = session_start(data=request.data, actor=user_actor(request), owner=request.user)
        return Response(OperationDetailSerializer(operation).data, status=status.HTTP_201_CREATED)


class AssessmentSerializer(serializers.ModelSerializer):
    session_id = serializers.CharField(read_only=True)

    class Meta:
        model = Assessment
        fields = ["session_id", "configuration", "verdict", "score", "reasons", "metrics", "created_at"]


class AssessmentListView(generics.ListAPIView):
    """The sessions' assessments, newest first (a user sees those of their own sessions; one with the view-all permission, all)."""

    serializer_class = AssessmentSerializer

    @extend_schema(responses={200: AssessmentSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        assessments = Assessment.objects.order_by("-created_at")
        if not permissions.sees_all(self.request.user):
            assessments = assessments.filter(session__owner=self.request.user)
        return assessments
