from django.urls import path

from checkpoints import api

urlpatterns = [
    path("checkpoints/", api.CheckpointListView.as_view(), name="checkpoint-list"),
    path("checkpoints/cleanup/", api.CheckpointCleanupView.as_view(), name="checkpoint-cleanup"),
    path("checkpoints/stats/", api.CheckpointStatsView.as_view(), name="checkpoint-stats"),
    path("checkpoints/<str:operation_id>/", api.CheckpointDetailView.as_view(), name="checkpoint-detail"),
]
