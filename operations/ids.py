"""Operation and worker identifiers, validated by a strict pattern wherever they enter."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from datetime import timezone as dt_timezone

from django.utils import timezone

OPERATION_TYPES = ("training", "backtesting", "agent_research")
OPERATION_ID_PATTERN = r"op_(?:training|backtesting|agent_research)_\d{8}_\d{6}_[0-9a-f]{8}"
OPERATION_ID_RE = re.compile(
    r"^op_(?P<type>training|backtesting|agent_research)_(?P<date>\d{8})_(?P<time>\d{6})_[0-9a-f]{8}\Z"
)
OPERATION_ID_FORMAT = "op_<type>_<YYYYMMDD>_<HHMMSS>_<8 hex>"

# <host>:<cluster>:<pid>; host names may hold dots and dashes, never colons.
HOST_PATTERN = r"[A-Za-z0-9._-]{1,200}"
HOST_RE = re.compile(rf"^{HOST_PATTERN}\Z")
WORKER_ID_RE = re.compile(rf"^(?P<host>{HOST_PATTERN}):(?P<cluster>[A-Za-z0-9._-]{{1,100}}):(?P<pid>\d{{1,10}})\Z")
WORKER_ID_FORMAT = "<host>:<cluster>:<pid>"


class InvalidIdentifier(ValueError):
    pass


def new_operation_id(operation_type: str, now: datetime | None = None) -> str:
    if operation_type not in OPERATION_TYPES:
        raise InvalidIdentifier(f"unknown operation type {operation_type!r}")
    moment = (now or timezone.now()).astimezone(dt_timezone.utc)
    return f"op_{operation_type}_{moment:%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def parse_operation_id(value: object) -> str:
    """Return the operation type an id names, or raise InvalidIdentifier."""
    match = OPERATION_ID_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidIdentifier(f"{value!r} is not an operation id ({OPERATION_ID_FORMAT})")
    try:
        datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S")
    except ValueError:
        raise InvalidIdentifier(f"{value!r} is not an operation id: its date is impossible") from None
    return match["type"]


def is_operation_id(value: object) -> bool:
    try:
        parse_operation_id(value)
    except InvalidIdentifier:
        return False
    return True


def parse_worker_id(value: object) -> tuple[str, str, int]:
    match = WORKER_ID_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidIdentifier(f"{value!r} is not a worker id ({WORKER_ID_FORMAT})")
    return match["host"], match["cluster"], int(match["pid"])
