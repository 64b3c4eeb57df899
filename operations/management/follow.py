"""`--follow`: stream an operation's progress until it ends; Ctrl+C cancels it and says how to resume."""

from __future__ import annotations

import signal
import sys
import time

from django.core.management.base import BaseCommand
from django.db import connection
from tqdm import tqdm

from operations import selectors
from operations.exceptions import OperationNotCancellable
from operations.management.results import resume_hint
from operations.models import TERMINAL_STATUSES, Operation
from operations.restarts import restart_summary
from operations.services.lifecycle import operation_cancel


def follow(command: BaseCommand, operation_id: str, *, quiet: bool = False, poll_seconds: float = 0.5) -> Operation:
    """Show progress (a bar on a terminal, lines otherwise) until the operation has ended: terminal, with no
    automatic resume planned (a run stopped by a deploy is followed on to its end). The caller reports how it
    ended (results.outcome_lines).

    Ctrl+C requests a cancel and waits for the worker's cancellation checkpoint; a second Ctrl+C stops waiting.
    """
    # Ctrl+C means cancel, even where the shell started this command with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _watch(command, operation_id, quiet=quiet, poll_seconds=poll_seconds)
    except KeyboardInterrupt:
        _drop_connection()  # Ctrl+C may have landed in the middle of a query
    if not quiet:
        command.stdout.write(f"\nCancelling {operation_id}; waiting for its checkpoint (Ctrl+C again to stop waiting)...")
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cancel request be written
    try:
        operation_cancel(operation_id=operation_id, actor="cli")
    except OperationNotCancellable:
        pass
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    try:
        return _watch(command, operation_id, quiet=True, poll_seconds=poll_seconds)
    except KeyboardInterrupt:
        _drop_connection()
        command.stdout.write(f"Stopped waiting. The operation is being cancelled; then: {resume_hint(operation_id)}")
        return selectors.operation_get(operation_id=operation_id)


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception:  # a connection interrupted mid-query may not close cleanly; a new one is opened
        connection.connection = None


def _watch(command: BaseCommand, operation_id: str, *, quiet: bool, poll_seconds: float) -> Operation:
    bar = None
    last_line = None
    try:
        while True:
            operation = selectors.operation_get(operation_id=operation_id)
            planned = operation.restart_due_at is not None  # ended, but the restart policy resumes it: go on
            message = restart_summary(operation)["text"] if planned else operation.progress_message
            if not quiet:
                if sys.stderr.isatty():
                    bar = bar or tqdm(total=100.0, unit="%", bar_format="{l_bar}{bar}| {n:.1f}% [{elapsed}<{remaining}]")
                    bar.n = round(operation.progress_percent, 1)
                    bar.set_description_str(f"{operation.status} {message}"[:60])
                    bar.refresh()
                else:
                    line = f"{operation.status} {operation.progress_percent:.1f}% {message}".strip()
                    if line != last_line:
                        command.stdout.write(line)
                        last_line = line
            if operation.status in TERMINAL_STATUSES and not planned:
                return operation
            time.sleep(poll_seconds)
    finally:
        if bar is not None:
            bar.close()
