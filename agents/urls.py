from django.urls import path

from agents.api import AssessmentListView, SessionCreateView

urlpatterns = [
    path("agents/sessions/", SessionCreateView.as_view(), name="agent-session-create"),
    path("agents/assessments/", AssessmentListView.as_view(), name="agent-assessment-list"),
]
