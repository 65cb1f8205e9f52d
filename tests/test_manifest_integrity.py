"""A saved dataset checks its whole manifest on load (issue 21, item 1).

Two layers: every field carries a sha256 recorded at save (``field_sha256``), so a plain edit of
``manifest.json`` is refused naming the field; and a forgery that also rewrites the digests is still
checked against the arrays and the config (splits in time order with the purge gap, symbols against the
bars' hash and row asset ids, feature names, scaler against the scaled features, window, timeframe,
label). Both ``load_dataset`` and ``MarketData.load(mmap=True)`` are covered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from features import DatasetConfig, MarketData, build_market_data, load_dataset, synthetic_bars
from features.market_data import FORMAT_VERSION, DatasetIntegrityError, field_digests

Change = Callable[[dict], None]
LOADERS = {
    "load_dataset": lambda path: load_dataset(path),
    "mmap": lambda path: MarketData.load(path, mmap=True),
}


@pytest.fixture(scope="module")
def built() -> MarketData:
    bars = {"A": synthetic_bars(300, seed=0), "B": synthetic_bars(300, seed=1)}
    return build_market_data(bars, DatasetConfig(window=8))


@pytest.fixture()
def saved(built: MarketData, tmp_path: Path) -> Path:
    return built.save(tmp_path / "ds")


@pytest.fixture(params=sorted(LOADERS))
def load(request: pytest.FixtureRequest) -> Callable[[Path], MarketData]:
    return LOADERS[request.param]


def edit_manifest(path: Path, change: Change, resign: bool = False) -> None:
    """Apply ``change`` to the saved manifest; ``resign`` also rewrites its field digests (a forgery)."""
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    if resign:
        manifest["field_sha256"] = field_digests(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))


def rehash_config(manifest: dict) -> None:
    """Make ``hashes.config`` match an edited ``config`` (what a careful forger would do)."""
    manifest["hashes"]["config"] = DatasetConfig.from_dict(manifest["config"]).hash()


def overlap_test_with_train(m: dict) -> None:
    m["split_ranges"]["test"][0][0] = m["split_ranges"]["train"][0][0]


def set_window(m: dict) -> None:
    m["window"] = 12


def set_timeframe(m: dict) -> None:
    m["timeframe"] = "1Hour"


def set_label(m: dict) -> None:
    m["label"]["profit"] = 0.01


def set_scaler(m: dict) -> None:
    m["scaler"]["center"][0] += 0.5


def swap_feature_names(m: dict) -> None:
    names = m["feature_names"]
    names[0], names[1] = names[1], names[0]


def reverse_symbols(m: dict) -> None:
    m["symbols"].reverse()


TAMPERS: dict[str, Change] = {
    "split_ranges": overlap_test_with_train,
    "symbols": reverse_symbols,
    "window": set_window,
    "timeframe": set_timeframe,
    "label": set_label,
    "scaler": set_scaler,
    "feature_names": swap_feature_names,
}


# ----- an untouched dataset ----------------------------------------------------------------------------

def test_an_untouched_dataset_loads_and_round_trips(built: MarketData, saved: Path,
                                                    load: Callable[[Path], MarketData]) -> None:
    data = load(saved)
    assert json.dumps(data.manifest(), sort_keys=True) == json.dumps(built.manifest(), sort_keys=True)
    for name in ("timestamps", "prices", "raw_features", "features", "labels", "row_asset_ids", "offsets"):
        np.testing.assert_array_equal(getattr(data, name), getattr(built, name))
    again = data.save(saved.parent / "again")
    assert (again / "manifest.json").read_text() == (saved / "manifest.json").read_text()
    assert load(again).symbols == ["A", "B"]


def test_the_manifest_records_a_digest_of_every_field(saved: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 4
    assert set(manifest["field_sha256"]) == set(manifest) - {"field_sha256"}


def test_a_volatility_labelled_dataset_loads(tmp_path: Path) -> None:
    config = DatasetConfig(window=8, labels={"barrier": "volatility", "profit": 1.0, "stop": 1.0, "horizon": 5})
    path = build_market_data({"A": synthetic_bars(300, seed=2)}, config).save(tmp_path / "ds")
    assert load_dataset(path).label["barrier"] == "volatility"


# ----- plain edits: caught by the field digest ------------------------------------------------------------

@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_an_edited_manifest_field_is_refused_naming_the_field(saved: Path, load: Callable[[Path], MarketData],
                                                              field: str) -> None:
    edit_manifest(saved, TAMPERS[field])
    with pytest.raises(DatasetIntegrityError, match=rf"manifest.json: field '{field}' was changed after the "
                                                    rf"dataset was saved .*; rebuild the dataset"):
        load(saved)


def test_an_edited_config_is_refused(saved: Path) -> None:
    edit_manifest(saved, lambda m: m["config"]["split"].__setitem__("purge_gap", 0))
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json: field 'config' was changed"):
        load_dataset(saved)


def test_an_added_manifest_field_is_refused(saved: Path) -> None:
    edit_manifest(saved, lambda m: m.__setitem__("note", "harmless?"))
    with pytest.raises(DatasetIntegrityError, match=r"field 'note' was added after the dataset was saved"):
        load_dataset(saved)


def test_a_manifest_without_field_digests_is_named(saved: Path) -> None:
    edit_manifest(saved, lambda m: m.pop("field_sha256"))
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json lacks \['field_sha256'\]"):
        load_dataset(saved)


def test_a_digestless_manifest_of_the_previous_format_is_refused_with_a_rebuild_message(
    saved: Path, load: Callable[[Path], MarketData]
) -> None:
    def older(m: dict) -> None:
        m.pop("field_sha256")
        m["format_version"] = 2

    edit_manifest(saved, older)
    with pytest.raises(DatasetIntegrityError, match=r"manifest.json: format_version 2 is not supported \(expected 4\) "
                                                    r"\(it was saved before manifests carried field_sha256.*\); "
                                                    r"rebuild the dataset with python -m experiments.build_dataset$"):
        load(saved)


# ----- forgeries that rewrite the digests: caught by the structural checks ----------------------------------

def forged(saved: Path, change: Change, load: Callable[[Path], MarketData], message: str) -> None:
    edit_manifest(saved, change, resign=True)
    with pytest.raises(DatasetIntegrityError, match=message) as caught:
        load(saved)
    assert "\n" not in str(caught.value) and str(saved / "manifest.json") in str(caught.value)


def test_a_test_split_overlapping_train_is_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, overlap_test_with_train, load,
           r"split_ranges\['test'\] of A starts at row 56, -146 row\(s\) after 'train' ends at row \d+: the splits "
           r"overlap or are closer than the purge gap of 8 bars \(label horizon 8\)")


def test_a_split_closer_than_the_purge_gap_is_refused(saved: Path) -> None:
    def squeeze(m: dict) -> None:
        m["split_ranges"]["validation"][1][0] = m["split_ranges"]["train"][1][1] + 3

    forged(saved, squeeze, LOADERS["load_dataset"],
           r"split_ranges\['validation'\] of B starts at row \d+, 3 row\(s\) after 'train' ends")


def test_a_split_reaching_past_another_symbols_later_split_in_time_is_refused(saved: Path) -> None:
    def stretch(m: dict) -> None:  # A: train to the end, validation and test emptied: no per-symbol overlap
        end = m["split_ranges"]["test"][0][1]
        m["split_ranges"]["train"][0][1] = end
        m["split_ranges"]["validation"][0] = [end, end]
        m["split_ranges"]["test"][0] = [end, end]

    forged(saved, stretch, LOADERS["load_dataset"],
           r"split_ranges\['validation'\] starts at 20\S+, before 'train' ends at 2011-02-25")


def test_a_split_starting_inside_the_warm_up_is_refused(saved: Path) -> None:
    forged(saved, lambda m: m["split_ranges"]["train"][0].__setitem__(0, 3), LOADERS["load_dataset"],
           r"split_ranges\['train'\] of A starts at row 3, before row 56 where the features' warm-up")


def test_reordered_symbols_are_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, reverse_symbols, load,
           r"symbols \['B', 'A'\] with timestamps.npy and prices.npy do not match hashes.source")


def test_reordered_symbols_and_asset_ids_are_refused(saved: Path) -> None:
    def both(m: dict) -> None:
        m["symbols"].reverse()
        m["asset_ids"].reverse()

    forged(saved, both, LOADERS["load_dataset"], r"asset_ids gives B id 1 but row_asset_ids.npy holds \[0\]")


def test_a_window_unlike_the_config_is_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, set_window, load, r"window 12 differs from config.window 8")


def test_a_window_changed_with_its_config_is_refused(saved: Path) -> None:
    def both(m: dict) -> None:
        m["window"] = m["config"]["window"] = 12

    forged(saved, both, LOADERS["load_dataset"], r"split_ranges\['train'\] of A starts at row 56, before row 60")


def test_a_config_unlike_its_hash_is_refused(saved: Path) -> None:
    forged(saved, lambda m: m["config"].__setitem__("start", "2010-01-01"), LOADERS["load_dataset"],
           r"manifest.json: hashes.config is not the hash of field 'config'")


def test_a_timeframe_unlike_the_timestamps_is_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, set_timeframe, load, r"timeframe '1Hour' contradicts timestamps.npy of A, whose median spacing is 1Day")


def test_a_label_unlike_the_config_is_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, set_label, load, r"label \{.*'profit': 0.01,.*\} differs from config.labels \{'profit': 0.05")


def test_a_label_changed_with_its_config_is_refused_by_the_labels(saved: Path) -> None:
    def both(m: dict) -> None:
        m["label"]["horizon"] = m["config"]["labels"]["horizon"] = 4
        rehash_config(m)

    forged(saved, both, LOADERS["load_dataset"], r"labels.npy of A are not those of label \{.*'horizon': 4")


def test_a_scaler_unlike_the_scaled_features_is_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, set_scaler, load, r"scaler does not turn raw_features.npy into features.npy for A")


def test_a_scaler_clip_unlike_the_scaled_features_is_refused(saved: Path) -> None:
    forged(saved, lambda m: m["scaler"].__setitem__("clip", 0.5), LOADERS["load_dataset"],
           r"scaler does not turn raw_features.npy into features.npy")


def test_reordered_feature_names_are_refused(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, swap_feature_names, load, r"feature_names\[0\] is 'ret_5'; config.features build 'ret_1' in that column")


def test_a_non_integer_window_is_refused_not_truncated(saved: Path) -> None:
    forged(saved, lambda m: m.__setitem__("window", 8.7), LOADERS["load_dataset"],
           r"field 'window' must be a JSON integer, not float 8.7")


def test_fractional_split_rows_are_refused_not_truncated(saved: Path) -> None:
    forged(saved, lambda m: m["split_ranges"]["test"][0].__setitem__(0, 250.5), LOADERS["load_dataset"],
           r"field 'split_ranges' entry 'test' must be \[start, end\] row pairs of integers")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["split_ranges"].__setitem__("test", [[250, 300], [250]]), r"field 'split_ranges' entry 'test'"),
        (lambda m: m["scaler"].__setitem__("clip", "x"), r"field 'scaler' has clip='x'; expected null or a number > 0"),
        (lambda m: m["label"].__setitem__("horizon", 2.5), r"label \{.*\} is not a label definition"),
        (lambda m: m["config"].__setitem__("colour", "red"), r"config is not a dataset config"),
        (lambda m: m.__setitem__("symbols", ["A", 1]), r"field 'symbols' must be a list of JSON strings"),
    ],
)
def test_malformed_forged_fields_are_one_line_errors_naming_the_field(saved: Path, change: Change, message: str) -> None:
    forged(saved, change, LOADERS["load_dataset"], message)


def test_a_dataset_of_format_3_is_refused_saying_what_it_lacks(saved: Path) -> None:
    def older(m: dict) -> None:
        m.pop("asset_classes"), m.pop("calendars")
        m["format_version"] = 3

    edit_manifest(saved, older, resign=True)
    with pytest.raises(DatasetIntegrityError, match=r"format_version 3 is not supported \(expected 4\) \(it was saved "
                                                    r"before datasets recorded each symbol's asset class and calendar\)"):
        load_dataset(saved)


def test_a_forged_calendar_is_refused_naming_the_symbol(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, lambda m: m.__setitem__("calendars", ["24/7 (UTC days)", m["calendars"][1]]), load,
           r"calendars gives A '24/7 \(UTC days\)', but its bars follow 'none'")


def test_a_forged_asset_class_is_refused_naming_the_symbol(saved: Path, load: Callable[[Path], MarketData]) -> None:
    forged(saved, lambda m: m.__setitem__("asset_classes", ["crypto", "us_equity"]), load,
           r"asset_classes gives A 'crypto', but A is 'us_equity'")
