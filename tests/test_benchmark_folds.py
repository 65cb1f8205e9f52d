"""Walk-forward folds: ordered, disjoint test windows; each fold's data ends at its test window, its
scaler sees its train rows only, and its splits are purged by the label horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.config import FoldConfig
from evaluation.folds import fold_market_data, walk_forward_folds
from features import DatasetConfig, build_market_data, synthetic_bars
from features.feature_builder import warmup_bars
from features.scaling import FeatureScaler

BARS = {"A": synthetic_bars(900, seed=0), "B": synthetic_bars(850, seed=1, start_price=30.0)}
DATASET = DatasetConfig(window=8)
HISTORY = warmup_bars(DATASET.features) + DATASET.window


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_test_windows_are_ordered_disjoint_and_cover_the_tail(scheme: str) -> None:
    folds = walk_forward_folds(BARS, FoldConfig(n_folds=4, scheme=scheme, test_share=0.4), HISTORY)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    for before, after in zip(folds, folds[1:]):
        assert before.test_end == after.test_start  # consecutive, no overlap
        assert before.validation_start < before.test_start
    assert folds[-1].test_end is None
    starts = [pd.Timestamp(f.train_start) for f in folds]
    if scheme == "expanding":
        assert len(set(starts)) == 1
    else:
        assert starts == sorted(starts) and len(set(starts)) == 4


def test_fold_data_ends_at_its_test_window_and_fits_its_scaler_on_train_only() -> None:
    folds = walk_forward_folds(BARS, FoldConfig(n_folds=3), HISTORY)
    for fold in folds[:-1]:
        data = fold_market_data(BARS, DATASET, fold)
        end = pd.Timestamp(fold.test_end).value
        assert data.timestamps.max() < end  # nothing after the test window is even loaded
        # the builder fits on every row of the train period after the warm-up (window rows included)
        train_rows = np.concatenate([np.arange(data.symbol_rows(s).start + data.warmup, data.split_range("train", s)[1])
                                     for s in data.symbols])
        refit = FeatureScaler.fit(data.raw_features[train_rows], DATASET.scaler, DATASET.clip)
        assert refit.equals(data.scaler)
        for symbol in data.symbols:
            train_end = data.split_range("train", symbol)[1]
            validation_start, validation_end = data.split_range("validation", symbol)
            test_start = data.split_range("test", symbol)[0]
            assert validation_start - train_end >= DATASET.labels.horizon
            assert test_start - validation_end >= DATASET.labels.horizon
            stamps = data.timestamps[data.symbol_rows(symbol)]
            local_test = test_start - data.symbol_rows(symbol).start
            assert stamps[local_test] >= pd.Timestamp(fold.test_start).value


def test_fold_data_does_not_change_when_later_bars_are_removed() -> None:
    fold = walk_forward_folds(BARS, FoldConfig(n_folds=3), HISTORY)[0]
    full = fold_market_data(BARS, DATASET, fold)
    end = pd.Timestamp(fold.test_end)
    cut = fold_market_data({s: f[f.index < end + pd.Timedelta(days=3)] for s, f in BARS.items()}, DATASET, fold)
    np.testing.assert_array_equal(full.features, cut.features)
    assert full.scaler.equals(cut.scaler)


def test_too_little_data_for_the_folds_is_named() -> None:
    with pytest.raises(ValueError, match="fold 0 would train on"):
        walk_forward_folds({"A": synthetic_bars(150)}, FoldConfig(n_folds=4, test_share=0.8), HISTORY)
