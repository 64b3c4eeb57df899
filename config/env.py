"""Strict parsing of settings from the environment.

Every value is read through one helper that names the variable in its error,
so a typo in a deployment stops start-up with a message instead of running
with a silently wrong interval.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


class ConfigError(ImproperlyConfigured):
    """A setting read from the environment is invalid; the message names it."""


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise ConfigError(
                f"{name}={value!r} is invalid: expected one of {', '.join(choices)}."
            )
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is invalid: expected true or false.")

    def int(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is invalid: expected a whole number.") from None
        if number < minimum:
            raise ConfigError(f"{name}={number} is invalid: it must be at least {minimum}.")
        return number

    def seconds(self, name: str, default: float) -> float:
        """A positive duration; fractions are allowed so tests can run with short intervals."""
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is invalid: expected a number of seconds.") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}={value!r} is invalid: expected a finite number.")
        if number <= 0:
            raise ConfigError(f"{name}={value} is invalid: it must be a positive number of seconds.")
        return number

    def path(self, name: str, default: Path) -> Path:
        value = self._raw(name)
        return default if value is None else Path(value).expanduser().resolve()

    def rate(self, name: str, default: str) -> str:
        """A request rate as the API's throttles take it: <number>/<second|minute|hour|day>."""
        value = self.str(name, default)
        if not re.fullmatch(r"[1-9][0-9]{0,8}/(second|minute|hour|day)", value):
            raise ConfigError(f"{name}={value!r} is invalid: expected a rate such as 60/minute "
                              "(a whole number per second, minute, hour or day).")
        return value

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self._raw(name)
        if value is None:
            return default
        return [item.strip() for item in value.split(",") if item.strip()]


def require_longer(longer: str, longer_value: float, shorter: str, shorter_value: float) -> None:
    """A timeout must exceed the interval that checks it, or it fires spuriously."""
    if longer_value <= shorter_value:
        raise ConfigError(
            f"{longer}={longer_value:g} is invalid: it must be longer than "
            f"{shorter}={shorter_value:g}."
        )


def without_password(url: str) -> str:
    """A URL as an error message may show it: its password (user:password@) replaced by ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)
