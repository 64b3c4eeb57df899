"""A training's result in figures: epochs, the best epoch's and the last epoch's validation loss and accuracy."""

from __future__ import annotations

from operations.summaries import Figure, Unit, number


# What a list of operations loads of a training's result: not its history, which grows with its epochs.
READS = ("epochs_completed", "best_epoch", "best_val_loss", "best_val_accuracy", "final_val_loss",
         "final_val_accuracy", "timings")


def training_summary(result: dict, params: dict) -> list[Figure]:
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
        Figure("final_val_loss", "Final validation loss", number(result.get("final_val_loss")), Unit.LOSS),
        Figure("final_val_accuracy", "Final validation accuracy", number(result.get("final_val_accuracy")),
               Unit.FRACTION),
        Figure("train_seconds", "Training time", number((result.get("timings") or {}).get("train_seconds")),
               Unit.SECONDS),
    ]
