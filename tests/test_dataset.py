"""build_dataset / build_market_data / MarketData: causal, purged, leak-free, reproducible, atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import (
    DatasetConfig,
    FeatureConfig,
    LabelConfig,
    MarketData,
    SplitConfig,
    build_dataset,
    build_market_data,
    feature_names,
    load_dataset,
    synthetic_bars,
    warmup_bars,
)
from features.splits import SPLITS

VALIDATION_START = "2012-01-02"
TEST_START = "2012-05-01"
WINDOW = 16
HORIZON = 8
SAVED_FILES = [
    "features.npy", "labels.npy", "manifest.json", "offsets.npy", "prices.npy", "raw_features.npy", "row_asset_ids.npy", "timestamps.npy", "vwap.npy"
]


def synthetic_market() -> dict[str, pd.DataFrame]:
    """Three symbols with different starts, lengths and holes.

    CCC starts 50 bars before validation: fewer than its warm-up plus window (64), so it has no train
    sample, and its first usable rows lie in validation.
    """
    bbb = synthetic_bars(660, start="2010-03-01", seed=2, sigma=0.025)
    holes = np.random.default_rng(0).choice(np.arange(30, 640), size=25, replace=False)
    return {
        "AAA": synthetic_bars(700, start="2010-01-04", seed=1, phi=0.1),
        "BBB": bbb.drop(bbb.index[holes]),
        "CCC": synthetic_bars(360, start="2011-10-24", seed=3, sigma=0.015, start_price=20.0),
    }


def explicit_config(**overrides) -> DatasetConfig:
    settings = dict(
        window=WINDOW,
        labels=LabelConfig(horizon=HORIZON),
        split=SplitConfig(validation_start=VALIDATION_START, test_start=TEST_START),
    )
    settings.update(overrides)
    return DatasetConfig(**settings)


def instant(date: str) -> int:
    return int(pd.Timestamp(date, tz="UTC").as_unit("ns").value)


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return synthetic_market()


@pytest.fixture(scope="module")
def data(market: dict[str, pd.DataFrame]) -> MarketData:
    return build_market_data(market, explicit_config())


@pytest.fixture(scope="module")
def default_data() -> MarketData:
    return build_dataset()


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def assert_same_market_data(a: MarketData, b: MarketData) -> None:
    for name in ("timestamps", "prices", "features", "labels", "row_asset_ids", "offsets"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name
    assert a.split_ranges.keys() == b.split_ranges.keys()
    for split in SPLITS:
        np.testing.assert_array_equal(a.split_ranges[split], b.split_ranges[split])
        assert a.split_ranges[split].dtype == b.split_ranges[split].dtype
    assert json.dumps(a.manifest(), sort_keys=True) == json.dumps(b.manifest(), sort_keys=True)


# ----- (a) causality: truncating the bars after t changes nothing at or before t -------------------------
@pytest.mark.parametrize("cut", ["2012-02-15", "2012-05-01", "2012-08-20"])
def test_truncating_after_t_changes_nothing_at_or_before_t(
    market: dict[str, pd.DataFrame], data: MarketData, cut: str
) -> None:
    t = pd.Timestamp(cut, tz="UTC")
    part = build_market_data({s: bars[bars.index <= t] for s, bars in market.items()}, explicit_config())
    assert part.symbols == data.symbols and part.feature_names == data.feature_names
    np.testing.assert_array_equal(part.scaler.center, data.scaler.center)
    np.testing.assert_array_equal(part.scaler.scale, data.scaler.scale)
    np.testing.assert_array_equal(part.split_ranges["train"], data.split_ranges["train"])
    for symbol in data.symbols:
        full_rows, part_rows = data.symbol_rows(symbol), part.symbol_rows(symbol)
        n = part_rows.stop - part_rows.start
        assert n > 0 and data.timestamps[full_rows][n - 1] == part.timestamps[part_rows][-1]
        assert data.timestamps[full_rows][: n].tobytes() == part.timestamps[part_rows].tobytes()
        assert data.prices[full_rows][:n].tobytes() == part.prices[part_rows].tobytes()
        # scaled features, bit for bit
        assert data.features[full_rows][:n].tobytes() == part.features[part_rows].tobytes(), symbol
        # windows ending at every row at or before t
        local = np.arange(WINDOW - 1, n)
        full_windows = data.windows(full_rows.start + local)
        part_windows = part.windows(part_rows.start + local)
        assert full_windows.tobytes() == part_windows.tobytes(), symbol
        # labels: those with a full horizon inside the truncated bars are unchanged, the rest have none
        known = n - HORIZON
        np.testing.assert_array_equal(part.labels[part_rows][:known], data.labels[full_rows][:known])
        assert np.isnan(part.labels[part_rows][known:]).all()


def test_changing_a_future_bar_changes_no_earlier_row(market: dict[str, pd.DataFrame], data: MarketData) -> None:
    changed = {s: bars.copy() for s, bars in market.items()}
    t = 600  # a test-period row of AAA
    changed["AAA"].iloc[t:, :4] *= 1.7
    other = build_market_data(changed, explicit_config())
    rows = data.symbol_rows("AAA")
    assert data.features[rows][:t].tobytes() == other.features[rows][:t].tobytes()
    assert data.features[rows][t:].tobytes() != other.features[rows][t:].tobytes()
    np.testing.assert_array_equal(data.labels[rows][: t - HORIZON], other.labels[rows][: t - HORIZON])


# ----- (b) purged splits --------------------------------------------------------------------------------
def assert_purged(md: MarketData, horizon: int, gap: int) -> None:
    """Every label horizon of an earlier split ends strictly before the next split's first bar (rows and time)."""
    for earlier, later in (("train", "validation"), ("validation", "test")):
        later_rows = md.sample_indices(later)
        assert len(later_rows) > 0
        later_first_time = md.timestamps[later_rows].min()
        for symbol in md.symbols:
            rows = md.sample_indices(earlier, [symbol])
            if len(rows) == 0:
                continue
            # in time, against every symbol's later samples
            assert md.timestamps[rows + horizon].max() < later_first_time, (symbol, earlier, later)
            # in rows, against this symbol's first later row (when it has any)
            start, end = md.split_range(later, symbol)
            if end > start:
                assert rows.max() + horizon < start, (symbol, earlier, later)
                assert rows.max() + gap < start, (symbol, earlier, later)
                assert md.timestamps[rows + horizon].max() < md.timestamps[start], (symbol, earlier, later)
    # the periods are time-ordered and never overlap
    for i, symbol in enumerate(md.symbols):
        bounds = [tuple(md.split_ranges[s][i]) for s in SPLITS]
        flat = [v for b in bounds for v in b]
        assert flat == sorted(flat), (symbol, bounds)


def test_explicit_splits_are_purged_by_the_horizon(data: MarketData) -> None:
    assert_purged(data, HORIZON, HORIZON)
    validation_start, test_start = instant(VALIDATION_START), instant(TEST_START)
    for split, (lo, hi) in {
        "train": (None, validation_start),
        "validation": (validation_start, test_start),
        "test": (test_start, None),
    }.items():
        stamps = data.timestamps[data.sample_indices(split)]
        assert lo is None or stamps.min() >= lo, split
        assert hi is None or stamps.max() < hi, split
        assert hi is None or data.timestamps[data.sample_indices(split) + HORIZON].max() < hi, split


def test_each_symbol_stops_train_exactly_gap_bars_before_validation(data: MarketData) -> None:
    validation_start = instant(VALIDATION_START)
    first_usable = warmup_bars() + WINDOW - 1
    for i, symbol in enumerate(data.symbols):
        stamps = data.timestamps[data.symbol_rows(symbol)]
        a = int(np.searchsorted(stamps, validation_start))
        start, end = data.split_ranges["train"][i]
        assert start == first_usable
        assert end == max(start, a - HORIZON), symbol
    # CCC starts so close to validation that it has no train rows at all
    assert tuple(data.split_ranges["train"][data.symbol_index("CCC")]) == (first_usable, first_usable)


@pytest.mark.parametrize("horizon, gap", [(8, None), (8, 15), (3, 3), (12, 20)])
def test_fraction_splits_are_purged(market: dict[str, pd.DataFrame], horizon: int, gap: int | None) -> None:
    config = DatasetConfig(window=WINDOW, labels=LabelConfig(horizon=horizon), split=SplitConfig(purge_gap=gap))
    md = build_market_data(market, config)
    assert_purged(md, horizon, gap or horizon)
    for i in range(len(md.symbols)):
        train_end, validation_start = md.split_ranges["train"][i][1], md.split_ranges["validation"][i][0]
        if md.split_ranges["train"][i][1] > md.split_ranges["train"][i][0]:
            assert validation_start - train_end >= (gap or horizon)


def test_default_dataset_is_purged(default_data: MarketData) -> None:
    assert_purged(default_data, 8, 8)


@pytest.mark.parametrize("horizon, gap", [(8, 7), (8, 0), (12, 8), (5, -1)])
def test_purge_gap_smaller_than_horizon_is_rejected(horizon: int, gap: int) -> None:
    message = rf"split.purge_gap={gap} must be at least the label horizon \({horizon} bars\)"
    with pytest.raises(ValueError, match=message):
        DatasetConfig(labels=LabelConfig(horizon=horizon), split=SplitConfig(purge_gap=gap))
    with pytest.raises(ValueError, match=message):
        DatasetConfig.from_dict({"labels": {"horizon": horizon}, "split": {"purge_gap": gap}})


# ----- (c) the scaler sees train rows only --------------------------------------------------------------
def shake_after(bars: pd.DataFrame, start: str) -> pd.DataFrame:
    """Every bar from ``start`` on scaled by 3x or 4x (alternating) and its volume by 5x: a drastic change."""
    bars = bars.copy()
    later = bars.index >= pd.Timestamp(start, tz="UTC")
    factor = np.where(np.arange(later.sum()) % 2 == 0, 3.0, 4.0)
    for column in ("open", "high", "low", "close"):
        bars.loc[later, column] = bars.loc[later, column].to_numpy() * factor
    bars.loc[later, "volume"] = bars.loc[later, "volume"].to_numpy() * 5.0
    return bars


@pytest.mark.parametrize("scaler", ["standard", "robust"])
def test_scaler_never_sees_validation_or_test_rows(market: dict[str, pd.DataFrame], scaler: str) -> None:
    config = explicit_config(scaler=scaler)
    before = build_market_data(market, config)
    after = build_market_data({s: shake_after(b, VALIDATION_START) for s, b in market.items()}, config)
    assert before.scaler.center.tobytes() == after.scaler.center.tobytes()
    assert before.scaler.scale.tobytes() == after.scaler.scale.tobytes()
    for symbol in before.symbols:  # the change did reach every symbol's later features
        start, end = before.split_range("test", symbol)
        assert before.features[start:end].tobytes() != after.features[start:end].tobytes(), symbol
    # and the test above would notice a leak: changing train rows does move the scaler
    moved = build_market_data({s: shake_after(b, "2011-06-01") for s, b in market.items()}, config)
    assert not np.array_equal(before.scaler.center, moved.scaler.center)


def test_scaler_is_fit_on_the_train_period(market: dict[str, pd.DataFrame]) -> None:
    md = build_market_data(market, explicit_config(clip=None))
    warmup = warmup_bars()
    chunks = []
    for i, symbol in enumerate(md.symbols):  # every row after warm-up whose label ends before validation
        end = int(np.searchsorted(md.timestamps[md.symbol_rows(symbol)], instant(VALIDATION_START))) - HORIZON
        chunks.append(np.arange(md.offsets[i] + warmup, md.offsets[i] + max(warmup, end)))
    assert len(chunks[2]) == 0  # CCC's bars after warm-up are all in the purge gap or validation
    rows = np.concatenate(chunks)
    scaled = md.features[rows].astype(np.float64)
    constant = md.scaler.scale == 1.0
    np.testing.assert_allclose(scaled.mean(axis=0)[~constant], 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0)[~constant], 1.0, atol=1e-5)


def test_clip_bounds_scaled_features(data: MarketData) -> None:
    assert np.abs(data.features).max() <= 10.0
    assert data.scaler.clip == 10.0


# ----- (d) reproducible saves, round trip, manifest ----------------------------------------------------
def test_same_config_and_data_give_byte_identical_saves(market: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    build_market_data(market, explicit_config()).save(tmp_path / "one")
    build_market_data(synthetic_market(), explicit_config()).save(tmp_path / "two")
    one, two = dir_bytes(tmp_path / "one"), dir_bytes(tmp_path / "two")
    assert sorted(one) == SAVED_FILES
    assert one == two


def test_default_build_dataset_saves_identically_twice(default_data: MarketData, tmp_path: Path) -> None:
    config = DatasetConfig(output_dir=str(tmp_path / "default"))
    build_dataset(config)
    first = dir_bytes(tmp_path / "default")
    build_dataset(config)  # rebuilt over the existing directory
    assert dir_bytes(tmp_path / "default") == first
    default_data.save(tmp_path / "a")
    build_dataset().save(tmp_path / "b")
    assert dir_bytes(tmp_path / "a") == dir_bytes(tmp_path / "b")
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "default"]  # no temp directories left behind


def test_load_dataset_round_trip(default_data: MarketData, tmp_path: Path) -> None:
    default_data.save(tmp_path / "ds")
    loaded = load_dataset(tmp_path / "ds")
    assert_same_market_data(default_data, loaded)
    assert loaded.symbols == default_data.symbols and loaded.asset_ids == default_data.asset_ids
    assert loaded.feature_names == default_data.feature_names
    for name in ("window", "timeframe", "label", "config", "hashes"):
        assert getattr(loaded, name) == getattr(default_data, name), name
    assert loaded.scaler.center.tobytes() == default_data.scaler.center.tobytes()
    assert loaded.scaler.scale.tobytes() == default_data.scaler.scale.tobytes()
    assert (loaded.scaler.kind, loaded.scaler.clip) == (default_data.scaler.kind, default_data.scaler.clip)
    rows = default_data.sample_indices("validation")
    np.testing.assert_array_equal(loaded.sample_indices("validation"), rows)
    assert loaded.windows(rows[:50]).tobytes() == default_data.windows(rows[:50]).tobytes()
    np.testing.assert_array_equal(loaded.class_weights(), default_data.class_weights())
    assert loaded.summary() == default_data.summary()
    loaded.save(tmp_path / "again")
    assert dir_bytes(tmp_path / "again") == dir_bytes(tmp_path / "ds")


def test_manifest_records_config_features_and_hashes(default_data: MarketData, tmp_path: Path) -> None:
    default_data.save(tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    config = DatasetConfig()
    assert manifest["format_version"] == 4
    assert manifest["config"] == json.loads(json.dumps(config.to_dict()))
    assert DatasetConfig.from_dict(manifest["config"]) == config
    assert manifest["feature_names"] == feature_names(FeatureConfig()) == default_data.feature_names
    assert manifest["symbols"] == ["AAPL", "IBM", "MSFT", "GOOG"]
    assert manifest["label"] == {"profit": 0.05, "stop": 0.02, "horizon": 8, "barrier": "fixed", "volatility_window": 20}
    assert manifest["hashes"]["config"] == config.hash()
    assert len(manifest["hashes"]["source"]) == 64
    assert {entry["file"] for entry in manifest["arrays"].values()} == {f for f in SAVED_FILES if f.endswith(".npy")}
    for name, entry in manifest["arrays"].items():
        assert entry["shape"] == list(getattr(default_data, name).shape)
        assert len(entry["sha256"]) == 64


def test_source_hash_follows_the_data_and_config_hash_the_config(
    market: dict[str, pd.DataFrame], data: MarketData
) -> None:
    assert build_market_data(synthetic_market(), explicit_config()).hashes == data.hashes
    changed = {s: b.copy() for s, b in market.items()}
    changed["BBB"].iloc[100, changed["BBB"].columns.get_loc("volume")] += 1.0
    other = build_market_data(changed, explicit_config())
    assert other.hashes["source"] != data.hashes["source"]
    assert other.hashes["config"] == data.hashes["config"]
    rewindowed = build_market_data(market, explicit_config(window=WINDOW + 1))
    assert rewindowed.hashes["source"] == data.hashes["source"]
    assert rewindowed.hashes["config"] != data.hashes["config"]
    # where it is written is not part of the data
    assert explicit_config(output_dir="x").hash() == explicit_config(output_dir="y").hash()


# ----- (e) multi-symbol aggregation ---------------------------------------------------------------------
def test_asset_ids_stay_stable_when_a_symbol_is_added(market: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    path = tmp_path / "maps" / "asset_map.json"
    config = explicit_config(asset_map_path=str(path))
    first = build_market_data({"AAA": market["AAA"], "BBB": market["BBB"]}, config)
    assert first.asset_map == {"AAA": 0, "BBB": 1}
    assert json.loads(path.read_text()) == {"AAA": 0, "BBB": 1}
    second = build_market_data({"CCC": market["CCC"], "BBB": market["BBB"], "AAA": market["AAA"]}, config)
    assert second.symbols == ["CCC", "BBB", "AAA"]
    assert second.asset_map == {"CCC": 2, "BBB": 1, "AAA": 0}
    assert second.asset_ids == [2, 1, 0] and second.n_assets == 3
    assert json.loads(path.read_text()) == {"AAA": 0, "BBB": 1, "CCC": 2}
    for symbol, asset_id in second.asset_map.items():
        assert (second.row_asset_ids[second.symbol_rows(symbol)] == asset_id).all()
    # a subset later keeps the ids and the file keeps every symbol
    third = build_market_data({"BBB": market["BBB"]}, config)
    assert third.asset_ids == [1] and third.n_assets == 2
    assert json.loads(path.read_text()) == {"AAA": 0, "BBB": 1, "CCC": 2}


def test_without_an_asset_map_ids_follow_symbol_order(data: MarketData) -> None:
    assert data.asset_ids == [0, 1, 2] and data.row_asset_ids.dtype == np.int64
    assert data.offsets.tolist() == [0, 700, 1335, 1695]


def test_blocks_stack_symbols_in_time_order(market: dict[str, pd.DataFrame], data: MarketData) -> None:
    assert data.symbols == ["AAA", "BBB", "CCC"]
    for symbol, bars in market.items():
        rows = data.symbol_rows(symbol)
        np.testing.assert_array_equal(data.timestamps[rows], bars.index.as_unit("ns").asi8)
        np.testing.assert_array_equal(data.prices[rows], bars[["open", "high", "low", "close", "volume"]].to_numpy())
        assert (np.diff(data.timestamps[rows]) > 0).all()
    assert data.prices.dtype == np.float64 and data.features.dtype == np.float32 and data.labels.dtype == np.float32
    assert data.timestamps.dtype == np.int64


@pytest.mark.parametrize("which", ["synthetic", "default"])
def test_windows_shape_dtype_and_bounds(data: MarketData, default_data: MarketData, which: str) -> None:
    md = data if which == "synthetic" else default_data
    warmup = warmup_bars()
    rows = np.concatenate([md.sample_indices(s) for s in SPLITS])
    windows = md.windows(rows)
    assert windows.shape == (len(rows), md.window, md.n_features)
    assert windows.dtype == np.float32 and windows.flags.c_contiguous
    assert np.isfinite(windows).all()
    np.testing.assert_array_equal(windows[:, -1], md.features[rows])
    np.testing.assert_array_equal(windows[:, 0], md.features[rows - md.window + 1])
    symbol_of_row = np.searchsorted(md.offsets, rows, side="right") - 1
    first_rows = rows - md.window + 1
    assert (first_rows >= md.offsets[symbol_of_row] + warmup).all()  # inside its symbol, after warm-up
    windows[:] = 99.0
    assert not (md.features == 99.0).any()  # a fresh array, not a view


def test_class_weights_balance_the_train_labels(default_data: MarketData) -> None:
    rows = default_data.sample_indices("train")
    labels = default_data.labels[rows]
    n0, n1 = int((labels == 0).sum()), int((labels == 1).sum())
    assert n0 + n1 == len(rows) and 0 < n1 < n0
    weights = default_data.class_weights()
    assert weights.shape == (2,) and weights.dtype == np.float64
    np.testing.assert_allclose(weights, [len(rows) / (2 * n0), len(rows) / (2 * n1)])
    np.testing.assert_allclose(weights[0] * n0, weights[1] * n1)
    per_sample = default_data.sample_weights(rows)
    assert per_sample.dtype == np.float32 and per_sample.shape == rows.shape
    np.testing.assert_allclose(per_sample[labels == 0].sum(), per_sample[labels == 1].sum(), rtol=1e-5)
    np.testing.assert_allclose(per_sample.sum(), len(rows), rtol=1e-5)


def test_sample_indices_have_labels_and_respect_symbols(data: MarketData) -> None:
    for split in SPLITS:
        rows = data.sample_indices(split)
        assert rows.dtype == np.int64 and not np.isnan(data.labels[rows]).any()
        ccc = data.sample_indices(split, ["CCC"])
        block = data.symbol_rows("CCC")
        assert ((ccc >= block.start) & (ccc < block.stop)).all()
    assert len(data.sample_indices("train", ["CCC"])) == 0
    with pytest.raises(ValueError, match=r"split='tets' is not known"):
        data.sample_indices("tets")
    with pytest.raises(ValueError, match=r"symbol 'ZZZ' is not in this dataset"):
        data.sample_indices("train", ["ZZZ"])


# ----- config errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mapping, words",
    [
        ({"windw": 3}, r"dataset config: unknown key\(s\) \['windw'\]"),
        ({"labels": {"profitt": 1}}, r"dataset config.labels: unknown key\(s\) \['profitt'\]"),
        ({"split": {"tset": 0.1}}, r"dataset config.split: unknown key\(s\) \['tset'\]"),
        ({"features": {"rsi_windw": 3}}, r"dataset config.features: unknown key\(s\) \['rsi_windw'\]"),
    ],
)
def test_unknown_config_key_is_named(mapping: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        DatasetConfig.from_dict(mapping)


def test_config_from_dict_builds_nested_configs() -> None:
    config = DatasetConfig.from_dict(
        {"symbols": ["IBM", "MSFT"], "window": 10, "labels": {"horizon": 5}, "features": {"sma_windows": [5, 10]}}
    )
    assert config.symbols == ("IBM", "MSFT") and config.window == 10
    assert config.labels == LabelConfig(horizon=5)
    assert config.features.sma_windows == (5, 10)
    assert DatasetConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("bad, words", [({"window": 0}, "window=0"), ({"timeframe": "1D"}, "timeframe='1D'")])
def test_bad_config_values_are_named(bad: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        DatasetConfig.from_dict(bad)


def test_too_few_bars_names_the_symbol(market: dict[str, pd.DataFrame]) -> None:
    short = dict(market, CCC=market["CCC"].iloc[:60])
    with pytest.raises(ValueError, match=r"CCC: 60 bars is too few"):
        build_market_data(short, explicit_config())


# ----- bad dataset directories --------------------------------------------------------------------------
@pytest.fixture()
def saved(data: MarketData, tmp_path: Path) -> Path:
    return data.save(tmp_path / "ds")


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset directory .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_directory_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is not a dataset directory"):
        load_dataset(tmp_path / "empty")


def test_missing_array_is_named(saved: Path) -> None:
    (saved / "labels.npy").unlink()
    with pytest.raises(ValueError, match=r"is incomplete: .*labels.npy is missing"):
        load_dataset(saved)


def test_unsupported_format_version_is_named(saved: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["format_version"] = 99
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"format_version 99 is not supported \(expected 4\)"):
        load_dataset(saved)


def test_corrupt_manifest_is_named(saved: Path) -> None:
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json is not valid JSON"):
        load_dataset(saved)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_array_is_named(saved: Path, damage: str) -> None:
    file = saved / "features.npy"
    content = file.read_bytes()
    file.write_bytes(b"garbage" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"features.npy does not match the sha256 recorded in manifest.json"):
        load_dataset(saved)


# ----- atomic save --------------------------------------------------------------------------------------
def failing_np_save(monkeypatch: pytest.MonkeyPatch, fail_on_call: int) -> None:
    real_save = np.save
    calls = {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)


def test_failed_first_save_leaves_nothing(data: MarketData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_np_save(monkeypatch, fail_on_call=3)
    with pytest.raises(OSError, match="disk full"):
        data.save(tmp_path / "ds")
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_existing_dataset(
    data: MarketData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data.save(tmp_path / "ds")
    before = dir_bytes(tmp_path / "ds")
    other = build_market_data(synthetic_market(), explicit_config(window=WINDOW + 2))
    failing_np_save(monkeypatch, fail_on_call=4)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path / "ds")
    assert os.listdir(tmp_path) == ["ds"]
    assert dir_bytes(tmp_path / "ds") == before
    assert_same_market_data(load_dataset(tmp_path / "ds"), data)


def test_failed_swap_keeps_the_existing_dataset(
    data: MarketData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data.save(tmp_path / "ds")
    before = dir_bytes(tmp_path / "ds")
    other = build_market_data(synthetic_market(), explicit_config(window=WINDOW + 2))
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the old dataset moved aside, the new one not yet in place
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        other.save(tmp_path / "ds")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ds"]
    assert dir_bytes(tmp_path / "ds") == before


def test_save_replaces_an_existing_dataset(data: MarketData, tmp_path: Path) -> None:
    other = build_market_data(synthetic_market(), explicit_config(window=WINDOW + 2))
    data.save(tmp_path / "ds")
    other.save(tmp_path / "ds")
    assert os.listdir(tmp_path) == ["ds"]
    assert load_dataset(tmp_path / "ds").window == WINDOW + 2
