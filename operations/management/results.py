"""What the commands print of an operation's outcome: its result in figures, why it ended, and how to resume it
wherever it can be (`operations status`, the end of `--follow`, `operations cancel`, `checkpoints show`)."""

from __future__ import annotations

from operations import registry
from operations.models import TERMINAL_STATUSES, Operation, OperationStatus
from operations.summaries import Figure


def resume_hint(operation_id: str) -> str:
    return f"python manage.py operations resume {operation_id}"


def result_lines(operation: Operation) -> list[str]:
    """`Result:` and a line per figure; none without a result of the shape its type writes."""
    return figure_lines("Result:", registry.result_summary(operation.operation_type, operation.result,
                                                           operation.params))


def figure_lines(title: str, figures: list[Figure]) -> list[str]:
    """The title and a line per figure, labels aligned (a list, such as a session's reasons, a line per item)."""
    if not figures:
        return []
    width = max(len(figure.label) for figure in figures) + 1
    lines = [title]
    for figure in figures:
        if isinstance(figure.value, list):
            lines.append(f"  {figure.label}:")
            lines += [f"    {item}" for item in figure.value]
        else:
            lines.append(f"  {figure.label + ':':<{width}} {figure.text}")
    return lines


def outcome_lines(operation: Operation) -> list[str]:
    """How an operation ended, as the last lines of a command that waited for it: its status (and why, where a
    cancel came too late or a run failed), its result, or the command that resumes it."""
    status = operation.status
    if status not in TERMINAL_STATUSES:  # a second Ctrl+C stopped the wait
        requested = " (a cancel is requested: it stops at its next checkpoint)" if operation.cancel_requested_at else ""
        return [f"{operation.operation_id} {status}{requested}"]
    if status == OperationStatus.COMPLETED:
        first = f"{operation.operation_id} COMPLETED"
        if operation.cancel_requested_at is not None:
            first += " (it completed before its worker acted on the cancel)"
        return [first, *result_lines(operation)]
    checkpoint = getattr(operation, "checkpoint", None)  # the checkpoint store's reverse relation
    where = f" at {checkpoint.position_text}" if checkpoint is not None and checkpoint.position_text else ""
    first = f"{operation.operation_id} {status}{where}"
    if operation.error_message:
        first += f": {operation.error_message}"
    lines = [first]
    if operation.resumable:
        lines.append(f"Resume with: {resume_hint(operation.operation_id)}")
    return lines
