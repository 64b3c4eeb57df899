"""What the project's sub-command CLIs (`operations`, `checkpoints`) share."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from operations.exceptions import ServiceError


class ActionCommand(BaseCommand):
    """Dispatches `manage.py <command> <action>` to `handle_<action>`; a service's refusal or an
    unreachable database is a one-line error (exit 1), never a traceback."""

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        except DatabaseError as exc:
            raise CommandError(f"The database cannot be reached or is not migrated: {exc}".strip()) from None

    def write_json(self, body: Any) -> None:
        self.stdout.write(json.dumps(body, indent=2, default=str))
