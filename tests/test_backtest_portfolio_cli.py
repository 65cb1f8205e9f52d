"""``python -m experiments.backtest --portfolio``: one account across the dataset's symbols, an allocation fitted
on train (or a saved portfolio agent), the outputs of a portfolio backtest; user mistakes in one line."""

from __future__ import annotations

import json

import pandas as pd

from experiments import backtest
from experiments.common import run_cli
from features import synthetic_bars
from features.dataset import DatasetConfig, build_market_data


def _dataset(tmp_path):
    bars = {name: synthetic_bars(500, seed=seed) for seed, name in enumerate(["AAA", "BBB", "CCC"])}
    data = build_market_data(bars, DatasetConfig(window=4))
    return data.save(tmp_path / "dataset")


def test_an_allocation_backtest_writes_the_portfolio_outputs(tmp_path, capsys) -> None:
    dataset = _dataset(tmp_path)
    metrics = backtest.main(["--portfolio", "--policy", "inverse_volatility", "--dataset", str(dataset),
                             "--runs-dir", str(tmp_path / "runs"), "--run-name", "p", "--no-plot"])
    out = tmp_path / "runs" / "p"
    assert {p.name for p in (out / "portfolio").iterdir()} >= {"equity.csv", "weights.csv", "fills.csv",
                                                                 "metrics.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["portfolio"] is True and summary["symbols"] == ["AAA", "BBB", "CCC"]
    assert "refit on train rows" in summary["description"]
    weights = pd.read_csv(out / "portfolio" / "weights.csv")
    assert len(weights) == len(pd.read_csv(out / "portfolio" / "equity.csv"))
    assert metrics["portfolio"]["total_return"] == summary["metrics"]["total_return"]
    assert "Orders filled" in capsys.readouterr().out


def test_portfolio_mistakes_are_one_line(tmp_path, capsys) -> None:
    dataset = _dataset(tmp_path)
    base = ["--portfolio", "--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs")]
    code = run_cli(backtest.main, base + ["--policy", "equal_wieght"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "equal_wieght" in err and "equal_weight" in err
    code = run_cli(backtest.main, base + ["--policy", "equal_weight", "--symbol", "AAA"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "at least 2 assets" in err
    code = run_cli(backtest.main, base + ["--policy", "equal_weight", "--rebalance-every", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--rebalance-every 0" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
