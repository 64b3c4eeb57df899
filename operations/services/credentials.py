"""Worker credentials: one per worker machine, bound to its host name, shown once, kept as a digest."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from operations.clock import db_now
from operations.exceptions import WorkerCredentialNotFound
from operations.ids import HOST_RE
from operations.models import WorkerCredential

KEY_PREFIX = "wk_"
PREFIX_LENGTH = 11  # "wk_" and 8 characters: enough to tell credentials apart, nothing to guess the rest from
LAST_USED_PRECISION = timedelta(minutes=1)  # a heartbeat every few seconds need not write the row each time


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def credential_create(*, host: str, description: str = "", actor: str) -> tuple[WorkerCredential, str]:
    """A new credential for `host`'s workers, and its key: the only time the key is known."""
    if not HOST_RE.match(host):
        raise ValueError(f"{host!r} is not a host name of worker ids (letters, digits, dots, dashes, underscores)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    credential = WorkerCredential.objects.create(
        host=host, prefix=key[:PREFIX_LENGTH], digest=key_digest(key), description=description[:200], created_by=actor
    )
    return credential, key


def credential_revoke(*, prefix: str) -> WorkerCredential:
    """Revoke the credential of `prefix` (its key's first characters, as lists show them): refused from now on."""
    credential = WorkerCredential.objects.filter(prefix=prefix).first()
    if credential is None:
        raise WorkerCredentialNotFound(prefix)
    WorkerCredential.objects.filter(pk=credential.pk, revoked_at__isnull=True).update(revoked_at=db_now())
    credential.refresh_from_db()
    return credential


def credential_authenticate(key: str) -> WorkerCredential | None:
    """The live credential of `key`, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    try:  # the digest is unique: get(), not first(), which would sort
        credential = WorkerCredential.objects.get(digest=key_digest(key), revoked_at__isnull=True)
    except WorkerCredential.DoesNotExist:
        credential = None
    # Its use is written at most once a minute: this process's clock only says when it may be due (a heartbeat
    # every few seconds is then the one statement that checks the key); the database's decides.
    if credential is not None and (credential.last_used_at is None
                                   or timezone.now() - credential.last_used_at >= LAST_USED_PRECISION):
        WorkerCredential.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=Now() - LAST_USED_PRECISION), pk=credential.pk
        ).update(last_used_at=Now())
    return credential
