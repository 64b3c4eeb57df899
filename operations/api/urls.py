from django.urls import path

from operations.api import views

urlpatterns = [
    path("health/", views.HealthView.as_view(), name="health"),
    path("operations/", views.OperationListView.as_view(), name="operation-list"),
    path("operations/<str:operation_id>/", views.OperationDetailView.as_view(), name="operation-detail"),
    path("operations/<str:operation_id>/result/", views.OperationResultView.as_view(), name="operation-result"),
    path("operations/<str:operation_id>/cancel/", views.OperationCancelView.as_view(), name="operation-cancel"),
    path("workers/", views.WorkerListView.as_view(), name="worker-list"),
    path("workers/register/", views.WorkerRegisterView.as_view(), name="worker-register"),
    path("workers/<str:worker_id>/", views.WorkerDetailView.as_view(), name="worker-detail"),
    path("workers/<str:worker_id>/heartbeat/", views.WorkerHeartbeatView.as_view(), name="worker-heartbeat"),
]
