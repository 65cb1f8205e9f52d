"""features.lookahead and experiments.check_lookahead: leaks are caught at the right bar, causal code passes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features.dataset
import features.lookahead as lookahead
from experiments.check_lookahead import main
from features import DatasetConfig, FeatureScaler, build_features, make_labels, synthetic_bars, warmup_bars
from features.lookahead import (
    ATOL,
    RTOL,
    LookaheadError,
    choose_cuts,
    find_env_lookahead,
    find_lookahead,
    label_guard,
    label_lookahead,
)

ROOT = Path(__file__).resolve().parents[1]
CUTS = [60, 101, 150, 199, 250]

LEAKY_MODULE = '''
import pandas as pd


def features(bars):
    """A causal return and a centred mean (looks two bars ahead)."""
    close = bars["close"]
    return pd.DataFrame({"ret_1": close.pct_change(), "centred_mean": close.rolling(5, center=True).mean()})


def causal(bars):
    return pd.DataFrame({"ret_1": bars["close"].pct_change()})
'''


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(300, seed=3)


def leaky(bars: pd.DataFrame) -> pd.DataFrame:
    """One causal column and the four classic leaks."""
    close = bars["close"]
    gappy = close.where(np.arange(len(close)) % 2 == 0)  # odd rows missing: bfill takes the next bar's close
    return pd.DataFrame(
        {
            "trailing_mean": close.rolling(5).mean(),
            "centred_mean": close.rolling(5, center=True).mean(),
            "bfilled": gappy.bfill(),
            "next_close": close.shift(-1),
            "zscore": (close - close.mean()) / close.std(),
        },
        index=bars.index,
    )


def by_column(findings: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for finding in findings:
        out.setdefault(finding.column, []).append(finding)
    return out


# ----- the comparison -----------------------------------------------------------------------------
def test_each_classic_leak_is_caught_at_its_first_bad_bar(bars: pd.DataFrame) -> None:
    found = by_column(find_lookahead(leaky, bars, CUTS, symbol="SYN"))
    assert "trailing_mean" not in found
    assert [f.cut for f in found["next_close"]] == CUTS
    for f in found["next_close"]:
        assert (f.first_bad_row, f.bad_rows, f.reach) == (f.cut - 1, 1, 1)
        assert f.first_bad_timestamp == bars.index[f.cut - 1]
        assert f.full_value == pytest.approx(bars["close"].iloc[f.cut]) and np.isnan(f.truncated_value)
        assert (f.symbol, f.check) == ("SYN", "features")
    for f in found["centred_mean"]:  # min_periods=5: the last two rows before the cut become NaN
        assert (f.first_bad_row, f.bad_rows) == (f.cut - 2, 2)
    assert [f.cut for f in found["centred_mean"]] == CUTS
    # bfill looks ahead only where a gap reaches the cut: cut - 1 odd (missing) -> row cut - 1 changes.
    assert [f.cut for f in found["bfilled"]] == [c for c in CUTS if (c - 1) % 2 == 1]
    assert all(f.first_bad_row == f.cut - 1 for f in found["bfilled"])
    for f in found["zscore"]:  # a full-sample statistic changes every row
        assert (f.first_bad_row, f.bad_rows) == (0, f.cut)
        assert f.first_bad_timestamp == bars.index[0]
    assert "'zscore' changes at row 0" in found["zscore"][0].describe()


def test_random_cuts_are_seeded_after_the_warmup_and_before_the_end(bars: pd.DataFrame) -> None:
    cuts = choose_cuts(len(bars), 8, seed=1, first=warmup_bars() + 1)
    assert cuts == choose_cuts(len(bars), 8, seed=1, first=warmup_bars() + 1) != choose_cuts(len(bars), 8, seed=2,
                                                                                              first=50)
    assert len(set(cuts)) == 8 and cuts == sorted(cuts)
    assert warmup_bars() + 1 <= cuts[0] and cuts[-1] <= len(bars) - 1
    assert choose_cuts(60, 100, first=50) == list(range(50, 60))  # capped at the rows available
    found = find_lookahead(leaky, bars, 4, seed=7)
    assert {f.cut for f in found if f.column == "next_close"} == set(choose_cuts(len(bars), 4, 7, first=50))
    with pytest.raises(ValueError, match=r"cuts \[300\] must be rows in \[50, 299\]"):
        find_lookahead(leaky, bars, [100, 300])
    with pytest.raises(ValueError, match="the bars have 40 rows"):
        find_lookahead(leaky, bars.iloc[:40])


def test_floating_noise_is_not_flagged_but_a_small_real_change_is(bars: pd.DataFrame) -> None:
    def noisy(frame: pd.DataFrame) -> pd.DataFrame:
        # causal, but rounding depends on the frame's length (as length-dependent summation order would)
        level = frame["close"].cumsum()
        return pd.DataFrame({"cumsum": level * (1.0 + 1e-15 * len(frame)), "zero": 1e-14 * len(frame) * 0.01},
                            index=frame.index)

    def drifting(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"cumsum": frame["close"].cumsum() * (1.0 + 1e-8 * len(frame))}, index=frame.index)

    assert RTOL == 1e-9 and ATOL == 1e-12
    assert find_lookahead(noisy, bars, CUTS) == []
    assert {f.first_bad_row for f in find_lookahead(drifting, bars, CUTS)} == {0}


def test_contract_violations_are_errors_naming_the_cut(bars: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="must return a DataFrame"):
        find_lookahead(lambda b: b["close"].to_numpy(), bars, CUTS)
    with pytest.raises(ValueError, match="one row per bar on the same index"):
        find_lookahead(lambda b: b.iloc[1:], bars, CUTS)
    with pytest.raises(ValueError, match=r"bars.iloc\[:60\]\) returned other columns.*extra \['late'\]"):
        find_lookahead(lambda b: b.assign(late=1.0) if len(b) < 100 else b, bars, CUTS)
    series = find_lookahead(lambda b: b["close"].shift(-1).rename("nxt"), bars, [100])
    assert [(f.column, f.first_bad_row) for f in series] == [("nxt", 99)]


def test_project_features_have_no_lookahead(bars: pd.DataFrame) -> None:
    assert find_lookahead(build_features, bars, 6, seed=0) == []
    hourly = synthetic_bars(300, freq="h", seed=4)
    assert find_lookahead(lambda b: build_features(b, timeframe="1Hour"), hourly, 4) == []


# ----- labels ---------------------------------------------------------------------------------------
def test_label_guard(bars: pd.DataFrame) -> None:
    labels = make_labels(bars)
    table = build_features(bars)
    assert label_guard(table, labels) == []
    bad = table.assign(label_next=0.0, hint=2.0 * labels + 1.0)
    problems = label_guard(bad, labels)
    assert any("'label_next' is named like the label" in p for p in problems)
    assert any("'hint' is a function of the label: 3.0 on every row labelled 1" in p for p in problems)
    assert len(problems) == 2
    found = label_lookahead(bars, cuts=CUTS)
    assert [(f.cut, f.first_bad_row, f.column, f.check) for f in found] == [(c, c - 8, "label", "labels") for c in CUTS]


# ----- env observations ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_symbols() -> dict[str, pd.DataFrame]:
    return {"SYN": synthetic_bars(400, seed=0), "ALT": synthetic_bars(350, seed=1, start_price=50.0)}


def test_env_observations_have_no_lookahead(two_symbols: dict[str, pd.DataFrame]) -> None:
    config = DatasetConfig(window=8)
    result = find_env_lookahead(two_symbols, config, cuts=3, seed=0)
    assert result.findings == []
    assert len(result.cut_timestamps) == 3 and result.label_changes == 3
    assert result.observation_size == 8 * 31 + 5
    # every bar of both symbols from the first usable one up to each cut, purge gap aside
    assert result.observations_compared > 3 * 2 * 100
    assert result.validation_start == two_symbols["SYN"].index[warmup_bars() + 7 + 8 + 8]


def test_env_check_catches_a_leak_in_the_dataset_features(two_symbols, monkeypatch) -> None:
    def leaky_features(frame, *args, **kwargs):
        table = build_features(frame, *args, **kwargs)
        table["rsi_14"] = table["rsi_14"].shift(-1)
        return table

    monkeypatch.setattr(features.dataset, "build_features", leaky_features)
    result = find_env_lookahead(two_symbols, DatasetConfig(window=8), cuts=2, seed=0)
    columns = {(f.check, f.column) for f in result.findings}
    assert columns == {("dataset", "rsi_14"), ("env", "obs:rsi_14")}
    for f in result.findings:
        assert f.first_bad_row == f.cut - 1 and f.first_bad_timestamp == two_symbols[f.symbol].index[f.cut - 1]


def test_env_check_catches_a_leak_in_the_position_state(two_symbols, monkeypatch) -> None:
    import sim.engine

    original = sim.engine.Simulator.position_state_one  # what the single-account env observes

    def peeking_state(self):  # "unrealised return" computed with the next bar's close
        position, _, bars_held, cash_fraction = original(self)
        row = int(self.row[0])
        return position, self.close[min(row + 1, len(self.close) - 1)] / self.close[row] - 1.0, bars_held, cash_fraction

    monkeypatch.setattr(sim.engine.Simulator, "position_state_one", peeking_state)
    import envs.kernel

    monkeypatch.setattr(envs.kernel, "env_step_kernel", None)  # the leak is planted in the Python path
    result = find_env_lookahead(two_symbols, DatasetConfig(window=8), cuts=2, seed=0)
    assert {(f.check, f.column) for f in result.findings} == {("env", "obs:unrealised_return")}
    assert all(f.first_bad_row == f.cut - 1 for f in result.findings)


def test_env_check_refuses_a_scaler_fit_past_the_train_split(two_symbols, monkeypatch) -> None:
    original = lookahead.build_market_data

    def scaler_on_every_row(bars, config, **kwargs):
        data = original(bars, config, **kwargs)
        rows = data.raw_features[~np.isnan(data.raw_features).any(axis=1)]
        return original(bars, config, scaler=FeatureScaler.fit(rows, clip=10.0), asset_map=data.asset_map)

    monkeypatch.setattr(lookahead, "build_market_data", scaler_on_every_row)
    with pytest.raises(LookaheadError, match="scaler changed"):
        find_env_lookahead(two_symbols, DatasetConfig(window=8), cuts=1)


# ----- the command line ----------------------------------------------------------------------------
@pytest.fixture()
def leaky_module(tmp_path, monkeypatch) -> Path:
    (tmp_path / "leaky_user_features.py").write_text(textwrap.dedent(LEAKY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture()
def small_config(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text("dataset:\n  symbols: [AAPL, IBM]\n  start: '2010-01-01'\n  end: '2012-12-31'\n")
    return path


def test_cli_flags_a_leaking_user_function(leaky_module, capsys) -> None:
    code = main(["--features", "leaky_user_features:features", "--symbols", "AAPL", "--cuts", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "LOOK-AHEAD: 1 column(s)" in out and "centred_mean" in out and "3/3" in out
    assert "ret_1" not in out.split("LOOK-AHEAD")[1]
    assert main(["--features", "leaky_user_features:causal", "--symbols", "AAPL", "--cuts", "2"]) == 0


def test_cli_passes_the_project_features_and_env(small_config, capsys) -> None:
    assert main(["--config", str(small_config), "--cuts", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "AAPL, IBM" in out and "TradingEnv-v0" in out and "clean: no look-ahead found" in out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "is not MODULE:FUNCTION"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("leaky_user_features:missing", "has no attribute 'missing'"),
        ("leaky_user_features:pd", "is a module, not a function"),
    ],
)
def test_cli_usage_errors_are_one_line(leaky_module, capsys, spec: str, message: str) -> None:
    assert main(["--features", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_help_shows_defaults_and_bad_arguments_exit_2(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 5)" in out and "(default: 0)" in out
    assert main(["--cuts", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_cli_exit_code_in_a_subprocess(leaky_module) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(leaky_module), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "experiments.check_lookahead", "--features", "leaky_user_features:features",
         "--symbols", "IBM", "--cuts", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "centred_mean" in done.stdout
