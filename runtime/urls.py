from django.urls import path

from runtime import api

urlpatterns = [
    path("operations/<str:operation_id>/resume/", api.OperationResumeView.as_view(), name="operation-resume"),
]
