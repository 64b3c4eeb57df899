"""Forwarding module, kept for one release only: delete it (and this package) in the release after the move.

The task that executes operations moved from here to `runtime.tasks.run_operation`. Tasks queued before
the upgrade still name `operations.runtime.tasks.run_operation`, and django-q2 imports that path when it
delivers them; this module takes them and runs what is registered now for their operation's type. The core
imports no app above it, so the call goes through the registry the apps above fill in, as the broker would.
"""

from __future__ import annotations

from typing import Any

from operations import registry


def run_operation(operation_id: str) -> Any:
    return registry.run_task(operation_id)
