"""Where an operation's files are: found from its id under a configured folder, never from data.

A result's path fields (`model_path`, `equity_curve_path`) are there for people
to read. Code that opens an operation's files asks this module instead, so
that a forged or stale result cannot point it at another file.
"""

from __future__ import annotations

from pathlib import Path

from operations.ids import parse_operation_id


def artifact_folder(base: Path | str, operation_id: str) -> Path:
    """`base/<operation_id>`, for a well-formed id only, and checked to stay inside `base`.

    Raises InvalidIdentifier (a ValueError) for anything that is not an operation id.
    """
    parse_operation_id(operation_id)
    root = Path(base).resolve()
    folder = (root / operation_id).resolve()
    if folder.parent != root:  # a link under base pointing elsewhere
        raise ValueError(f"the folder of {operation_id} leaves {root}")
    return folder


def artifact_file(base: Path | str, operation_id: str, name: str) -> Path:
    """One file of an operation's folder; `name` is a plain file name chosen by the code."""
    if name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"{name!r} is not a plain file name")
    return artifact_folder(base, operation_id) / name
