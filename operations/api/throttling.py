"""Request rates (settings.API_RATES, read at each request): per user or worker credential, per anonymous
address, per user for new operations, per address for admin logins.

Counts are kept in Django's cache: the default (a process's memory) counts per web process, so with N gunicorn
workers a client may make up to N times the rate; a shared cache (Redis, Memcached) makes it exact.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from operations.api.authentication import WorkerPrincipal


class Rate(SimpleRateThrottle):
    def get_rate(self) -> str:
        return settings.API_RATES[self.scope]

    def __init__(self) -> None:  # the rate is read now, not when the class was made: settings may change
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)


def client_key(request) -> str:
    """Who is counted: a worker credential, a user, or (anonymous) an address."""
    user = request.user
    if isinstance(user, WorkerPrincipal):
        return f"credential-{user.credential.pk}"
    if user and user.is_authenticated:
        return f"user-{user.pk}"
    return ""


class PerUser(Rate):
    """Every request of an authenticated client."""

    scope = "user"

    def get_cache_key(self, request, view) -> str | None:
        key = client_key(request)
        return self.cache_format % {"scope": self.scope, "ident": key} if key else None


class PerAddress(Rate):
    """Every request without a credential, per client address."""

    scope = "anon"

    def get_cache_key(self, request, view) -> str | None:
        if client_key(request):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class Submissions(PerUser):
    """New operations (training, backtests, research sessions), per user."""

    scope = "submit"


class WorkerCalls(PerUser):
    """Register and heartbeat, per worker credential (a fleet beats often: a rate of its own)."""

    scope = "worker"


class LoginAttempts(Rate):
    """Admin login attempts, per client address."""

    scope = "login"

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# The views that start an operation: every request counts, and new operations count besides.
STARTING = [PerUser, PerAddress, Submissions]
