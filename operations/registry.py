"""What the operations core knows of the layers above it: a registry they fill in.

The core imports no other app (the import contract in pyproject.toml holds it to that). Each domain app
registers, in its `AppConfig.ready()`, the django-q2 task that executes its operation type (the runtime's, as a
rule) and the runner that task builds; the checkpoint store registers how to tell whether an operation has a
checkpoint; the layers above register the periodic maintenance (cleanup) that the control loop runs for them,
and what an operation's admin page shows of its domain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError
from django.utils.html import format_html
from django.utils.module_loading import import_string

from operations.exceptions import ExecutorNotRegistered
from operations.ids import parse_operation_id

logger = logging.getLogger(__name__)


# Errors a restart can cure, for a type to mark transient (the restart policy resumes a run they end): the
# database gone or restarting, and memory exhausted.
DATABASE_AND_MEMORY_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, MemoryError)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Executor:
    operation_type: str
    task: str  # dotted path of the django-q2 task, called with the operation id
    runner: str | None = None  # dotted path of the runner class the runtime's task executes
    transient_errors: tuple[type[BaseException], ...] = ()
    restart_from_scratch: Callable[[], bool] = _never


_executors: dict[str, Executor] = {}
_checkpoint_probe: Callable[[str], bool] | None = None


def register_executor(
    operation_type: str, task: str, *, runner: str | None = None,
    transient_errors: tuple[type[BaseException], ...] = (), restart_from_scratch: Callable[[], bool] = _never,
) -> None:
    """Say how an operation type is executed: by the runtime's task (`runtime.tasks.RUN_OPERATION_TASK`) and
    the domain's runner (the usual case), or by a task of its own.

    For the restart policy (operations/restarts.py): the errors that end a run of this type as transient (an
    automatic resume may cure them; any other error is final), and whether a run that ended without any
    checkpoint may be restarted from the beginning (read when it is due, so a setting can decide).
    """
    _executors[operation_type] = Executor(
        operation_type=operation_type, task=task, runner=runner, transient_errors=tuple(transient_errors),
        restart_from_scratch=restart_from_scratch,
    )


def is_transient(operation_type: str, error: BaseException) -> bool:
    """Whether the type marks this error as one a restart can cure."""
    executor = _executors.get(operation_type)
    return executor is not None and isinstance(error, executor.transient_errors)


def may_restart_from_scratch(operation_type: str) -> bool:
    executor = _executors.get(operation_type)
    return executor is not None and executor.restart_from_scratch()


def unregister_executor(operation_type: str) -> None:
    _executors.pop(operation_type, None)


def get_executor(operation_type: str) -> Executor | None:
    return _executors.get(operation_type)


def executable_types() -> list[str]:
    """The operation types with an executor registered."""
    return list(_executors)


def enqueue_operation(operation_id: str, operation_type: str) -> str:
    """Hand one operation to the broker; return the django-q2 task id.

    Delivery is at least once: the executor begins with a claim, so a repeat
    of this call (re-enqueue of a lost message) is harmless.
    """
    from django_q.tasks import async_task

    executor = get_executor(operation_type)
    if executor is None:
        raise ExecutorNotRegistered(operation_type)
    return async_task(executor.task, operation_id, task_name=operation_id, group=operation_type, broker=_broker())


_redis_broker = None


def _broker():
    """The broker to queue on: None lets django-q2 make one. Its Redis broker would open a new connection for
    each task (a connect and about 3 ms of CPU a request); that one is made once per process (redis-py's pool
    is safe across threads and makes new connections after a fork). The ORM broker is Django's connection."""
    global _redis_broker
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf

    if Conf.ORM or not Conf.REDIS:
        return None
    if _redis_broker is None or _redis_broker.list_key != f"django_q:{Conf.CLUSTER_NAME}:q":
        broker = get_broker()
        _redis_broker = broker if isinstance(broker, Redis) else None
    return _redis_broker


def run_task(operation_id: str) -> object:
    """Run, in this process, the task registered for the operation's type, as a worker handed it by the broker
    would (a task queued under a path that moved lands here through its forwarding module)."""
    operation_type = parse_operation_id(operation_id)
    executor = get_executor(operation_type)
    if executor is None:
        raise ExecutorNotRegistered(operation_type)
    return import_string(executor.task)(operation_id)


@dataclass(frozen=True)
class MaintenanceTask:
    """Periodic work of a layer above the core that the control loop runs for it."""

    name: str
    interval_seconds: Callable[[], float]  # read on each pass, so settings changes apply
    run: Callable[[], object]


_maintenance: dict[str, MaintenanceTask] = {}


def register_maintenance(name: str, interval_seconds: Callable[[], float], run: Callable[[], object]) -> None:
    _maintenance[name] = MaintenanceTask(name=name, interval_seconds=interval_seconds, run=run)


def maintenance_tasks() -> list[MaintenanceTask]:
    return list(_maintenance.values())


def register_checkpoint_probe(probe: Callable[[str], bool]) -> None:
    global _checkpoint_probe
    _checkpoint_probe = probe


def has_checkpoint(operation_id: str) -> bool:
    return bool(_checkpoint_probe and _checkpoint_probe(operation_id))


# --- what an operation's admin page shows of its domain (charts, a session's phase), and its result's own pages
@dataclass(frozen=True)
class DetailPanel:
    panel: Callable[[object, dict], dict]  # (operation, the keys of its result it reads) -> template context
    reads: tuple[str, ...]  # the top-level keys of the result it reads: all the page loads of a result


_detail_panels: dict[str, DetailPanel] = {}


def register_detail_panel(operation_type: str, panel: Callable[[object, dict], dict], *,
                          reads: tuple[str, ...] = ()) -> None:
    """`panel(operation, result)` returns template context for the operation's admin page: `charts` (chart
    specs, operations/charts.py), optionally `panel_html` (more markup below them). `result` holds only the
    keys `reads` names ({} while there is no result): the page never loads a whole result, whose trades or
    history may be megabytes."""
    _detail_panels[operation_type] = DetailPanel(panel=panel, reads=tuple(reads))


def detail_reads(operation_type: str) -> tuple[str, ...]:
    """The keys of a result its admin page loads: those its panel and its summary read."""
    panel = _detail_panels.get(operation_type)
    summary = _result_summaries.get(operation_type)
    return tuple(sorted({*(panel.reads if panel else ()), *(summary.reads if summary else ())}))


def detail_panel(operation, result: dict) -> dict:
    """The panel of the operation's type; a result of another shape (forged, or from an older version) gives a
    note instead, and the page still links to the raw result."""
    panel = _detail_panels.get(operation.operation_type)
    if panel is None:
        return {}
    try:
        return panel.panel(operation, result)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        logger.warning("The admin panel of %s could not read its result: %r", operation.pk, exc)
        return {"panel_html": format_html(
            '<p class="errornote">This {} result does not have the shape this version writes ({}): no chart; '
            "see the raw result.</p>", operation.operation_type, type(exc).__name__,
        )}


class ResultPageError(ValueError):
    """A request a result page cannot answer (a page past the last, a column it does not sort by): the page
    answers 400 with this message, which names the parameter and what it accepts."""


@dataclass(frozen=True)
class ResultPage:
    """A page of its own for a part of a result too large for the operation's page (a backtest's trades),
    under the operation's admin URL (`.../<id>/result/<slug>/`), behind the admin's permissions."""

    slug: str
    title: str  # its link on the operation's page
    template: str  # extends admin/operations/operation/result_page.html
    context: Callable[[object, Mapping[str, str]], dict]  # (operation, the query string) -> template context


_result_pages: dict[str, dict[str, ResultPage]] = {}


def register_result_page(operation_type: str, slug: str, *, title: str, template: str,
                         context: Callable[[object, Mapping[str, str]], dict]) -> None:
    """`context(operation, query)` reads what it shows itself (from the database, never the whole result) and
    raises ResultPageError for a query it cannot answer."""
    _result_pages.setdefault(operation_type, {})[slug] = ResultPage(slug=slug, title=title, template=template,
                                                                    context=context)


def result_pages(operation_type: str) -> list[ResultPage]:
    return list(_result_pages.get(operation_type, {}).values())


def result_page(operation_type: str, slug: str) -> ResultPage | None:
    return _result_pages.get(operation_type, {}).get(slug)


# --- an operation's result in a few figures (operations/summaries.py): the API's lists, the CLI, the admin
@dataclass(frozen=True)
class ResultSummary:
    summarize: Callable[[dict, dict], list]  # (result, params) -> the headline figures (summaries.Figure)
    reads: tuple[str, ...]  # the top-level keys of the result it reads: all a page needs to load of a result


_result_summaries: dict[str, ResultSummary] = {}


def register_result_summary(operation_type: str, summarize: Callable[[dict, dict], list], *,
                            reads: tuple[str, ...]) -> None:
    """`summarize(result, params)` returns a completed result's headline figures, reading only the keys `reads`
    names (an admin page loads those, never a whole result). Their values depend on the result alone: `params`
    only adds to how they read ("30 of 30 epochs"), so the values are kept beside the result when it is written
    (Operation.summary, what lists show)."""
    _result_summaries[operation_type] = ResultSummary(summarize=summarize, reads=tuple(reads))


def result_summary(operation_type: str, result: object, params: object = None) -> list:
    """The figures of a result; none while there is no result, and none for a result of another shape (forged,
    or from an older version): whoever shows them then shows the raw result."""
    summary = _result_summaries.get(operation_type)
    if summary is None or not isinstance(result, dict) or not result:
        return []
    try:
        return summary.summarize(result, params if isinstance(params, dict) else {})
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        logger.warning("A %s result could not be summarised: %r", operation_type, exc)
        return []


_checkpoint_summaries: dict[str, Callable[[dict, dict], list]] = {}


def register_checkpoint_summary(operation_type: str, summarize: Callable[[dict, dict], list]) -> None:
    """`summarize(state, params)` returns the figures of a checkpoint's state (a training's metrics so far)."""
    _checkpoint_summaries[operation_type] = summarize


def checkpoint_summary(operation_type: str, state: object, params: object = None) -> list:
    """The figures of a checkpoint's state; none for a type that registers none, or a state of another shape."""
    summarize = _checkpoint_summaries.get(operation_type)
    if summarize is None or not isinstance(state, dict):
        return []
    try:
        return summarize(state, params if isinstance(params, dict) else {})
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        logger.warning("A %s checkpoint could not be summarised: %r", operation_type, exc)
        return []


# --- the files the layers above keep for an operation, removed when it is purged (operations/services/retention.py)
_artifact_removers: dict[str, Callable[[list[str]], object]] = {}


def register_artifact_remover(name: str, remove: Callable[[list[str]], object]) -> None:
    """`remove(operation_ids)` deletes what this layer keeps for those operations (files, rows of its own)."""
    _artifact_removers[name] = remove


def remove_artifacts(operation_ids: list[str]) -> None:
    for remove in _artifact_removers.values():
        remove(operation_ids)
