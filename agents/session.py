"""An agent research session: design a configuration, train a model, backtest it, assess it.

The session is an operation of its own (backend-local: the control loop runs
it, in a thread of `supervise`), and its children are ordinary training and
backtest operations that the workers execute, each pointing at it
(`Operation.parent`). Phases: DESIGNING → TRAINING → BACKTESTING →
ASSESSING; a checkpoint is saved at every transition (the phase, the
configuration, the children's ids).

A resumed session continues at its saved phase and re-attaches to its
children, found by their parent: a running child is awaited, a completed one
used, a cancelled or failed one resumed. A child is started only when the
session has none of that kind, so none is ever started twice. Cancelling the
session cancels the child it waits for; a shutdown of the control loop
leaves the child running on its worker, to be awaited after the resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from django.db import transaction

from agents.design import OUT_OF_SAMPLE, SearchSpaceExhausted, Thresholds, assess, propose
from agents.services import assessment_record, earlier_assessments
from backtesting.services import backtest_start
from checkpoints.models import Checkpoint, CheckpointType
from operations.models import TERMINAL_STATUSES, Operation, OperationStatus
from operations.services.lifecycle import operation_cancel
from runtime.context import OperationCancelled, RunContext
from runtime.resume import operation_resume
from training.params import DEFAULT_FEATURES
from training.services import training_start

logger = logging.getLogger(__name__)

S = OperationStatus
PHASES = ("DESIGNING", "TRAINING", "BACKTESTING", "ASSESSING")
POLL_SECONDS = 0.5  # how often a session looks at the child it waits for


class ChildFailed(RuntimeError):
    pass


class SessionRunner:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.params = context.params
        self.session = Operation.objects.get(pk=context.operation_id)
        saved = context.resume_from.state if context.resume_from is not None else {}
        self.state: dict[str, Any] = {
            "phase": saved.get("phase", PHASES[0]),
            "configuration": saved.get("configuration"),
            "children": dict(saved.get("children", {})),
        }

    # --- the phases
    def run(self) -> dict[str, Any]:
        phases = {"DESIGNING": self._design, "TRAINING": self._train, "BACKTESTING": self._backtest,
                  "ASSESSING": self._assess}
        while True:
            self.context.raise_if_stopping()
            self._report()
            result = phases[self.state["phase"]]()
            if result is not None:  # assessed
                return result

    def _design(self) -> None:
        """Propose, and save the proposal as this session's, while the other running sessions wait: the next one
        to design sees it taken. (SQLite takes its one write lock at the transaction's start.)"""
        with transaction.atomic():
            list(Operation.objects.select_for_update().filter(operation_type="agent_research", status=S.RUNNING)
                 .order_by("pk").values_list("pk", flat=True))
            try:
                configuration = propose(self.params["seed"], earlier_assessments(self.session.owner_id),
                                        taken=self._taken())
            except SearchSpaceExhausted as exc:
                raise ValueError(str(exc)) from None
            self.state["configuration"] = configuration
            self._advance("TRAINING")

    def _train(self) -> None:
        configuration = self.state["configuration"]
        child = self._child("training", lambda: _start_training(self.session, self.params, configuration))
        self._await(child)
        self._advance("BACKTESTING")

    def _backtest(self) -> None:
        configuration, training = self.state["configuration"], self.state["children"]["training"]
        child = self._child("backtesting",
                            lambda: _start_backtest(self.session, self.params, configuration, training))
        self._await(child)
        self._advance("ASSESSING")

    def _assess(self) -> dict[str, Any]:
        backtest = Operation.objects.get(pk=self.state["children"]["backtesting"])
        metrics = backtest.result["metrics"]
        verdict = assess(metrics, Thresholds(**self.params.get("thresholds", {})))
        assessment = assessment_record(session=self.session, configuration=self.state["configuration"],
                                       metrics=metrics, verdict=verdict)
        return {
            "configuration": assessment.configuration,
            "children": self.state["children"],
            "verdict": assessment.verdict,
            "score": assessment.score,
            "reasons": assessment.reasons,
            "metrics": assessment.metrics,
        }

    # --- children
    def _child(self, kind: str, start: Callable[[], Operation]) -> str:
        """The session's child of this kind: the one it already has (re-attached), or a new one."""
        existing = Operation.objects.filter(parent=self.session, operation_type=kind).order_by("created_at").first()
        if existing is None:
            child = start().pk
            logger.info("Session %s started its %s child %s", self.session.pk, kind, child)
        else:
            child = existing.pk
            if existing.status in (S.CANCELLED, S.FAILED):
                if not Checkpoint.objects.filter(pk=child).exists():
                    raise ChildFailed(f"the {kind} child {child} ended {existing.status} without a checkpoint to "
                                      f"resume from ({existing.error_message or 'no message'})")
                operation_resume(operation_id=child, actor=f"session:{self.session.pk}")
                logger.info("Session %s resumed its %s child %s", self.session.pk, kind, child)
        if self.state["children"].get(kind) != child:
            self.state["children"][kind] = child
            self._save()
        return child

    def _await(self, child: str) -> Operation:
        """Wait for the child to complete; a child that fails or is cancelled fails the session (whose resume
        resumes the child), unless the restart policy is to resume the child automatically."""
        while True:
            try:
                self.context.raise_if_stopping()
            except OperationCancelled:
                self._cancel(child)
                raise
            operation = Operation.objects.get(pk=child)
            if operation.status == S.COMPLETED:
                return operation
            if operation.status in TERMINAL_STATUSES and operation.restart_due_at is None:  # (else: it comes back)
                raise ChildFailed(f"the {operation.operation_type} child {child} ended {operation.status}: "
                                  f"{operation.error_message or 'no message'}")
            self._report(operation)
            self.context.cancel_requested.wait(POLL_SECONDS)

    def _cancel(self, child: str) -> None:
        try:
            operation_cancel(operation_id=child, actor=f"session:{self.session.pk}")
        except Exception as exc:  # it ended meanwhile: nothing to cancel
            logger.info("Session %s: its child %s was not cancelled: %s", self.session.pk, child, exc)

    def _taken(self) -> list[dict[str, Any]]:
        """The configurations of the owner's other sessions that may still be assessed: every one with a
        checkpoint (running, or cancelled or failed and resumable; a completed session's checkpoint is deleted)."""
        states = Checkpoint.objects.filter(
            operation__operation_type="agent_research", operation__owner_id=self.session.owner_id
        ).exclude(pk=self.session.pk).values_list("state", flat=True)
        return [state["configuration"] for state in states if state.get("configuration")]

    # --- checkpoints and progress
    def _advance(self, phase: str) -> None:
        self.state["phase"] = phase
        self._save()

    def _save(self) -> None:
        self.context.save_checkpoint(CheckpointType.PERIODIC, dict(self.state), {})

    def checkpoint_payload(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        return dict(self.state), {}

    def _report(self, child: Operation | None = None) -> None:
        phase = self.state["phase"]
        message = phase if child is None else (f"{phase}: {child.operation_type} child {child.pk} {child.status} "
                                               f"{child.progress_message or ''}").strip()
        self.context.report_progress(current=PHASES.index(phase), total=len(PHASES), unit="phases", message=message)


def _start_training(session: Operation, params: dict[str, Any], configuration: dict[str, Any]) -> Operation:
    data = {
        "symbol": params["symbol"], "timeframe": params["timeframe"], "start": params.get("start"),
        "end": params.get("end"), "epochs": configuration["epochs"], "hidden_sizes": configuration["hidden_sizes"],
        "learning_rate": configuration["learning_rate"], "seed": params["seed"],
        "validation_split": OUT_OF_SAMPLE,
        "features": {**DEFAULT_FEATURES, "sma_windows": configuration["sma_windows"],
                     "rsi_window": configuration["rsi_window"]},
    }
    return training_start(data=data, actor=f"session:{session.pk}", owner=session.owner, parent=session)


def _start_backtest(session: Operation, params: dict[str, Any], configuration: dict[str, Any],
                    training: str) -> Operation:
    """The model's backtest over its validation period, from its first whole day (a backtest starts on a date):
    no bar it was trained on."""
    first = pd.Timestamp(Operation.objects.get(pk=training).result["validation_start"])
    first_day = first.normalize() if first == first.normalize() else first.normalize() + pd.Timedelta(days=1)
    data = {
        "symbol": params["symbol"], "timeframe": params["timeframe"], "start": first_day.date().isoformat(),
        "end": params.get("end"), "strategy": "model", "model": training,
        "strategy_params": {"threshold": configuration["threshold"], "allow_short": True},
    }
    return backtest_start(data=data, actor=f"session:{session.pk}", owner=session.owner, parent=session)
