"""django-q2's task results: the latest Q_RESULTS_KEPT kept, the older ones removed by the cluster's monitor.

django-q2 prunes its results itself when `save_limit` is above 0, but it does so by reading (and locking) every
kept result at each task it saves: with a thousand kept, about 25 ms of the monitor's CPU a task, and as much
again of the database's. Our settings turn that off (`save_limit` 0) and the monitor removes the older results
here, in one statement every PRUNE_EVERY tasks: at most Q_RESULTS_KEPT + PRUNE_EVERY are kept.
"""

from __future__ import annotations

import itertools
import logging

from django.conf import settings
from django_q.models import Success

logger = logging.getLogger(__name__)

PRUNE_EVERY = 100

_saved = itertools.count(1)  # results this process (the monitor) has saved


def prune_task_results(kept: int) -> int:
    """Remove the successful task results older than the latest `kept`; return how many went (one DELETE)."""
    latest = Success.objects.order_by("-stopped").values("pk")[:kept]
    deleted, _ = Success.objects.exclude(pk__in=latest).delete()
    return deleted


def on_result_saved(**_kwargs) -> None:
    """django-q2's post_execute, sent by the monitor once it has saved a task's result."""
    if next(_saved) % PRUNE_EVERY:
        return
    try:
        prune_task_results(settings.Q_RESULTS_KEPT)
    except Exception:  # an error here would end the monitor: the results wait for the next try
        logger.exception("Could not remove the older task results")
