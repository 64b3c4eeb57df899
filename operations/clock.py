from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone


def db_now() -> datetime:
    """The database's clock.

    Workers on several machines write heartbeats that the control loop compares
    with "now": one clock for all of them (the database's) keeps a skewed
    machine clock from making a live worker look stale.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()
