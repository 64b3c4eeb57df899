from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command


@pytest.fixture
def folders(tmp_path, settings, checkpoint_dir) -> dict[str, Path]:
    """Data, models and checkpoints in the test's own folders, shared with its children."""
    found = {
        "DATA_DIR": tmp_path / "data",
        "MODELS_DIR": tmp_path / "models",
        "CHECKPOINT_DIR": checkpoint_dir,
        "WORKER_STATE_DIR": tmp_path / "worker-state",
    }
    settings.DATA_DIR = found["DATA_DIR"]
    settings.MODELS_DIR = found["MODELS_DIR"]
    settings.WORKER_STATE_DIR = found["WORKER_STATE_DIR"]
    call_command("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "3000", "--seed", "5")
    return found
