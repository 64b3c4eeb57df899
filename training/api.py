from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from operations.api.serializers import OperationDetailSerializer
from operations.api.shared import START_ERRORS, user_actor
from operations.api.throttling import STARTING
from training.params import TrainingParamsSerializer
from training.services import training_start


class TrainingCreateView(APIView):
    throttle_classes = STARTING

    @extend_schema(request=TrainingParamsSerializer, responses={201: OperationDetailSerializer, **START_ERRORS})
    def post(self, request: Request) -> Response:
        operation = training_start(data=request.data, actor=user_actor(request), owner=request.user)
        return Response(OperationDetailSerializer(operation, context={"created": True}).data,
                        status=status.HTTP_201_CREATED)
