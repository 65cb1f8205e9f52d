"""The shipped benchmark's crypto market (24/7 hourly pairs) and mixed market (ETFs and pairs on one daily
timeline) run on bars the tests write into the Parquet cache, exactly where experiments.fetch_bars would;
a market whose bars are not cached is left out of a default run with the download command, and an error
when named with --markets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from evaluation.benchmark import run_benchmark
from evaluation.config import BenchmarkConfig
from evaluation.executor import SerialExecutor
from evaluation.runner import _market_bars
from experiments import benchmark as benchmark_cli
from experiments.common import run_cli
from features.calendars import calendar_for
from features.parquet_cache import write_cached_bars

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "benchmark.yaml"
MARKETS = ("crypto_hourly", "stocks_and_crypto_daily")


def random_walk(index: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    """OHLCV bars of a seeded random walk on ``index``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, len(index))))
    open_ = close * np.exp(rng.normal(0.0, 0.002, len(index)))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.003,
                         "low": np.minimum(open_, close) * 0.997, "close": close,
                         "volume": rng.uniform(1e3, 1e4, len(index))}, index=index)


def write_market_caches(root: Path) -> None:
    """The shipped markets' symbols in the cache: pairs every hour and every day, ETFs on NYSE sessions."""
    shipped = yaml.safe_load(SHIPPED.read_text())["markets"]
    hours = pd.date_range("2024-01-01", periods=24 * 75, freq="h", tz="UTC")
    for i, symbol in enumerate(shipped["crypto_hourly"]["symbols"]):
        write_cached_bars(random_walk(hours, i), symbol, "1Hour", root)
    days = pd.date_range("2019-01-01", "2022-12-31", freq="D", tz="UTC")
    # as Alpaca stamps daily bars: a stock's day at midnight New York (04:00/05:00 UTC), a pair's at 00:00 UTC
    sessions = pd.DatetimeIndex(calendar_for("us_equity").sessions("2019-01-01", "2022-12-31")).tz_localize(
        "America/New_York").tz_convert("UTC")
    for i, symbol in enumerate(shipped["stocks_and_crypto_daily"]["symbols"]):
        write_cached_bars(random_walk(days if "/" in symbol else sessions, 10 + i), symbol, "1Day", root)


def shipped_markets(policies: list[str] | None = None) -> BenchmarkConfig:
    """The shipped config's --quick settings on its crypto and mixed markets (``policies``: only these)."""
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["markets"] = {name: raw["markets"][name] for name in MARKETS}
    if policies is not None:
        for market in raw["markets"].values():
            market["policies"] = [p for p in market["policies"] if p in policies]
    raw["statistics"]["bootstrap_resamples"] = 50
    return BenchmarkConfig.from_dict(raw).with_quick()


@pytest.fixture
def in_cache_folder(tmp_path, monkeypatch) -> Path:
    """A working folder whose data/historical (the shipped markets' cache_dir) holds the bars."""
    monkeypatch.chdir(tmp_path)
    write_market_caches(tmp_path / "data" / "historical")
    return tmp_path


def test_the_crypto_and_mixed_markets_run_with_their_calendars_annualisation(in_cache_folder) -> None:
    config = shipped_markets(["cash", "buy_and_hold", "sma_crossover", "equal_weight", "inverse_volatility"])
    report = run_benchmark(config, in_cache_folder / "runs" / "r", executor=SerialExecutor(), progress=False)
    crypto, mixed = report["markets"]["crypto_hourly"], report["markets"]["stocks_and_crypto_daily"]
    assert crypto["symbols"] == ["BTC/USD", "ETH/USD", "SOL/USD"]
    assert crypto["periods_per_year"] == 8_760.0 and "24/7" in crypto["annualised_by"]
    assert mixed["periods_per_year"] == 365.0  # the union timeline of ETFs and pairs has every day
    assert {"buy_and_hold", "equal_weight", "inverse_volatility"} <= set(mixed["policies"])
    text = (in_cache_folder / "runs" / "r" / "report.md").read_text()
    assert "annualised by 24/7 (UTC days) calendar: 8,760.0 1Hour bars a year" in text


def test_a_default_run_leaves_out_uncached_markets_naming_the_download(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    config, notes = BenchmarkConfig.from_yaml(SHIPPED).without_uncached_markets()
    assert not {m.name for m in config.markets} & set(MARKETS)
    assert any(note.startswith("market crypto_hourly left out: no cached 1Hour bars of BTC/USD, ETH/USD, SOL/USD "
                               "in data/historical; download them with python -m experiments.fetch_bars --symbols "
                               "BTC/USD ETH/USD SOL/USD --timeframe 1Hour") for note in notes)


def test_naming_an_uncached_market_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _market_bars.cache_clear()  # the bars another test loaded from its own data/historical (a relative path)
    code = run_cli(benchmark_cli.main, ["--markets", "crypto_hourly", "--quick", "--no-progress",
                                        "--runs-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "BTC~USD" in err and "1Hour" in err
    assert not any(tmp_path.glob("benchmark*"))


@pytest.mark.slow
def test_the_shipped_quick_benchmark_runs_every_policy_of_the_crypto_and_mixed_markets(in_cache_folder) -> None:
    config = shipped_markets()
    report = run_benchmark(config, in_cache_folder / "runs" / "q", executor=SerialExecutor(), progress=False)
    for name in MARKETS:
        market = report["markets"][name]
        assert set(market["policies"]) == set(config.markets[MARKETS.index(name)].policies)
    assert (in_cache_folder / "runs" / "q" / "report.md").exists()
