"""Test settings: PostgreSQL, the real engine, and a fast password hasher."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/resilient")

from config.settings.base import *  # noqa: E402,F403

# One test database per pytest process, so two runs on one machine never collide.
DATABASES["default"]["TEST"] = {"NAME": f"test_resilient_{os.getpid()}"}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
