"""Settings from the environment (docs/configuration.md): a bad value stops start-up with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config import secret_key
from config.env import ConfigError, Env, require_longer
from tests.support.race import race

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"

# Everything config/settings/base.py reads: the subprocesses must not inherit them from the test run.
SETTINGS_VARIABLES = {
    "VAR_DIR", "DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_PRODUCTION", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL",
    "DATABASE_CONNECT_TIMEOUT", "CHECKPOINT_DIR", "MODELS_DIR", "DATA_DIR", "WORKER_STATE_DIR",
    "HEARTBEAT_INTERVAL_SECONDS", "WORKER_STALE_SECONDS", "ORPHAN_TIMEOUT_SECONDS", "ORPHAN_CHECK_INTERVAL_SECONDS",
    "REQUEUE_AFTER_SECONDS", "SHUTDOWN_TIMEOUT_SECONDS", "TRAINING_CHECKPOINT_EVERY_EPOCHS",
    "BACKTEST_CHECKPOINT_EVERY_BARS", "CHECKPOINT_TIME_INTERVAL_SECONDS", "CHECKPOINT_MAX_AGE_DAYS",
    "CHECKPOINT_CLEANUP_INTERVAL_HOURS", "Q_BROKER", "REDIS_URL", "Q_WORKERS", "Q_TASK_TIMEOUT_SECONDS",
    "Q_RETRY_SECONDS", "Q_MAX_ATTEMPTS", "LOG_LEVEL", "DJANGO_CSRF_TRUSTED_ORIGINS", "DJANGO_SECURE_SSL_REDIRECT",
    "DJANGO_HSTS_SECONDS", "DJANGO_HSTS_INCLUDE_SUBDOMAINS", "DJANGO_HSTS_PRELOAD", "MAX_ACTIVE_OPERATIONS_PER_USER",
    "TRAINING_MAX_PARAMETERS", "TRAINING_MAX_MEMORY_MB", "SUPERVISE_MAX_SESSIONS", "API_RATE_USER", "API_RATE_ANON",
    "API_RATE_SUBMIT", "API_RATE_LOGIN", "API_RATE_WORKER", "API_PROXIES",
}


@pytest.fixture
def manage(tmp_path):
    """Run manage.py with a clean environment plus `overrides`, on a throwaway SQLite file."""

    def run(*args: str, **overrides: str | None) -> subprocess.CompletedProcess:
        env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
        env["VAR_DIR"] = str(tmp_path / "var")
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return subprocess.run(
            [sys.executable, str(MANAGE_PY), *args],
            cwd=MANAGE_PY.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def assert_config_error(process: subprocess.CompletedProcess, variable: str) -> None:
    assert process.returncode == 1, process.stderr
    assert "Configuration error" in process.stderr
    assert variable in process.stderr
    assert "Traceback" not in process.stderr


# --- start-up: manage.py check

def test_defaults_pass_the_check(manage):
    process = manage("check")

    assert process.returncode == 0, process.stderr
    assert "no issues" in process.stdout


def test_default_database_is_a_sqlite_file_under_var_dir(manage, tmp_path):
    process = manage("check", DATABASE_URL=None)

    assert process.returncode == 0, process.stderr
    assert (tmp_path / "var").is_dir()


def test_short_but_consistent_intervals_pass_the_check(manage):
    process = manage(
        "check",
        HEARTBEAT_INTERVAL_SECONDS="0.5",
        WORKER_STALE_SECONDS="2",
        ORPHAN_TIMEOUT_SECONDS="4",
        ORPHAN_CHECK_INTERVAL_SECONDS="0.5",
        REQUEUE_AFTER_SECONDS="3",
        Q_TASK_TIMEOUT_SECONDS="60",
        Q_RETRY_SECONDS="90",
        Q_BROKER="ORM",
    )

    assert process.returncode == 0, process.stderr


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"ORPHAN_TIMEOUT_SECONDS": "-5"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"ORPHAN_TIMEOUT_SECONDS": "abc"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"ORPHAN_TIMEOUT_SECONDS": "0"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"ORPHAN_TIMEOUT_SECONDS": "nan"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_INTERVAL_SECONDS": "inf"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ({"WORKER_STALE_SECONDS": "5", "HEARTBEAT_INTERVAL_SECONDS": "10"}, "WORKER_STALE_SECONDS"),
        ({"WORKER_STALE_SECONDS": "10", "HEARTBEAT_INTERVAL_SECONDS": "10"}, "WORKER_STALE_SECONDS"),
        ({"ORPHAN_TIMEOUT_SECONDS": "30", "WORKER_STALE_SECONDS": "30"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"ORPHAN_TIMEOUT_SECONDS": "20"}, "ORPHAN_TIMEOUT_SECONDS"),
        ({"REQUEUE_AFTER_SECONDS": "10", "ORPHAN_CHECK_INTERVAL_SECONDS": "15"}, "REQUEUE_AFTER_SECONDS"),
        ({"Q_RETRY_SECONDS": "100", "Q_TASK_TIMEOUT_SECONDS": "100"}, "Q_RETRY_SECONDS"),
        ({"Q_RETRY_SECONDS": "50", "Q_TASK_TIMEOUT_SECONDS": "100"}, "Q_RETRY_SECONDS"),
        ({"Q_TASK_TIMEOUT_SECONDS": "1.5"}, "Q_TASK_TIMEOUT_SECONDS"),
        ({"Q_WORKERS": "0"}, "Q_WORKERS"),
        ({"Q_BROKER": "rabbit"}, "Q_BROKER"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "garbage"}, "DATABASE_URL"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"CHECKPOINT_MAX_AGE_DAYS": "0"}, "CHECKPOINT_MAX_AGE_DAYS"),
        ({"TRAINING_CHECKPOINT_EVERY_EPOCHS": "-1"}, "TRAINING_CHECKPOINT_EVERY_EPOCHS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"API_RATE_SUBMIT": "30 per minute"}, "API_RATE_SUBMIT"),
        ({"API_RATE_USER": "0/minute"}, "API_RATE_USER"),
        ({"TRAINING_MAX_PARAMETERS": "0"}, "TRAINING_MAX_PARAMETERS"),
        ({"SUPERVISE_MAX_SESSIONS": "0"}, "SUPERVISE_MAX_SESSIONS"),
    ],
    ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None,
)
def test_an_invalid_value_stops_the_check_naming_the_variable(manage, overrides, variable):
    process = manage("check", **overrides)

    assert_config_error(process, variable)


def test_the_message_shows_the_rejected_value(manage):
    process = manage("check", ORPHAN_TIMEOUT_SECONDS="-5")

    assert "-5" in process.stderr
    assert process.stderr.count("\n") == 1  # one line, no traceback


def test_a_url_in_an_error_does_not_show_its_password(manage):
    process = manage("check", DATABASE_URL="mysql://ops:hunter2-secret@db.example.com/resilient")

    assert_config_error(process, "DATABASE_URL")
    assert "hunter2" not in process.stderr and "mysql://ops:***@db.example.com/resilient" in process.stderr


def test_a_comparison_error_names_both_variables(manage):
    process = manage("check", WORKER_STALE_SECONDS="5", HEARTBEAT_INTERVAL_SECONDS="10")

    assert "WORKER_STALE_SECONDS" in process.stderr
    assert "HEARTBEAT_INTERVAL_SECONDS" in process.stderr


def test_a_project_command_also_stops_on_an_invalid_value(manage):
    process = manage("operations", "list", ORPHAN_TIMEOUT_SECONDS="-5")

    assert_config_error(process, "ORPHAN_TIMEOUT_SECONDS")
    assert process.stdout == ""


STRONG_KEY = "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PRODUCTION = {"DJANGO_PRODUCTION": "true", "DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_ALLOWED_HOSTS": "ops.example.com"}


def test_secret_key_given_in_production_passes(manage):
    process = manage("check", **PRODUCTION)

    assert process.returncode == 0, process.stderr


def test_production_passes_the_deployment_check_without_a_warning(manage):
    process = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION,
                     DJANGO_CSRF_TRUSTED_ORIGINS="https://ops.example.com")

    assert process.returncode == 0, process.stderr
    assert "no issues" in process.stdout and process.stderr == ""


def test_a_development_installation_warns_in_the_deployment_check(manage):
    process = manage("check", "--deploy", "--fail-level", "WARNING")

    assert process.returncode == 1
    assert "security.W004" in process.stderr and "SESSION_COOKIE_SECURE" in process.stderr


@pytest.mark.parametrize(
    ("overrides", "variable", "words"),
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY", "is required"),
        ({"DJANGO_SECRET_KEY": "x" * 64}, "DJANGO_SECRET_KEY", "too weak"),
        ({"DJANGO_SECRET_KEY": "short-but-varied-1234"}, "DJANGO_SECRET_KEY", "too weak"),
        ({"DJANGO_SECRET_KEY": "django-insecure-" + STRONG_KEY}, "DJANGO_SECRET_KEY", "too weak"),
        ({"DJANGO_ALLOWED_HOSTS": None}, "DJANGO_ALLOWED_HOSTS", "is required"),
        ({"DJANGO_DEBUG": "true"}, "DJANGO_DEBUG", "invalid"),
        ({"DJANGO_CSRF_TRUSTED_ORIGINS": "ops.example.com"}, "DJANGO_CSRF_TRUSTED_ORIGINS", "https://"),
    ],
    ids=["missing-key", "one-character", "short", "insecure-prefix", "no-hosts", "debug", "origin-without-scheme"],
)
def test_production_stops_on_a_missing_or_weak_value_naming_it(manage, overrides, variable, words):
    process = manage("check", **{**PRODUCTION, **overrides})

    assert_config_error(process, variable)
    assert words in process.stderr


# --- the secret key of an installation without DJANGO_SECRET_KEY

def key_of(manage) -> str:
    process = manage("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    assert process.returncode == 0, process.stderr
    return process.stdout.strip()


def test_an_installation_generates_its_key_once_readable_by_its_owner_only(manage, tmp_path):
    first = key_of(manage)
    key_file = tmp_path / "var" / "secret_key"

    assert key_file.read_text() == first and len(first) >= 50
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_of(manage) == first  # reused: sessions and queued tasks survive a restart
    assert first not in Path(settings.BASE_DIR, "config", "settings", "base.py").read_text()


def test_two_installations_have_different_keys(manage, tmp_path):
    other = tmp_path / "other"

    assert key_of(manage) != key_of(lambda *args, **overrides: manage(*args, VAR_DIR=str(other), **overrides))


def test_processes_starting_at_once_agree_on_one_key(tmp_path):
    path = tmp_path / "secret_key"

    keys = race(lambda _: secret_key.development_key(path), threads=16)

    assert len(set(keys)) == 1 and isinstance(keys[0], str), keys
    assert path.read_text() == keys[0]
    assert [found.name for found in tmp_path.iterdir()] == ["secret_key"]  # no candidate left behind


def test_a_key_file_others_can_read_is_refused_naming_the_file(manage, tmp_path):
    key_of(manage)
    key_file = tmp_path / "var" / "secret_key"
    key_file.chmod(0o644)

    process = manage("check")

    assert_config_error(process, "secret_key")
    assert "chmod 600" in process.stderr


def test_a_given_key_is_used_and_no_file_is_written(manage, tmp_path):
    assert key_of(lambda *args, **overrides: manage(*args, DJANGO_SECRET_KEY=STRONG_KEY, **overrides)) == STRONG_KEY
    assert not (tmp_path / "var" / "secret_key").exists()


# --- Env, with a dict for the environment

def test_str_returns_the_value_stripped_or_the_default():
    env = Env({"NAME": "  value  ", "EMPTY": "   "})

    assert env.str("NAME", "default") == "value"
    assert env.str("EMPTY", "default") == "default"
    assert env.str("MISSING", "default") == "default"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True), ("on", True),
                                               ("0", False), ("False", False), ("no", False), ("off", False)])
def test_bool_accepts_the_usual_spellings(raw, expected):
    assert Env({"FLAG": raw}).bool("FLAG", not expected) is expected


def test_bool_default_and_invalid():
    assert Env({}).bool("FLAG", True) is True
    with pytest.raises(ConfigError, match="FLAG"):
        Env({"FLAG": "maybe"}).bool("FLAG", False)


def test_int_parses_whole_numbers_and_enforces_the_minimum():
    env = Env({"N": " 12 ", "ZERO": "0", "NEG": "-3", "FRACTION": "1.5", "WORD": "ten"})

    assert env.int("N", 1) == 12
    assert env.int("ZERO", 5) == 0
    assert env.int("MISSING", 7) == 7
    with pytest.raises(ConfigError, match="ZERO.*at least 1"):
        env.int("ZERO", 5, minimum=1)
    with pytest.raises(ConfigError, match="NEG"):
        env.int("NEG", 5)
    with pytest.raises(ConfigError, match="FRACTION"):
        env.int("FRACTION", 5)
    with pytest.raises(ConfigError, match="WORD"):
        env.int("WORD", 5)


def test_seconds_accepts_positive_numbers_with_fractions():
    env = Env({"A": "0.25", "B": "30", "C": "1e3"})

    assert env.seconds("A", 1) == 0.25
    assert env.seconds("B", 1) == 30
    assert env.seconds("C", 1) == 1000
    assert env.seconds("MISSING", 10) == 10


@pytest.mark.parametrize("raw", ["-5", "0", "-0", "abc", "nan", "inf", "-inf", "1e999", "10s"])
def test_seconds_rejects_what_is_not_a_positive_finite_number(raw):
    with pytest.raises(ConfigError) as error:
        Env({"ORPHAN_TIMEOUT_SECONDS": raw}).seconds("ORPHAN_TIMEOUT_SECONDS", 60)

    assert "ORPHAN_TIMEOUT_SECONDS" in str(error.value)


def test_choice_is_case_insensitive_and_rejects_others():
    assert Env({"Q_BROKER": "Redis"}).choice("Q_BROKER", "orm", ("orm", "redis")) == "redis"
    assert Env({}).choice("Q_BROKER", "orm", ("orm", "redis")) == "orm"
    with pytest.raises(ConfigError) as error:
        Env({"Q_BROKER": "rabbit"}).choice("Q_BROKER", "orm", ("orm", "redis"))
    assert "Q_BROKER" in str(error.value)
    assert "orm, redis" in str(error.value)


def test_path_resolves_and_expands_the_home_folder(tmp_path):
    env = Env({"DIR": str(tmp_path / "a" / ".." / "b"), "HOME_DIR": "~/x"})

    assert env.path("DIR", Path("/default")) == tmp_path / "b"
    assert env.path("HOME_DIR", Path("/default")) == Path("~/x").expanduser().resolve()
    assert env.path("MISSING", Path("/default")) == Path("/default")


def test_list_splits_on_commas_and_drops_blanks():
    env = Env({"HOSTS": " a.example , b.example,, "})

    assert env.list("HOSTS", ["x"]) == ["a.example", "b.example"]
    assert env.list("MISSING", ["x"]) == ["x"]


def test_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("RESILIENT_TEST_VALUE", "3")

    assert Env().int("RESILIENT_TEST_VALUE", 0) == 3


def test_require_longer_names_both_variables():
    require_longer("WORKER_STALE_SECONDS", 30, "HEARTBEAT_INTERVAL_SECONDS", 10)
    with pytest.raises(ConfigError) as error:
        require_longer("WORKER_STALE_SECONDS", 10, "HEARTBEAT_INTERVAL_SECONDS", 10)

    assert "WORKER_STALE_SECONDS=10" in str(error.value)
    assert "HEARTBEAT_INTERVAL_SECONDS=10" in str(error.value)


def test_config_error_is_an_improperly_configured():
    assert issubclass(ConfigError, ImproperlyConfigured)
