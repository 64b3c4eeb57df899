"""The secret key: given by the environment in production, generated once per installation otherwise.

Django signs sessions and password-reset links with it, and django-q2 signs
its task messages with it: whoever knows the key can forge a task that every
worker runs. So no key is ever written in the code. A development
installation generates a random one the first time it starts and keeps it in
a file under VAR_DIR that only its owner can read; every process of that
installation (web, `qcluster`, `supervise`) then reads the same file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.core.management.utils import get_random_secret_key

from config.env import ConfigError

# Django's own test of a weak key (check --deploy, security.W009).
MINIMUM_LENGTH = 50
MINIMUM_DISTINCT_CHARACTERS = 5
INSECURE_PREFIX = "django-insecure"


def require_strong(name: str, value: str) -> str:
    """A key given for production: present and not guessable, or start-up stops naming the variable."""
    if not value:
        raise ConfigError(f"{name} is required when DJANGO_PRODUCTION is true.")
    if len(value) < MINIMUM_LENGTH or len(set(value)) < MINIMUM_DISTINCT_CHARACTERS or value.startswith(
        INSECURE_PREFIX
    ):
        raise ConfigError(
            f"{name} is too weak for production: use at least {MINIMUM_LENGTH} random characters "
            f"(python -c 'import secrets; print(secrets.token_urlsafe(64))')."
        )
    return value


def development_key(path: Path) -> str:
    """The key kept in `path`, generated there (mode 0600) the first time.

    Several processes may start at once on a new installation: the key is
    written to a file of its own and linked into place, so that exactly one
    key wins and nobody reads a half-written file.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(get_random_secret_key())
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another process was first: its key is the installation's
    finally:
        candidate.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} (the secret key) is readable by other users: chmod 600 it, or set DJANGO_SECRET_KEY.")
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"{path} is empty: delete it and a new secret key is generated, or set DJANGO_SECRET_KEY.")
    return key
