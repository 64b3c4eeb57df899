"""What the command tests share: a command's output, and what they check of a refused command (an error naming the
option, readable, not a repr)."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def assert_refused_by_name(run: Callable[[], object], named: str) -> str:
    """`run` raises CommandError whose message starts with `named:` and shows no serializer repr."""
    with pytest.raises(CommandError) as refused:
        run()
    message = str(refused.value)
    assert message.startswith(f"{named}: "), message
    assert "ErrorDetail" not in message and "{" not in message, message
    return message


def command_output(*args: str) -> str:
    """What `manage.py <args>` writes to its standard output, run in-process."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()
