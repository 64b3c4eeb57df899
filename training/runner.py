"""A training run as the runtime executes it, resumable at any epoch boundary with identical results.

Determinism: the model's initial weights come from the seed; mini-batch order
from a seeded torch.Generator; dropout from torch's global generator. Both
generators' states are part of every checkpoint, with the model, optimizer,
scheduler and best model, all taken at the end of an epoch. A run cancelled
mid-epoch is checkpointed at the end of the last complete epoch and, resumed,
replays the interrupted epoch exactly.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from typing import Any

import torch
from django.conf import settings
from torch import nn

from checkpoints.models import CheckpointType
from checkpoints.policy import policy_for
from marketdata.series import load_bars
from runtime.context import RunContext
from training.artifacts import model_files, model_folder
from training.features import MIN_SAMPLES, FeatureSpec, fit, labels, raw_features, standardise
from training.model import DirectionClassifier

ARTIFACTS = ("model.pt", "optimizer.pt", "scheduler.pt", "best_model.pt", "rng.pt")


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _clone(state: Any) -> Any:
    return copy.deepcopy(state)


class TrainingRunner:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        p = self.params = context.params
        bars = load_bars(p["symbol"], p["timeframe"], start=p.get("start"), end=p.get("end"))
        spec = FeatureSpec.from_dict(p.get("features") or {})  # the usual windows for a request made without them
        features, target = raw_features(bars, spec), labels(bars)
        usable = features.notna().all(axis=1) & target.notna()
        features, target = features[usable], target[usable]
        if len(features) < MIN_SAMPLES:
            raise ValueError(f"too little data to train: {len(features)} usable bars after the feature warm-up")
        split = int(len(features) * (1 - p["validation_split"]))
        self.validation_start = bars["timestamp"][features.index[split]].isoformat()  # the first bar not trained on
        self.spec = fit(spec, features.iloc[:split])
        x = torch.from_numpy(standardise(self.spec, features))
        y = torch.from_numpy(target.to_numpy(dtype="int64"))
        self.x_train, self.y_train, self.x_val, self.y_val = x[:split], y[:split], x[split:], y[split:]

        torch.manual_seed(p["seed"])
        self.model = DirectionClassifier(x.shape[1], list(p["hidden_sizes"]))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=p["learning_rate"])
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=p["epochs"])
        self.generator = torch.Generator().manual_seed(p["seed"])
        self.loss_fn = nn.CrossEntropyLoss()

        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.best_state = _clone(self.model.state_dict())
        self.train_seconds = 0.0
        self.policy = policy_for(p, settings.TRAINING_CHECKPOINT_EVERY_EPOCHS)
        self._snapshot: dict[str, Any] | None = None
        if context.resume_from is not None:
            self._restore(context.resume_from.state, context.resume_from.artifacts)

    # --- the loop
    def run(self) -> dict[str, Any]:
        epochs = self.params["epochs"]
        batch_size = self.params["batch_size"]
        samples = len(self.x_train)
        batches = math.ceil(samples / batch_size)
        started = time.monotonic()
        checkpoint_seconds_before = self.context.checkpoint_seconds
        while self.epoch < epochs:
            epoch = self.epoch + 1
            self.model.train()
            order = torch.randperm(samples, generator=self.generator)
            total_loss, correct = 0.0, 0
            for index, begin in enumerate(range(0, samples, batch_size)):
                self.context.raise_if_stopping()
                batch = order[begin : begin + batch_size]
                logits = self.model(self.x_train[batch])
                loss = self.loss_fn(logits, self.y_train[batch])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                total_loss += loss.item() * len(batch)
                correct += int((logits.argmax(dim=1) == self.y_train[batch]).sum())
                self.context.report_progress(
                    current=self.epoch,
                    total=epochs,
                    unit="epochs",
                    percent=100.0 * (self.epoch + (index + 1) / batches) / epochs,
                    message=f"epoch {epoch}/{epochs}, batch {index + 1}/{batches}",
                )
            self.scheduler.step()
            val_loss, val_accuracy = self._evaluate()
            self.epoch = epoch
            self.history.append(
                {
                    "epoch": epoch,
                    "train_loss": total_loss / samples,
                    "train_accuracy": correct / samples,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "learning_rate": self.scheduler.get_last_lr()[0],
                }
            )
            if val_loss < self.best_val_loss:
                self.best_val_loss, self.best_epoch = val_loss, epoch
                self.best_state = _clone(self.model.state_dict())
            self._take_snapshot()
            self.context.report_progress(
                current=epoch, total=epochs, unit="epochs",
                message=f"epoch {epoch}/{epochs}: val_loss {val_loss:.4f}, val_acc {val_accuracy:.3f}",
            )
            if epoch < epochs and self.policy.due(epoch):
                snapshot = self._snapshot  # never changed again: the next epoch takes a new one
                self.context.save_checkpoint_in_background(
                    CheckpointType.PERIODIC, lambda: self._payload_of(snapshot)
                )
                self.policy.saved(epoch)
        self.train_seconds += time.monotonic() - started
        return self._finish(self.context.checkpoint_seconds - checkpoint_seconds_before)

    def _evaluate(self) -> tuple[float, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x_val)
            loss = float(self.loss_fn(logits, self.y_val))
            accuracy = float((logits.argmax(dim=1) == self.y_val).float().mean())
        return loss, accuracy

    # --- checkpoint state, taken at the end of an epoch
    def _take_snapshot(self) -> None:
        self._snapshot = {
            "model": _clone(self.model.state_dict()),
            "optimizer": _clone(self.optimizer.state_dict()),
            "scheduler": _clone(self.scheduler.state_dict()),
            "best_model": self.best_state,
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "state": {
                "epoch": self.epoch,
                "epochs": self.params["epochs"],
                "history": list(self.history),
                "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
                "best_epoch": self.best_epoch,
                "train_seconds": self.train_seconds,
                "feature_spec": self.spec.as_dict(),
            },
        }

    def checkpoint_payload(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        return None if self._snapshot is None else self._payload_of(self._snapshot)

    @staticmethod
    def _payload_of(snapshot: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
        artifacts = {
            "model.pt": _to_bytes(snapshot["model"]),
            "optimizer.pt": _to_bytes(snapshot["optimizer"]),
            "scheduler.pt": _to_bytes(snapshot["scheduler"]),
            "best_model.pt": _to_bytes(snapshot["best_model"]),
            "rng.pt": _to_bytes(snapshot["rng"]),
        }
        return snapshot["state"], artifacts

    def _restore(self, state: dict[str, Any], artifacts: dict[str, bytes]) -> None:
        self.model.load_state_dict(_from_bytes(artifacts["model.pt"]))
        self.optimizer.load_state_dict(_from_bytes(artifacts["optimizer.pt"]))
        self.scheduler.load_state_dict(_from_bytes(artifacts["scheduler.pt"]))
        self.best_state = _from_bytes(artifacts["best_model.pt"])
        rng = _from_bytes(artifacts["rng.pt"])
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.best_val_loss = state["best_val_loss"] if state["best_val_loss"] is not None else math.inf
        self.best_epoch = state["best_epoch"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.spec = FeatureSpec.from_dict(state["feature_spec"])
        self.policy.saved(self.epoch)
        self._take_snapshot()

    # --- the result
    def _finish(self, checkpoint_seconds: float) -> dict[str, Any]:
        files = model_files(self.context.operation_id)
        model_folder(self.context.operation_id).mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), files.model)
        torch.save(self.best_state, files.best_model)
        files.feature_spec.write_text(
            json.dumps({"feature_spec": self.spec.as_dict(), "hidden_sizes": list(self.params["hidden_sizes"]),
                        "inputs": int(self.x_train.shape[1])}, indent=2)
        )
        last = self.history[-1] if self.history else {}
        best = next((row for row in self.history if row["epoch"] == self.best_epoch), {})
        return {
            # For people to read: code finds the files from the operation id (training.artifacts).
            "model_path": str(files.model),
            "best_model_path": str(files.best_model),
            "feature_spec_path": str(files.feature_spec),
            "epochs_completed": self.epoch,
            "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": best.get("val_accuracy"),
            "final_val_loss": last.get("val_loss"),
            "final_val_accuracy": last.get("val_accuracy"),
            "history": self.history,
            "samples": {"train": len(self.x_train), "validation": len(self.x_val)},
            "validation_start": self.validation_start,
            "timings": {"train_seconds": round(self.train_seconds, 3), "checkpoint_seconds": round(checkpoint_seconds, 3)},
        }
