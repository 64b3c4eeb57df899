"""Settings for every environment; each value comes from the environment (docs/configuration.md)."""

from __future__ import annotations

import socket
from pathlib import Path

import dj_database_url

from config import secret_key
from config.env import ConfigError, Env, require_longer, without_password

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = env.path("VAR_DIR", BASE_DIR / "var")

DEBUG = env.bool("DJANGO_DEBUG", False)
PRODUCTION = env.bool("DJANGO_PRODUCTION", False)
# No key in the code (docs/security.md): production must give a strong one; an installation without one
# generates its own, once, in a file only its owner can read.
if PRODUCTION:
    if DEBUG:
        raise ConfigError("DJANGO_DEBUG=true is invalid when DJANGO_PRODUCTION is true.")
    SECRET_KEY = secret_key.require_strong("DJANGO_SECRET_KEY", env.str("DJANGO_SECRET_KEY", ""))
else:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", "") or secret_key.development_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
if PRODUCTION and env.str("DJANGO_ALLOWED_HOSTS", "") == "":
    raise ConfigError("DJANGO_ALLOWED_HOSTS is required when DJANGO_PRODUCTION is true: the host names it is served as.")

# --- served behind a TLS-terminating proxy in production: `manage.py check --deploy` passes
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/$"]  # probes that reach a process directly, over plain HTTP
    # The proxy sets X-Forwarded-Proto (and overwrites a client's): the request was HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", True)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("https://", "http://")):
        raise ConfigError(f"DJANGO_CSRF_TRUSTED_ORIGINS={_origin!r} is invalid: each origin starts with https://.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",  # runserver leaves static files to WhiteNoise, as gunicorn does
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "operations",
    "runtime",  # before django_q: its `qcluster` command wraps django-q2's
    "django_q",
    "checkpoints",
    "marketdata",
    "training",
    "backtesting",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files, in every mode (DEBUG off too)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database: SQLite by default, PostgreSQL through DATABASE_URL
DATABASE_URL = env.str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
try:
    # Kept connections save the web a connect per request (about 4 ms on PostgreSQL); 0 closes each at its end.
    _database = dj_database_url.parse(
        DATABASE_URL, conn_max_age=env.int("DATABASE_CONN_MAX_AGE", 0), conn_health_checks=True
    )
except Exception as exc:  # dj-database-url raises several types for a bad URL
    raise ConfigError(f"DATABASE_URL={without_password(DATABASE_URL)!r} is invalid: {exc}") from None
if _database.get("ENGINE") not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    raise ConfigError(
        f"DATABASE_URL={without_password(DATABASE_URL)!r} is invalid: use a sqlite:// or postgres:// URL."
    )
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # Web, cluster and control loop share one file: WAL lets readers run beside
    # the writer, the busy timeout makes a writer wait instead of failing, and
    # IMMEDIATE transactions take the write lock up front (no upgrade deadlock).
    _database["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    Path(_database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    _database.setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = "config.formats"  # times to the second in the admin (config/formats/en/formats.py)
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The web process serves its own static files (WhiteNoise), DEBUG off included: after `collectstatic` (run by
# `make run`, and once per release in a deployment) each file has a hashed name, is compressed and is cached by
# browsers for a year; before it, or for a file a release added since, the app's own copy is served under its
# plain name (WHITENOISE_USE_FINDERS) with a short cache, so a page never breaks for want of a step.
WHITENOISE_USE_FINDERS = True

# --- storage folders
CHECKPOINT_DIR = env.path("CHECKPOINT_DIR", VAR_DIR / "checkpoints")
MODELS_DIR = env.path("MODELS_DIR", VAR_DIR / "models")
RESULTS_DIR = env.path("RESULTS_DIR", VAR_DIR / "results")  # backtest equity curves and their spools
DATA_DIR = env.path("DATA_DIR", VAR_DIR / "data")
WORKER_STATE_DIR = env.path("WORKER_STATE_DIR", VAR_DIR / "worker-state")
# The host part of this machine's worker ids (<host>:<cluster>:<pid>): its host name unless set (a container's
# host name may change with each start).
WORKER_HOST = env.str("WORKER_HOST", "") or socket.gethostname()

# Checkpoint artifacts go through Django's storage API: the "checkpoints" storage
# is a folder (local, a shared volume or NFS) unless another backend is configured.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.staticfiles.StaticFilesStorage"},  # WhiteNoise's, see STATIC_ROOT
    "checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(CHECKPOINT_DIR), "file_permissions_mode": 0o640},
    },
}
# A save folder with no committed row is a save in progress for this long, then an orphan.
CHECKPOINT_ORPHAN_GRACE_SECONDS = env.seconds("CHECKPOINT_ORPHAN_GRACE_SECONDS", 3600)

# --- liveness and reconciliation (docs/restarts-and-crashes.md)
HEARTBEAT_INTERVAL_SECONDS = env.seconds("HEARTBEAT_INTERVAL_SECONDS", 10)
WORKER_STALE_SECONDS = env.seconds("WORKER_STALE_SECONDS", 30)
ORPHAN_TIMEOUT_SECONDS = env.seconds("ORPHAN_TIMEOUT_SECONDS", 60)
ORPHAN_CHECK_INTERVAL_SECONDS = env.seconds("ORPHAN_CHECK_INTERVAL_SECONDS", 15)
REQUEUE_AFTER_SECONDS = env.seconds("REQUEUE_AFTER_SECONDS", 120)
SHUTDOWN_TIMEOUT_SECONDS = env.seconds("SHUTDOWN_TIMEOUT_SECONDS", 25)
require_longer("WORKER_STALE_SECONDS", WORKER_STALE_SECONDS, "HEARTBEAT_INTERVAL_SECONDS", HEARTBEAT_INTERVAL_SECONDS)
require_longer("ORPHAN_TIMEOUT_SECONDS", ORPHAN_TIMEOUT_SECONDS, "WORKER_STALE_SECONDS", WORKER_STALE_SECONDS)
require_longer("REQUEUE_AFTER_SECONDS", REQUEUE_AFTER_SECONDS, "ORPHAN_CHECK_INTERVAL_SECONDS", ORPHAN_CHECK_INTERVAL_SECONDS)

# --- the restart policy (docs/self-healing.md)
# Automatic resumes a new operation is allowed after a lost worker or a transient error (0: none; a request may
# say otherwise). A graceful shutdown's resume is not counted.
MAX_RESTARTS = env.int("MAX_RESTARTS", 3, minimum=0)
RESTART_BACKOFF_SECONDS = env.seconds("RESTART_BACKOFF_SECONDS", 10)
RESTART_BACKOFF_MAX_SECONDS = env.seconds("RESTART_BACKOFF_MAX_SECONDS", 600)
if RESTART_BACKOFF_MAX_SECONDS < RESTART_BACKOFF_SECONDS:
    raise ConfigError(f"RESTART_BACKOFF_MAX_SECONDS={RESTART_BACKOFF_MAX_SECONDS:g} is invalid: it must be at "
                          f"least RESTART_BACKOFF_SECONDS={RESTART_BACKOFF_SECONDS:g}.")
# A training that ends without any checkpoint is restarted from its first epoch (a backtest always is).
TRAINING_RESTART_FROM_SCRATCH = env.bool("TRAINING_RESTART_FROM_SCRATCH", True)

# --- checkpoints (docs/checkpoints.md)
TRAINING_CHECKPOINT_EVERY_EPOCHS = env.int("TRAINING_CHECKPOINT_EVERY_EPOCHS", 10)
BACKTEST_CHECKPOINT_EVERY_BARS = env.int("BACKTEST_CHECKPOINT_EVERY_BARS", 10_000)
CHECKPOINT_TIME_INTERVAL_SECONDS = env.seconds("CHECKPOINT_TIME_INTERVAL_SECONDS", 300)
# Who commits a backtest's checkpoints beside its loop: a child process (keeps the GIL free) or a thread.
CHECKPOINT_COMMITTER = env.choice("CHECKPOINT_COMMITTER", "process", ("process", "thread"))
CHECKPOINT_MAX_AGE_DAYS = env.int("CHECKPOINT_MAX_AGE_DAYS", 30, minimum=1)
CHECKPOINT_CLEANUP_INTERVAL_HOURS = env.seconds("CHECKPOINT_CLEANUP_INTERVAL_HOURS", 24)
# The control loop deletes, once a day, ended trainings and backtests older than this, with their events and
# files (operations/services/retention.py); 0: never (`manage.py operations purge` does it by hand).
OPERATIONS_RETENTION_DAYS = env.int("OPERATIONS_RETENTION_DAYS", 0)

# --- workers: django-q2
Q_BROKER = env.choice("Q_BROKER", "orm", ("orm", "redis"))
REDIS_URL = env.str("REDIS_URL", "redis://127.0.0.1:6379/0")
Q_WORKERS = env.int("Q_WORKERS", 2, minimum=1)
# A task may run for days; django-q2 kills it after `timeout`. The ORM broker
# redelivers an unacknowledged task after `retry`, which must exceed the
# timeout or a running task is delivered twice (the claim would make the copy
# harmless, but it would still hold a worker).
Q_TASK_TIMEOUT_SECONDS = env.int("Q_TASK_TIMEOUT_SECONDS", 7 * 24 * 3600, minimum=1)
Q_RETRY_SECONDS = env.int("Q_RETRY_SECONDS", Q_TASK_TIMEOUT_SECONDS + 600, minimum=1)
require_longer("Q_RETRY_SECONDS", Q_RETRY_SECONDS, "Q_TASK_TIMEOUT_SECONDS", Q_TASK_TIMEOUT_SECONDS)
Q_MAX_ATTEMPTS = env.int("Q_MAX_ATTEMPTS", 3, minimum=1)
# The cluster's name: the broker's queue (deployments sharing one Redis need names of their own) and the middle
# part of worker ids. django-q2 reads the same variable.
Q_CLUSTER_NAME = env.str("Q_CLUSTER_NAME", "resilient")
# Task results kept (the latest; django-q2's admin shows them).
Q_RESULTS_KEPT = 1000
# How long a qcluster's processes keep a database connection between tasks (at least DATABASE_CONN_MAX_AGE):
# django-q2 closes old connections before each task and each result, and with DATABASE_CONN_MAX_AGE 0 every
# operation cost two new connections (a PostgreSQL backend started each time). A cluster has few processes.
Q_DATABASE_CONN_MAX_AGE = env.int("Q_DATABASE_CONN_MAX_AGE", 300, minimum=0)
Q_CLUSTER = {
    "name": Q_CLUSTER_NAME,
    "workers": Q_WORKERS,
    "recycle": 50,
    "timeout": Q_TASK_TIMEOUT_SECONDS,
    "retry": Q_RETRY_SECONDS,
    "max_attempts": Q_MAX_ATTEMPTS,
    "ack_failures": True,
    "catch_up": False,
    # django-q2 prunes its task results by reading every kept one at each task (a cost that grows with the count):
    # it keeps them all, and the monitor removes the older ones in one statement now and then (runtime/results.py).
    "save_limit": 0,
    "poll": 0.5,
    "label": "Task queue",
}
if Q_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
else:
    Q_CLUSTER["redis"] = REDIS_URL

# --- limits (docs/security.md)
# Operations a user may have that have not ended (0: no cap); a research session's children do not count.
MAX_ACTIVE_OPERATIONS_PER_USER = env.int("MAX_ACTIVE_OPERATIONS_PER_USER", 20)
# The largest network a training request may ask for, and the memory a worker may need to train it.
TRAINING_MAX_PARAMETERS = env.int("TRAINING_MAX_PARAMETERS", 5_000_000, minimum=1)
TRAINING_MAX_MEMORY_MB = env.int("TRAINING_MAX_MEMORY_MB", 4096, minimum=1)
# Research sessions `supervise` runs at once, a thread each; the others wait, oldest first.
SUPERVISE_MAX_SESSIONS = env.int("SUPERVISE_MAX_SESSIONS", 4, minimum=1)
# Requests per client: a user (or worker credential), an anonymous address, new operations of a user, admin
# login attempts of an address, and a worker credential's register and heartbeat calls.
API_RATES = {
    "user": env.rate("API_RATE_USER", "1200/minute"),
    "anon": env.rate("API_RATE_ANON", "120/minute"),
    "submit": env.rate("API_RATE_SUBMIT", "30/minute"),
    "login": env.rate("API_RATE_LOGIN", "10/minute"),
    "worker": env.rate("API_RATE_WORKER", "6000/minute"),
}
# Client addresses come from X-Forwarded-For behind this many proxies (0: the connection's own address).
API_PROXIES = env.int("API_PROXIES", 1 if PRODUCTION else 0)

# --- REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["operations.api.throttling.PerUser", "operations.api.throttling.PerAddress"],
    "NUM_PROXIES": API_PROXIES,
    "DEFAULT_PARSER_CLASSES": [
        "operations.api.shared.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "operations.api.shared.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "operations.api.shared.Pagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Resilient operations API",
    "DESCRIPTION": (
        "Durable, self-healing and resumable long-running operations. Since 2.0.0: a request's unknown field is a "
        "400 naming it; a backtest's strategy parameters are `strategy_params`, in the request as in the "
        "operation's `params`; a date range with no bars, or too few for the request, is a 400 at submit; lists "
        "carry each operation's `summary`, and its `result` only the detail and `operations/{id}/result/`. Since "
        "2.1.0: a list's `count` is exact up to 10,000 and the database's estimate past it (`next` stays exact)."
    ),
    "VERSION": "2.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OperationStatusEnum": "operations.models.OperationStatus",
        "WorkerStatusEnum": "operations.models.WorkerStatus",
        "TerminalStatusEnum": ["COMPLETED", "FAILED", "CANCELLED"],
        "HealthStatusEnum": ["ok", "unavailable"],
    },
    # Serve the docs' assets from this deployment: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "operations.api.shared.requests_refuse_unknown_fields",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()},
}
