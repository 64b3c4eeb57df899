"""What a training operation's admin page shows: its loss and accuracy per epoch, the best epoch marked."""

from __future__ import annotations

from operations.charts import finite, number_chart, readable_time

# What the page loads of a training's result (beside its summary's keys): its history, a row an epoch.
READS = ("history", "best_epoch", "validation_start")


def training_panel(operation, result: dict) -> dict:
    """The curves of a training run: from its result, or while it runs, from its checkpoint."""
    checkpoint = getattr(operation, "checkpoint", None)
    history = result.get("history")
    best_epoch = result.get("best_epoch")
    if not history and checkpoint is not None:
        history, best_epoch = checkpoint.state.get("history"), checkpoint.state.get("best_epoch")
    if not history:
        return {}
    rows = [row if isinstance(row, dict) else {} for row in history]
    if not any(rows):
        raise ValueError("no row of the history is an object")
    epochs = [row.get("epoch", index + 1) for index, row in enumerate(rows)]
    markers = [{"x": best_epoch, "label": f"best epoch {best_epoch:g}"}] if finite(best_epoch) else []

    def column(key: str) -> list:
        return [row.get(key) for row in rows]

    charts = [
        number_chart("Loss per epoch", epochs, {"train loss": column("train_loss"),
                                                "validation loss": column("val_loss")},
                     x_label="epoch", unit="loss", y_label="loss", markers=markers),
        number_chart("Accuracy per epoch", epochs, {"train accuracy": column("train_accuracy"),
                                                    "validation accuracy": column("val_accuracy")},
                     x_label="epoch", unit="fraction", y_label="accuracy", markers=markers, height=240),
        number_chart("Learning rate per epoch", epochs, {"learning rate": column("learning_rate")},
                     x_label="epoch", unit="number", y_label="learning rate", height=180),
    ]
    validation_start = result.get("validation_start")
    return {
        "charts": [chart for chart in charts if chart],
        "charts_title": "Training curves",
        "charts_note": (f"Validated on the bars from {readable_time(validation_start)} on."
                        if isinstance(validation_start, str) else ""),
    }
