from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from operations.admin import login as admin_login
from operations.api.shared import json_bad_request, json_not_found, json_server_error

api_v1 = [
    path("", include("operations.api.urls")),
    path("", include("runtime.urls")),
    path("", include("checkpoints.urls")),
    path("", include("training.urls")),
    path("", include("backtesting.urls")),
    path("", include("agents.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("admin/login/", admin_login, name="admin-login"),  # before the admin's own: throttled
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]


def handler400(request, exception=None):
    if request.path.startswith("/api/"):
        return json_bad_request(request, exception)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler404(request, exception=None):
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if request.path.startswith("/api/"):
        return json_server_error(request)
    from django.views.defaults import server_error

    return server_error(request)
