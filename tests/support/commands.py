"""What the command tests check of a refused command: an error naming the option, readable, not a repr."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.management.base import CommandError


def assert_refused_by_name(run: Callable[[], object], named: str) -> str:
    """`run` raises CommandError whose message starts with `named:` and shows no serializer repr."""
    with pytest.raises(CommandError) as refused:
        run()
    message = str(refused.value)
    assert message.startswith(f"{named}: "), message
    assert "ErrorDetail" not in message and "{" not in message, message
    return message
