"""Features of a bar series, computed with pandas, and the label: does the next bar close higher?

The backtest's `model` strategy computes features with these same functions,
so a model sees in a backtest exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

FEATURE_SPEC_VERSION = 1
MIN_SAMPLES = 20  # the fewest labelled bars a training splits into its training and validation samples


@dataclass(frozen=True)
class FeatureSpec:
    return_windows: tuple[int, ...] = (1, 5, 20)
    sma_windows: tuple[int, ...] = (10, 30)
    rsi_window: int = 14
    volatility_windows: tuple[int, ...] = (10, 30)
    volume_window: int = 20
    version: int = FEATURE_SPEC_VERSION
    # Standardisation fitted on the training split only (no look-ahead), filled by `fit`.
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    @property
    def warmup(self) -> int:
        return max(*self.return_windows, *self.sma_windows, self.rsi_window, *self.volatility_windows, self.volume_window) + 1

    @property
    def min_bars(self) -> int:
        """The fewest bars a training with these features can run on: the warm-up, MIN_SAMPLES samples, and the
        last bar (it has no next bar, so no label)."""
        return self.warmup + MIN_SAMPLES + 1

    @property
    def count(self) -> int:
        """How many features `raw_features` computes: a return and a price/SMA ratio per window, the RSI, a
        volatility per window, the volume z-score."""
        return len(self.return_windows) + len(self.sma_windows) + 1 + len(self.volatility_windows) + 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpec":
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**values)


def raw_features(bars: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """One row per bar; a row uses only that bar and earlier ones. The first `warmup` rows hold NaN."""
    close = bars["close"].astype("float64")
    log_close = np.log(close)
    columns: dict[str, pd.Series] = {}
    for window in spec.return_windows:
        columns[f"ret_{window}"] = log_close.diff(window)
    for window in spec.sma_windows:
        columns[f"close_sma_{window}"] = close / close.rolling(window).mean() - 1.0
    delta = close.diff()
    gain = delta.clip(lower=0).rolling(spec.rsi_window).mean()
    loss = (-delta.clip(upper=0)).rolling(spec.rsi_window).mean()
    columns["rsi"] = (100.0 - 100.0 / (1.0 + gain / loss.replace(0.0, np.nan))).fillna(100.0) / 100.0 - 0.5
    one_bar = log_close.diff()
    for window in spec.volatility_windows:
        columns[f"vol_{window}"] = one_bar.rolling(window).std()
    volume = bars["volume"].astype("float64")
    rolling = volume.rolling(spec.volume_window)
    columns["volume_z"] = (volume - rolling.mean()) / rolling.std().replace(0.0, np.nan)
    frame = pd.DataFrame(columns)
    frame.iloc[: spec.warmup] = np.nan
    return frame


def labels(bars: pd.DataFrame) -> pd.Series:
    """1 when the next bar closes above this one; NaN for the last bar."""
    close = bars["close"]
    up = (close.shift(-1) > close).astype("float64")
    up.iloc[-1] = np.nan
    return up


def fit(spec: FeatureSpec, train_features: pd.DataFrame) -> FeatureSpec:
    std = train_features.std().replace(0.0, 1.0)
    return FeatureSpec(
        **{**spec.as_dict(), "mean": tuple(float(v) for v in train_features.mean()), "std": tuple(float(v) for v in std)}
    )


def standardise(spec: FeatureSpec, features: pd.DataFrame) -> np.ndarray:
    values = (features.to_numpy(dtype="float64") - np.array(spec.mean)) / np.array(spec.std)
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype("float32")
