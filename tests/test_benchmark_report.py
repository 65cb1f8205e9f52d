"""The benchmark report (evaluation.report): every file written and readable, strict JSON with NaN as null,
report.md with every policy, its ranking in descending pooled Sharpe, intervals, break-even cases and the
verdicts, and rewrites that go through temp files and leave none behind.

The input is a plain dict of the shape ``evaluation.analysis.analyse`` returns, built here from synthetic
per-bar returns (2 markets, 3 folds, 5 policies, 2 seeds, 3 cost levels), so no job is run."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evaluation.config import BenchmarkConfig
from evaluation.report import format_break_even, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKETS = {"equities_daily": ["AAPL", "IBM"], "eurusd_hourly": ["EURUSD"]}
CONFIG = {
    "markets": {"equities_daily": {"symbols": MARKETS["equities_daily"]},
                "eurusd_hourly": {"symbols": MARKETS["eurusd_hourly"], "timeframe": "1Hour"}},
    "folds": {"n_folds": 3},
    "seeds": 2,
    "policies": {"cash": {}, "buy_and_hold": {}, "random": {}, "sma_crossover": {}, "ppo": {"kind": "ppo"}},
    "costs": {"commissions": [0.0], "slippages_bps": [0.0], "break_even_scales": [0.0, 1.0, 2.0]},
    "statistics": {"bootstrap_resamples": 200},
}
# (log return per bar at base costs, volatility, orders per fold) of each policy: every fold and seed of a
# policy has the same total log return (the noise is centred), so the break-even cases are known
BEHAVIOUR = {
    "cash": (0.0, 0.0, 0),
    "buy_and_hold": (0.0006, 0.010, 1),
    "random": (-0.0015, 0.008, 20),  # loses even at zero cost
    "sma_crossover": (0.0011, 0.007, 6),  # makes money at every cost tested
    "ppo": (0.0003, 0.009, 12),  # breaks even at about 25 bps per side
}
BARS = 40


def _level(commission: float, slippage: float) -> str:
    return f"c{commission:g}_s{slippage:g}"


def _metrics(r: np.ndarray, periods: float) -> dict[str, float]:
    equity = np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    sharpe = float(r.mean() / r.std(ddof=1) * math.sqrt(periods)) if r.std() > 0 else 0.0
    return {"log_return": float(r.sum()), "sharpe": sharpe,
            "max_drawdown": float((1 - equity / np.maximum.accumulate(equity)).max())}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "mean": float(np.mean(values)), "n": len(values)}


def _break_even(config: BenchmarkConfig, sensitivity: dict[str, Any]) -> tuple[float | None, str]:
    """Break-even value and note as the analysis gives them (a linear crossing on the scaled-cost path)."""
    costs = config.costs
    path = sorted((costs.commission * k * 1e4 + costs.slippage_bps * k,
                   sensitivity[_level(costs.commission * k, costs.slippage_bps * k)]["log_return"])
                  for k in costs.break_even_scales)
    x, y = np.array(path).T
    if y[0] < 0:
        return None, "negative even at zero cost"
    if (y > 0).all():
        return None, f"positive at every cost tested (up to {x[-1]:g} bps per side)"
    i = int(np.flatnonzero(y <= 0)[0])
    value = float(x[i - 1] + (x[i] - x[i - 1]) * y[i - 1] / (y[i - 1] - y[i]))
    return value, f"{value:.1f} bps per side"


def build_report(seed: int = 0) -> dict[str, Any]:
    """A report dict as ``analyse`` returns it (plus ``run``), from synthetic per-bar log returns."""
    config = BenchmarkConfig.from_dict(CONFIG)
    levels = config.costs.levels()
    base = _level(config.costs.commission, config.costs.slippage_bps)
    base_bps = config.costs.commission * 1e4 + config.costs.slippage_bps
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "base_cost": {"commission": config.costs.commission, "slippage_bps": config.costs.slippage_bps, "level": base},
        "confidence": config.statistics.confidence,
        "markets": {},
    }
    for m, (market, symbols) in enumerate(MARKETS.items()):
        periods = 252.0 if m == 0 else 6048.0
        start = pd.Timestamp("2021-01-04", tz="UTC") if m == 0 else pd.Timestamp("2023-03-01", tz="UTC")
        step = pd.Timedelta(days=1) if m == 0 else pd.Timedelta(hours=1)
        stamps = [[(start + step * (f * BARS + i)).isoformat() for i in range(BARS + 1)] for f in range(3)]
        folds = [{"index": f, "train_start": "2006-01-03T00:00:00+00:00",
                  "validation_start": (start + step * (f * BARS - 30)).isoformat(),
                  "test_start": stamps[f][0], "test_end": stamps[f][-1] if f < 2 else None} for f in range(3)]
        returns = {}  # (policy, fold, seed) -> per-bar log returns at base costs
        for policy, (drift, vol, *_rest) in BEHAVIOUR.items():
            for f in range(3):
                seeds = [0, 1] if policy in ("random", "ppo") else [0]
                for s in seeds:
                    noise = rng.standard_normal(BARS)
                    # folds and seeds differ, but the offsets cancel over folds and (nearly) over seeds
                    offset = 0.0 if policy == "cash" else 0.0004 * (f - 1) + 0.0002 * (2 * s - 1) * (len(seeds) > 1)
                    returns[(policy, f, s)] = drift * (1 + 0.3 * m) + offset + vol * (noise - noise.mean())
        policies: dict[str, Any] = {}
        for policy, (drift, vol, orders) in BEHAVIOUR.items():
            seeds = [0, 1] if policy in ("random", "ppo") else [0]
            kind = "ppo" if policy == "ppo" else policy
            per_fold = []
            for f in range(3):
                for s in seeds:
                    r = returns[(policy, f, s)]
                    per_fold.append({
                        "fold": f, "seed": s, **_metrics(r, periods), "n_orders": float(orders + s),
                        "costs_paid": float(orders * 37.5), "turnover": 0.1 * orders,
                        "exposure": min(1.0, 0.05 * orders),
                        "excess_vs_buy_and_hold": float(r.sum() - returns[("buy_and_hold", f, 0)].sum()),
                        "selection": ("checkpoint with the best validation log return beating cash (t >= 1)"
                                      if kind == "ppo" else "fixed rule"),
                        "train_seconds": 12.0 if kind == "ppo" else None,
                    })
            per_seed = {str(s): _metrics(np.concatenate([returns[(policy, f, s)] for f in range(3)]), periods)
                        for s in seeds}
            mix_returns = np.concatenate([
                np.diff(np.log(np.mean([np.exp(np.concatenate([[0.0], np.cumsum(returns[(policy, f, s)])]))
                                        for s in seeds], axis=0)))
                for f in range(3)])
            pooled = {**_metrics(mix_returns, periods),
                      "n_orders": float(np.mean([row["n_orders"] for row in per_fold]) * 3),
                      "costs_paid": float(orders * 37.5 * 3), "turnover": 0.1 * orders,
                      "exposure": min(1.0, 0.05 * orders)}
            bh_total = float(np.concatenate([returns[("buy_and_hold", f, 0)] for f in range(3)]).sum())
            width = 0.0 if policy == "cash" else 0.6 + 0.1 * (len(policy) % 3)
            # each order costs its cost per side in log return; the base level is the pooled result
            sensitivity = {_level(c, sl): {"commission": c, "slippage_bps": sl, "log_return": pooled["log_return"]
                                           + pooled["n_orders"] * (base_bps - (c * 1e4 + sl)) * 1e-4}
                           for c, sl in levels}
            break_even, note = _break_even(config, sensitivity) if policy != "cash" else (
                None, "n/a (cash is the reference)")
            excess_bh = pooled["log_return"] - bh_total
            policies[policy] = {
                "kind": kind,
                "n_seeds": len(seeds),
                "per_fold": per_fold,
                "per_seed": per_seed,
                "seed_spread": {"log_return": _spread([v["log_return"] for v in per_seed.values()]),
                                "sharpe": _spread([v["sharpe"] for v in per_seed.values()])},
                "pooled": pooled,
                "intervals": {
                    "sharpe": [pooled["sharpe"], pooled["sharpe"] - width, pooled["sharpe"] + width * 1.2],
                    "excess_vs_buy_and_hold": ([0.0, 0.0, 0.0] if policy == "buy_and_hold" else
                                               [excess_bh, excess_bh - 0.08, excess_bh + 0.09]),
                    "excess_vs_cash": [pooled["log_return"], pooled["log_return"] - width / 10,
                                       pooled["log_return"] + width / 9],
                },
                "deflated_sharpe": {"sr": pooled["sharpe"] / math.sqrt(periods), "sr0": 0.05,
                                    "dsr": float(min(1.0, max(0.0, 0.5 + pooled["sharpe"] / 10))),
                                    "n_trials": 7, "n_bars": 3 * BARS, "skewness": 0.0, "kurtosis": 3.0},
                "beat_buy_and_hold_share": float(np.mean([row["excess_vs_buy_and_hold"] > 0 for row in per_fold])),
                "cost_sensitivity": sensitivity,
                "break_even_cost_bps_per_side": break_even,
                "break_even_note": note,
                "selection": sorted({row["selection"] for row in per_fold}),
            }
        ranking = sorted(policies, key=lambda p: policies[p]["pooled"]["sharpe"], reverse=True)
        curves = {str(f): {p: {"timestamps": stamps[f],
                               "equity": np.mean([np.exp(np.concatenate([[0.0], np.cumsum(returns[(p, f, s)])]))
                                                  for s in range(policies[p]["n_seeds"])], axis=0).tolist()}
                           for p in policies} for f in range(3)}
        report["markets"][market] = {
            "folds": folds, "symbols": symbols, "periods_per_year": periods, "mean_block": 3 + m, "n_trials": 7,
            "policies": policies, "ranking": ranking,
            "verdicts": [f"{market}: no policy beats buy-and-hold after costs at 95%.",
                         f"{market}: sma_crossover beat(s) cash after costs at 95%.",
                         f"{market}: random lose(s) money against cash at 95%."],
            "equity_curves": curves,
        }
    report["verdicts"] = [v for market in report["markets"].values() for v in market["verdicts"]]
    report["run"] = {"jobs": 2 * 3 * 7, "cached": 0, "ran": 42, "seconds": 754.2, "config_hash": "ab" * 32}
    return report


def _expected_files() -> set[str]:
    return {"report.json", "report.md"} | {f"{kind}_{market}.png" for market in MARKETS
                                           for kind in ("equity", "sharpe", "costs", "trades")}


def _market_section(text: str, market: str) -> str:
    start = text.index(f"## Market: {market}")
    following = text.find("## Market: ", start + 1)
    return text[start: following if following != -1 else len(text)]


def _ranking_rows(section: str) -> list[list[str]]:
    """The ranking table's cells (header and separator dropped)."""
    block = section[section.index("### Ranking"):]
    rows = []
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[2:]


def _strict_json(path: Path) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    report = build_report()
    run_dir = tmp_path_factory.mktemp("report") / "run"
    paths = write_report(copy.deepcopy(report), run_dir)
    return report, run_dir, paths


def test_every_file_is_written_and_readable(written) -> None:
    report, run_dir, paths = written
    assert set(paths) == _expected_files()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(_expected_files())  # nothing else, no temp file
    for name, path in paths.items():
        assert path == run_dir / name and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, name
    saved = _strict_json(run_dir / "report.json")
    for market in MARKETS:
        assert saved["markets"][market]["ranking"] == report["markets"][market]["ranking"]
        assert saved["markets"][market]["equity_curves"]["0"]["buy_and_hold"]["equity"] == pytest.approx(
            report["markets"][market]["equity_curves"]["0"]["buy_and_hold"]["equity"])
    assert saved["verdicts"] == report["verdicts"]
    assert saved["notes"] and "no non-finite" in saved["notes"][-1]


def test_markdown_has_the_run_facts_every_policy_and_the_verdicts(written) -> None:
    report, run_dir, _ = written
    text = (run_dir / "report.md").read_text()
    assert text.startswith("# Benchmark report")
    assert "0.10% commission + 5 bps slippage per side" in text
    assert "## How to read this" in text and "equal-weight portfolio" in text and "stationary-bootstrap" in text
    assert "every policy x seed run" in text
    assert "200 resamples" in text and "12 min 34 s" in text
    for fold in report["markets"]["equities_daily"]["folds"]:
        assert f"test {fold['test_start'][:10]}" in text
    for policy in BEHAVIOUR:
        assert text.count(policy) >= 2 * 5, policy  # in every table of both markets
    for verdict in report["verdicts"]:
        assert verdict in text
    assert "buy_and_hold" in text
    for market in MARKETS:
        section = _market_section(text, market)
        for kind in ("equity", "sharpe", "costs", "trades"):
            assert f"({kind}_{market}.png)" in section
        assert "### Seeds" in section and "### Per fold" in section and "### Cost sensitivity" in section
        assert "checkpoint with the best validation log return beating cash" in section
        assert "**base**" in section  # the base cost level is marked


def test_each_ranking_is_in_descending_pooled_sharpe_with_intervals(written) -> None:
    report, run_dir, _ = written
    text = (run_dir / "report.md").read_text()
    for market in MARKETS:
        policies = report["markets"][market]["policies"]
        rows = _ranking_rows(_market_section(text, market))
        names = [row[1] for row in rows]
        assert names == sorted(policies, key=lambda p: policies[p]["pooled"]["sharpe"], reverse=True)
        assert names == report["markets"][market]["ranking"]
        for row in rows:
            result = policies[row[1]]
            point, low, high = result["intervals"]["sharpe"]
            assert row[4] == f"{point:.2f} [{low:.2f}, {high:.2f}]"
            assert re.fullmatch(r"-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]", row[5]), row[5]
            assert re.fullmatch(r"-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]", row[6]), row[6]
            assert row[3] == f"{result['pooled']['log_return']:.3f}"
            assert row[7].endswith("%") and row[9].endswith("%") and row[12].endswith("%")


def test_break_even_column_in_the_report(written) -> None:
    report, run_dir, _ = written
    section = _market_section((run_dir / "report.md").read_text(), "equities_daily")
    break_even = {row[1]: row[-1] for row in _ranking_rows(section)}
    ppo = report["markets"]["equities_daily"]["policies"]["ppo"]["break_even_cost_bps_per_side"]
    assert 15 < ppo < 30
    assert break_even == {"cash": "n/a", "buy_and_hold": "> 30", "random": "none", "sma_crossover": "> 30",
                          "ppo": f"{ppo:.1f}"}


@pytest.mark.parametrize("value, note, kind, max_tested, expected", [
    (12.345, "12.3 bps per side", "ppo", None, "12.3"),
    (0.0, "0.0 bps per side", "dqn", 30.0, "0.0"),
    (None, "negative even at zero cost", "random", 30.0, "none"),
    (None, "positive at every cost tested (up to 60 bps per side)", "sma_crossover", None, "> 60"),
    (None, "positive at every cost tested (up to 60 bps per side)", "sma_crossover", 45.0, "> 45"),
    (math.inf, None, "supervised", 30.0, "> 30"),
    (None, "n/a (cash is the reference)", "cash", 30.0, "n/a"),
    (5.0, None, "cash", 30.0, "n/a"),
    (float("nan"), None, "ppo", None, "n/a"),
])
def test_break_even_formatting(value, note, kind, max_tested, expected) -> None:
    assert format_break_even(value, note, kind, max_tested) == expected


def test_nan_and_inf_become_null_and_are_noted(tmp_path) -> None:
    report = build_report(seed=1)
    del report["markets"]["equities_daily"]  # one market is enough here (and twice as fast)
    market = report["markets"]["eurusd_hourly"]
    market["policies"]["ppo"]["pooled"]["sharpe"] = float("nan")
    market["policies"]["ppo"]["intervals"]["sharpe"] = [float("nan"), float("nan"), float("nan")]
    market["policies"]["random"]["deflated_sharpe"]["kurtosis"] = float("inf")
    market["equity_curves"]["1"]["sma_crossover"]["equity"][5] = np.float64("nan")
    market["policies"]["sma_crossover"]["per_seed"]["0"]["log_return"] = np.float32(0.25)
    write_report(report, tmp_path)
    saved = _strict_json(tmp_path / "report.json")
    policies = saved["markets"]["eurusd_hourly"]["policies"]
    assert policies["ppo"]["pooled"]["sharpe"] is None
    assert policies["ppo"]["intervals"]["sharpe"] == [None, None, None]
    assert policies["random"]["deflated_sharpe"]["kurtosis"] is None
    assert saved["markets"]["eurusd_hourly"]["equity_curves"]["1"]["sma_crossover"]["equity"][5] is None
    assert policies["sma_crossover"]["per_seed"]["0"]["log_return"] == pytest.approx(0.25)
    note = saved["notes"][-1]
    assert note.startswith("6 non-finite value(s)") and "$.markets.eurusd_hourly.policies.ppo.pooled.sharpe" in note
    # the policy without a Sharpe is still reported, last, with n/a
    rows = _ranking_rows(_market_section((tmp_path / "report.md").read_text(), "eurusd_hourly"))
    assert rows[-1][1] == "ppo" and rows[-1][4] == "n/a"
    assert len(rows) == len(BEHAVIOUR)


def test_a_second_call_overwrites_through_temp_files_and_leaves_none(written, tmp_path, monkeypatch) -> None:
    report, run_dir, paths = written
    tmp_path.rmdir()
    shutil.copytree(run_dir, tmp_path)  # what a first call wrote
    first = {name: tmp_path / name for name in paths}
    changed = copy.deepcopy(report)
    changed["markets"]["equities_daily"]["verdicts"][0] = "equities_daily: the second call's verdict."
    changed["verdicts"][0] = "equities_daily: the second call's verdict."
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src, dst):
        assert Path(src).parent == tmp_path and Path(src).name.startswith(f".{Path(dst).name}.")
        replaced.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    second = write_report(changed, tmp_path)
    monkeypatch.undo()
    assert second == first
    assert sorted(replaced) == sorted(_expected_files())  # every file went through a temp file + os.replace
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_expected_files())
    text = (tmp_path / "report.md").read_text()
    assert "the second call's verdict" in text and "no policy beats buy-and-hold after costs at 95%" in text
    assert _strict_json(tmp_path / "report.json")["verdicts"][0] == "equities_daily: the second call's verdict."

    # a write that fails midway leaves the previous files whole and no temp file
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(build_report(seed=2), tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
