"""Test settings: PostgreSQL, the real engine, and a fast password hasher."""

import os
import secrets
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/resilient")
# Checkpoints, models, data and worker state of a test run go to a folder of its own; with several test
# processes (pytest-xdist), one each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix=f"resilient-test-{os.environ['PYTEST_XDIST_WORKER']}-")
else:
    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="resilient-test-"))
# Request rates no test reaches by accident (the fuzz sends thousands a minute); the rate tests set their own.
for _scope in ("USER", "ANON", "SUBMIT", "LOGIN", "WORKER"):
    os.environ.setdefault(f"API_RATE_{_scope}", "1000000/minute")
# One key for the run, inherited by every process a test starts (as every machine of a deployment shares one).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(64))

from config.settings.base import *  # noqa: E402,F403

# One test database per pytest process, so two runs on one machine never collide.
DATABASES["default"]["TEST"] = {"NAME": f"test_resilient_{os.getpid()}"}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# In-process tests run inside a transaction another process cannot see: checkpoints are committed by a
# thread there; the process tests (real clusters, base settings) and the committer's own tests use the child.
CHECKPOINT_COMMITTER = os.environ.get("CHECKPOINT_COMMITTER", "thread")

# WhiteNoise indexes every app's static files each time a handler is built (each test client): tests that need
# them turn it on; the browser test of `make run` serves the real configuration, and live_server serves its own.
WHITENOISE_USE_FINDERS = False
