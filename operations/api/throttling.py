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
        return credential_ident(user.credential.digest)
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
    """Register and heartbeat, per worker credential (a fleet beats often: a rate of its own).

    Counted in fixed windows of the rate's period (a counter each, one cache increment a request) rather than
    DRF's sliding history, whose list of every request's time in the period (thousands for a fleet's credential)
    is read and written whole at each request. A client may so make up to twice the rate across a window's end."""

    scope = "worker"

    def allow_request(self, request, view) -> bool:
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        counter = f"{self.key}:{window}"
        self.cache.add(counter, 0, self.duration + 1)
        try:
            count = self.cache.incr(counter)
        except ValueError:  # expired between the two calls
            self.cache.add(counter, 1, self.duration + 1)
            count = 1
        return count <= self.num_requests

    def wait(self) -> float:
        return self.duration - self.now % self.duration


def credential_ident(digest: str) -> str:
    """A worker credential's count, known by its key's digest: the lean heartbeat counts before it reads the row."""
    return f"credential-{digest}"


class CredentialCalls(WorkerCalls):
    """WorkerCalls for the credential of a key's digest, before the statement that checks it (the lean heartbeat,
    operations/api/heartbeat.py): the same count as the view's. A key that turns out unknown was counted under its
    own digest, never under a real credential's; a heartbeat the view answers after all is counted by both."""

    def __init__(self, digest: str) -> None:
        super().__init__()
        self.digest = digest

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": credential_ident(self.digest)}


class LoginAttempts(Rate):
    """Admin login attempts, per client address."""

    scope = "login"

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# The views that start an operation: every request counts, and new operations count besides.
STARTING = [PerUser, PerAddress, Submissions]
