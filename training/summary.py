"""A training's result in figures: epochs, the best epoch's and the last epoch's validation loss and accuracy."""

from __future__ import annotations

from operations.summaries import Figure, Unit, number


def training_summary(operation) -> list[Figure]:
    result = operation.result
    history = [row for row in result.get("history") or [] if isinstance(row, dict)]
    best_epoch = number(result.get("best_epoch"))
    best = next((row for row in history if row.get("epoch") == best_epoch), {})
    epochs = number((operation.params or {}).get("epochs"))
    completed = number(result.get("epochs_completed"))
    return [
        Figure("epochs_completed", "Epochs", completed, Unit.COUNT, f"of {epochs:,}" if epochs else ""),
        Figure("best_epoch", "Best epoch", best_epoch, Unit.COUNT),
        Figure("best_val_loss", "Best validation loss", number(result.get("best_val_loss")), Unit.LOSS),
        Figure("best_val_accuracy", "Validation accuracy at the best epoch", number(best.get("val_accuracy")),
               Unit.FRACTION),
        Figure("final_val_loss", "Final validation loss", number(result.get("final_val_loss")), Unit.LOSS),
        Figure("final_val_accuracy", "Final validation accuracy", number(result.get("final_val_accuracy")),
               Unit.FRACTION),
        Figure("train_seconds", "Training time", number((result.get("timings") or {}).get("train_seconds")),
               Unit.SECONDS),
    ]
