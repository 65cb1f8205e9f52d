"""Walk-forward folds: time boundaries per fold, and each fold's dataset built from its own bars only.

A fold's :class:`MarketData` is built by the ordinary dataset builder from the market's bars cut at the
end of the fold's test window (nothing later is ever loaded) with explicit split dates, so its scaler is
fit on the fold's train rows and its purge gaps are the dataset's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from features.dataset import DatasetConfig, build_market_data
from features.feature_builder import warmup_bars
from features.market_data import MarketData
from features.splits import SplitConfig

from .config import FoldConfig

_MIN_TRAIN_BARS = 50


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold, as instants (UTC ISO strings, so it hashes and prints plainly).

    :param index: 0-based fold number, in time order.
    :param train_start: first instant of the loaded history (train rows begin after the warm-up).
    :param validation_start: first validation instant.
    :param test_start: first test instant.
    :param test_end: first instant after the test window (exclusive); None: the end of the data.
    """

    index: int
    train_start: str
    validation_start: str
    test_start: str
    test_end: str | None

    def describe(self) -> str:
        end = self.test_end or "end"
        return (f"fold {self.index}: train {self.train_start[:10]}.., validation {self.validation_start[:10]}.., "
                f"test {self.test_start[:10]} .. {end[:10]}")


def walk_forward_folds(bars: Mapping[str, pd.DataFrame], config: FoldConfig, history_bars: int) -> list[Fold]:
    """The folds of a market, from the union of its symbols' timestamps.

    :param bars: ``{symbol: bars frame}`` (validated frames, UTC index).
    :param config: the fold scheme.
    :param history_bars: bars of warm-up and window a train row needs before it (loaded, not trained on).
    """
    stamps = np.unique(np.concatenate([frame.index.as_unit("ns").asi8 for frame in bars.values()]))
    n = len(stamps)
    first_test = int(round(n * (1.0 - config.test_share)))
    test_len = (n - first_test) // config.n_folds
    if test_len < 2:
        raise ValueError(
            f"{n} bars give test windows of {test_len} bar(s) for n_folds={config.n_folds} and "
            f"test_share={config.test_share}; use fewer folds or more data"
        )
    validation_len = config.validation_bars or test_len
    first_train_len = first_test - validation_len
    if first_train_len - history_bars < _MIN_TRAIN_BARS:
        raise ValueError(
            f"fold 0 would train on {first_train_len - history_bars} bars after {history_bars} bars of warm-up; "
            f"lower test_share ({config.test_share}) or validation_bars, or load more history"
        )
    folds = []
    for k in range(config.n_folds):
        test_start = first_test + k * test_len
        test_end = test_start + test_len if k < config.n_folds - 1 else n
        validation_start = test_start - validation_len
        train_start = 0 if config.scheme == "expanding" else max(0, validation_start - first_train_len)
        folds.append(Fold(
            index=k,
            train_start=_iso(stamps[train_start]),
            validation_start=_iso(stamps[validation_start]),
            test_start=_iso(stamps[test_start]),
            test_end=_iso(stamps[test_end]) if test_end < n else None,
        ))
    return folds


def fold_market_data(bars: Mapping[str, pd.DataFrame], dataset: DatasetConfig, fold: Fold,
                     purge_gap: int | None = None) -> MarketData:
    """The dataset of one fold: bars from the fold's history start to its test end, split by its dates.

    :param bars: the market's full bars.
    :param dataset: the market's dataset settings (its split is replaced by the fold's dates).
    :param fold: the fold.
    :param purge_gap: bars dropped before each boundary; None: the label horizon.
    """
    history = warmup_bars(dataset.features) + dataset.window
    start = pd.Timestamp(fold.train_start)
    end = pd.Timestamp(fold.test_end) if fold.test_end is not None else None
    cut: dict[str, pd.DataFrame] = {}
    for symbol, frame in bars.items():
        first = int(np.searchsorted(frame.index.as_unit("ns").asi8, start.value, side="left"))
        frame = frame.iloc[max(0, first - history):]
        if end is not None:
            frame = frame[frame.index < end]  # nothing after the test window is loaded
        if len(frame) > history + 2:
            cut[symbol] = frame
    if not cut:
        raise ValueError(f"{fold.describe()}: no symbol has bars in it")
    split = SplitConfig(validation_start=fold.validation_start, test_start=fold.test_start, purge_gap=purge_gap)
    config = dataclasses.replace(dataset, split=split, output_dir=None, asset_map_path=None)
    return build_market_data(cut, config)


def fold_summary(folds: list[Fold]) -> list[dict[str, Any]]:
    """Plain dicts of the folds (for the report)."""
    return [dataclasses.asdict(fold) for fold in folds]


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


__all__ = ["Fold", "fold_market_data", "fold_summary", "walk_forward_folds"]
