"""A training's result in figures: epochs, the best epoch's and the last epoch's validation loss and accuracy."""

from __future__ import annotations

from operations.summaries import Figure, Unit, number


# What its figures read of a training's result (an admin page loads these): not its history, which grows with
# its epochs.
READS = ("epochs_completed", "best_epoch", "best_val_loss", "best_val_accuracy", "final_val_loss",
         "final_val_accuracy", "timings")


def training_summary(result: dict, params: dict, *, latest: str = "Final") -> list[Figure]:
    """The figures of a completed training's result (of the latest epoch of a checkpoint's, `latest="Last"`)."""
    best_epoch = number(result.get("best_epoch"))
    best_accuracy = number(result.get("best_val_accuracy"))
    if best_accuracy is None and "history" in result:  # a result written before it carried the figure
        history = [row for row in result.get("history") or [] if isinstance(row, dict)]
        best_accuracy = number(next((row for row in history if row.get("epoch") == best_epoch), {})
                               .get("val_accuracy"))
    epochs = number(params.get("epochs"))
    completed = number(result.get("epochs_completed"))
    return [
        Figure("epochs_completed", "Epochs", completed, Unit.COUNT, f"of {epochs:,}" if epochs else ""),
        Figure("best_epoch", "Best epoch", best_epoch, Unit.COUNT),
        Figure("best_val_loss", "Best validation loss", number(result.get("best_val_loss")), Unit.LOSS),
        Figure("best_val_accuracy", "Validation accuracy at the best epoch", best_accuracy, Unit.FRACTION),
        Figure("final_val_loss", f"{latest} validation loss", number(result.get("final_val_loss")), Unit.LOSS),
        Figure("final_val_accuracy", f"{latest} validation accuracy", number(result.get("final_val_accuracy")),
               Unit.FRACTION),
        Figure("train_seconds", "Training time", number((result.get("timings") or {}).get("train_seconds")),
               Unit.SECONDS),
    ]


def training_checkpoint_summary(state: dict, params: dict) -> list[Figure]:
    """A checkpoint's metrics so far: the epochs done, the best epoch and the last one's validation figures."""
    history = [row for row in state.get("history") or [] if isinstance(row, dict)]
    last = history[-1] if history else {}
    so_far = {
        "epochs_completed": state.get("epoch"), "best_epoch": state.get("best_epoch"),
        "best_val_loss": state.get("best_val_loss"), "final_val_loss": last.get("val_loss"),
        "final_val_accuracy": last.get("val_accuracy"), "history": history,
        "timings": {"train_seconds": state.get("train_seconds")},
    }
    return training_summary(so_far, params, latest="Last")
