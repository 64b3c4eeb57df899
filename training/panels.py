"""What a training operation's admin page shows: its loss curves."""

from __future__ import annotations

from operations.charts import line_chart


def training_panel(operation) -> dict:
    """The loss curves of a training run: from its result, or while it runs, from its checkpoint."""
    checkpoint = getattr(operation, "checkpoint", None)
    history = (operation.result or {}).get("history") or (checkpoint.state.get("history") if checkpoint else None)
    if not history:
        return {}
    series = {
        "train loss": [row.get("train_loss") for row in history],
        "validation loss": [row.get("val_loss") for row in history],
    }
    return {"chart": line_chart(series, title="Loss per epoch", x_label="epochs"), "chart_title": "Loss curves"}
