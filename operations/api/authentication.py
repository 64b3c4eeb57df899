"""A worker machine's credential over the API: `Authorization: Worker <key>`, on the worker endpoints only."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.settings import api_settings

from operations import permissions
from operations.models import WorkerCredential
from operations.services.credentials import credential_authenticate


class WorkerPrincipal(AnonymousUser):
    """The request's user when a worker credential authenticated it: it may act as the workers of one host,
    and nothing else (it holds no other permission, owns nothing and sees no operation)."""

    def __init__(self, credential: WorkerCredential) -> None:
        self.credential = credential
        self.username = credential.principal

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_authenticated(self) -> bool:
        return True

    def has_perm(self, perm: str, obj=None) -> bool:
        return perm == permissions.ACT_AS_WORKER

    def has_perms(self, perm_list, obj=None) -> bool:
        return all(self.has_perm(perm, obj) for perm in perm_list)

    def __str__(self) -> str:
        return self.username


class WorkerCredentialAuthentication(authentication.BaseAuthentication):
    keyword = "Worker"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid worker credential header: expected 'Worker <key>'.")
        try:
            key = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid worker credential.") from None
        credential = credential_authenticate(key)
        if credential is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked worker credential.")
        return WorkerPrincipal(credential), credential

    def authenticate_header(self, request) -> str:
        return self.keyword


# The worker endpoints: a worker credential, or a user's token or session (a user holding act_as_worker).
WORKER_AUTHENTICATION = [WorkerCredentialAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]


def principal_of(user) -> str:
    """Who authenticated a worker endpoint's request, for the events it writes."""
    if isinstance(user, WorkerPrincipal):
        return user.credential.principal
    return f"user:{user.get_username()}"


class WorkerCredentialScheme(OpenApiAuthenticationExtension):
    """The worker credential in the OpenAPI schema (drf-spectacular finds it by subclassing)."""

    target_class = WorkerCredentialAuthentication
    name = "workerCredential"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "A worker machine's credential: `Worker <key>` (manage.py workercredentials create)."}
