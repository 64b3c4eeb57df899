from django.urls import path

from training.api import TrainingCreateView

urlpatterns = [path("training/", TrainingCreateView.as_view(), name="training-create")]
