"""sim.metrics against values worked out by hand on small series, and its degenerate cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.metrics import (
    bars_per_year,
    compute_metrics,
    drawdown_curve,
    format_metrics_table,
    metrics_to_json,
)

METRIC_KEYS = {
    "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
    "max_drawdown_peak", "max_drawdown_trough", "max_drawdown_duration_bars", "win_rate",
    "profit_factor", "avg_trade_pnl", "avg_trade_return", "avg_bars_held", "exposure", "turnover",
    "annual_turnover", "n_trades", "costs_paid", "final_equity", "start_equity", "n_bars",
    "periods_per_year",
}


def daily_stamps(n: int, start: str = "2021-01-04") -> np.ndarray:
    """n consecutive calendar days at midnight UTC, as int64 ns."""
    days = np.datetime64(start, "D") + np.arange(n)
    return days.astype("datetime64[ns]").astype(np.int64)


def trade_log(net_pnl, size, entry_price, bars_held) -> dict[str, np.ndarray]:
    net_pnl = np.asarray(net_pnl, dtype=np.float64)
    n = net_pnl.size
    costs = np.full(n, 1.0)
    return {
        "entry_time": daily_stamps(n),
        "exit_time": daily_stamps(n) + 86_400 * 10**9,
        "entry_price": np.asarray(entry_price, dtype=np.float64),
        "exit_price": np.asarray(entry_price, dtype=np.float64),
        "size": np.asarray(size, dtype=np.float64),
        "gross_pnl": net_pnl + costs,
        "net_pnl": net_pnl,
        "costs": costs,
        "bars_held": np.asarray(bars_held, dtype=np.int64),
    }


def metrics_for(equity, periods_per_year: float = 252.0, **kwargs):
    equity = np.asarray(equity, dtype=np.float64)
    return compute_metrics(equity, daily_stamps(equity.size), periods_per_year=periods_per_year, **kwargs)


def assert_json_safe(metrics: dict) -> None:
    json.dumps(metrics, allow_nan=False)
    for key, value in metrics.items():
        assert value is None or type(value) in (float, int, str), (key, type(value))


# ---------------------------------------------------------------- returns, CAGR, volatility


def test_total_return_and_cagr_with_known_periods_per_year():
    m = metrics_for([100.0, 110.0, 121.0], periods_per_year=2)  # two bars = one year
    assert m["total_return"] == pytest.approx(0.21)
    assert m["cagr"] == pytest.approx(0.21)
    m = metrics_for([100.0, 150.0, 225.0], periods_per_year=1)  # two years, x2.25
    assert m["total_return"] == pytest.approx(1.25)
    assert m["cagr"] == pytest.approx(0.5)
    assert m["start_equity"] == 100.0 and m["final_equity"] == 225.0
    assert m["n_bars"] == 3 and m["periods_per_year"] == 1.0
    assert set(m) == METRIC_KEYS


FIVE_RETURNS = [0.01, -0.02, 0.03, 0.00, 0.02]
FIVE_EQUITY = 100.0 * np.concatenate(([1.0], np.cumprod(1.0 + np.array(FIVE_RETURNS))))


def test_volatility_sharpe_sortino_on_five_returns():
    # mean 0.008; deviations .002 -.028 .022 -.008 .012 -> squares sum 1480e-6 -> sample var 370e-6
    # downside: only -0.02 -> mean square 4e-4 / 5 = 8e-5
    m = metrics_for(FIVE_EQUITY, periods_per_year=252)
    assert m["annual_volatility"] == pytest.approx(math.sqrt(370e-6) * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(0.008 / math.sqrt(370e-6) * math.sqrt(252))
    assert m["sortino"] == pytest.approx(0.008 / math.sqrt(8e-5) * math.sqrt(252))


def test_risk_free_rate_is_taken_per_bar():
    # 4 bars a year and 1.01**4 - 1 a year make 1% a bar: excess 0 -.03 .02 -.01 .01, mean -0.002
    # downside squares 9e-4 + 1e-4 over 5 -> 2e-4
    m = metrics_for(FIVE_EQUITY, periods_per_year=4, risk_free_rate=1.01**4 - 1)
    assert m["annual_volatility"] == pytest.approx(math.sqrt(370e-6) * 2)
    assert m["sharpe"] == pytest.approx(-0.002 / math.sqrt(370e-6) * 2)
    assert m["sortino"] == pytest.approx(-0.002 / math.sqrt(2e-4) * 2)


# ---------------------------------------------------------------- drawdown


def test_max_drawdown_with_peak_and_trough_dates_and_calmar():
    # -25% from 120 (Jan 5) to 90 (Jan 6); a later, shallower drawdown lasts longer (3 bars)
    equity = [100.0, 120.0, 90.0, 110.0, 130.0, 125.0, 120.0, 126.0]
    m = metrics_for(equity, periods_per_year=7)  # seven steps = one year
    assert m["max_drawdown"] == pytest.approx(0.25)
    assert m["max_drawdown_peak"] == "2021-01-05T00:00:00Z"
    assert m["max_drawdown_trough"] == "2021-01-06T00:00:00Z"
    assert m["max_drawdown_duration_bars"] == 3
    assert m["cagr"] == pytest.approx(0.26)
    assert m["calmar"] == pytest.approx(0.26 / 0.25)


def test_drawdown_curve_and_peak_on_a_plateau():
    equity = np.array([100.0, 100.0, 80.0, 100.0])
    np.testing.assert_allclose(drawdown_curve(equity), [0.0, 0.0, -0.2, 0.0])
    m = metrics_for(equity)
    assert m["max_drawdown_peak"] == "2021-01-05T00:00:00Z"  # the last bar at the peak, where the fall began
    assert m["max_drawdown_trough"] == "2021-01-06T00:00:00Z"
    assert m["max_drawdown_duration_bars"] == 1


def test_drawdown_dates_keep_sub_second_precision():
    stamps = np.array([0, 1_500_000_000, 3_000_000_001], dtype=np.int64)
    m = compute_metrics(np.array([1.0, 2.0, 1.0]), stamps, periods_per_year=1.0)
    assert m["max_drawdown_peak"] == "1970-01-01T00:00:01.500Z"
    assert m["max_drawdown_trough"] == "1970-01-01T00:00:03.000000001Z"


# ---------------------------------------------------------------- trades, exposure, turnover


def test_trade_statistics_on_three_trades():
    # entry notionals 1000, 1000, 100 -> trade returns .05, -.02, .10
    trades = trade_log(net_pnl=[50.0, -20.0, 10.0], size=[10.0, -5.0, 2.0],
                       entry_price=[100.0, 200.0, 50.0], bars_held=[3, 5, 1])
    m = metrics_for([100.0, 104.0], trades=trades, costs_paid=3.0)
    assert m["n_trades"] == 3
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(60.0 / 20.0)
    assert m["avg_trade_pnl"] == pytest.approx(40.0 / 3)
    assert m["avg_trade_return"] == pytest.approx(0.13 / 3)
    assert m["avg_bars_held"] == pytest.approx(3.0)
    assert m["costs_paid"] == 3.0


def test_exposure_and_turnover():
    equity = [100.0, 110.0, 90.0, 100.0, 100.0]  # mean 100, four steps
    m = metrics_for(equity, periods_per_year=2, position=np.array([0.0, 1.0, 1.0, -0.5, 0.0]),
                    traded_notional=250.0)
    assert m["exposure"] == pytest.approx(0.6)
    assert m["turnover"] == pytest.approx(2.5)
    assert m["annual_turnover"] == pytest.approx(1.25)  # over two years
    assert metrics_for(equity)["exposure"] is None


# ---------------------------------------------------------------- bars_per_year


def test_bars_per_year_on_business_days():
    days = np.arange("2016-01-01", "2020-01-01", dtype="datetime64[D]")
    business = days[np.is_busday(days)]
    assert business.size == 261 + 260 + 261 + 261  # 2016 .. 2019
    stamps = business.astype("datetime64[ns]").astype(np.int64)
    # 2016-01-01 (Fri) .. 2019-12-31 (Tue) is 1460 days
    assert bars_per_year(stamps) == pytest.approx(1042 / (1460 / 365.25))
    assert bars_per_year(business) == pytest.approx(1042 / (1460 / 365.25))  # datetime64 too


def test_bars_per_year_on_hourly_stamps():
    hours = np.datetime64("2021-01-04T00", "h") + np.arange(52 * 7 * 24)  # 52 weeks from a Monday
    assert bars_per_year(hours.astype("datetime64[ns]").astype(np.int64)) == pytest.approx(8766.0)
    weekdays = hours[np.is_busday(hours.astype("datetime64[D]"))]
    assert weekdays.size == 52 * 5 * 24
    # Monday 00:00 to the 52nd Friday 23:00: 51 weeks + 4 days + 23 hours = 8687 hours
    fx = bars_per_year(weekdays.astype("datetime64[ns]").astype(np.int64))
    assert fx == pytest.approx(6239 / (8687 / 8766))
    assert 6200 < fx < 6300


def test_bars_per_year_rejects_too_few_or_unordered_stamps():
    with pytest.raises(ValueError, match="at least 2"):
        bars_per_year(np.array([0], dtype=np.int64))
    with pytest.raises(ValueError, match="strictly increasing"):
        bars_per_year(np.array([0, 10, 10], dtype=np.int64))
    with pytest.raises(ValueError, match="strictly increasing"):
        bars_per_year(np.array([10, 0], dtype=np.int64))


# ---------------------------------------------------------------- degenerate cases


@pytest.mark.filterwarnings("error")
def test_zero_trades():
    empty = trade_log(net_pnl=[], size=[], entry_price=[], bars_held=[])
    for trades in (None, empty):
        m = metrics_for([100.0, 101.0, 100.5], trades=trades)
        assert m["n_trades"] == 0
        for key in ("win_rate", "profit_factor", "avg_trade_pnl", "avg_trade_return", "avg_bars_held"):
            assert m[key] is None
        assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_constant_equity():
    m = metrics_for([100.0] * 10, position=np.zeros(10))
    assert m["total_return"] == 0.0 and m["cagr"] == 0.0
    assert m["annual_volatility"] == 0.0
    assert m["sharpe"] == 0.0 and m["sortino"] == 0.0 and m["calmar"] == 0.0
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_duration_bars"] == 0
    assert m["max_drawdown_peak"] is None and m["max_drawdown_trough"] is None
    assert m["exposure"] == 0.0 and m["turnover"] == 0.0
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_all_losing_trades():
    trades = trade_log(net_pnl=[-5.0, -1.0], size=[1.0, 1.0], entry_price=[100.0, 100.0], bars_held=[2, 2])
    m = metrics_for([100.0, 95.0, 94.0], trades=trades)
    assert m["win_rate"] == 0.0
    assert m["profit_factor"] == 0.0
    assert m["avg_trade_return"] == pytest.approx(-0.03)
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_only_winning_trades_and_no_downside_give_none_not_infinity():
    trades = trade_log(net_pnl=[1.0, 2.0], size=[1.0, 1.0], entry_price=[100.0, 100.0], bars_held=[1, 1])
    m = metrics_for([100.0, 101.0, 103.0], trades=trades)
    assert m["profit_factor"] is None  # would be +inf
    assert m["sortino"] is None  # no downside returns: would be +inf
    assert m["calmar"] is None  # no drawdown: would be +inf
    assert m["sharpe"] > 0
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_single_bar():
    m = metrics_for([100.0], position=np.array([1.0]))
    assert m["n_bars"] == 1 and m["total_return"] == 0.0 and m["cagr"] == 0.0
    assert m["annual_volatility"] == 0.0 and m["sharpe"] == 0.0 and m["sortino"] == 0.0
    assert m["max_drawdown"] == 0.0 and m["calmar"] == 0.0
    assert m["exposure"] == 1.0 and m["annual_turnover"] == 0.0
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_equity_to_zero():
    m = metrics_for([100.0, 50.0, 0.0, 0.0], traded_notional=100.0)
    assert m["total_return"] == -1.0
    assert m["cagr"] == -1.0
    assert m["max_drawdown"] == 1.0
    assert m["max_drawdown_trough"] == "2021-01-06T00:00:00Z"
    assert m["calmar"] == -1.0
    # returns -0.5, -1, then 0 after ruin
    assert m["sharpe"] == pytest.approx(-0.5 / np.std([-0.5, -1.0, 0.0], ddof=1) * math.sqrt(252))
    assert m["turnover"] == pytest.approx(100.0 / 37.5)
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_negative_equity_and_overflowing_cagr_stay_json_safe():
    m = metrics_for([100.0, -20.0])
    assert m["total_return"] == pytest.approx(-1.2) and m["cagr"] == -1.0
    assert m["max_drawdown"] == pytest.approx(1.2)
    assert_json_safe(m)
    m = metrics_for([1.0, 1e300], periods_per_year=1e6)
    assert m["cagr"] is None and m["calmar"] is None
    assert_json_safe(m)


@pytest.mark.filterwarnings("error")
def test_constant_growth_is_not_an_astronomical_sharpe():
    m = metrics_for(100.0 * 1.001 ** np.arange(50))
    assert m["annual_volatility"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None  # positive return, no risk: would be +inf
    m = metrics_for([100.0] * 5, risk_free_rate=0.05)
    assert m["sharpe"] is None  # flat equity under a positive rate: would be -inf
    assert_json_safe(m)


# ---------------------------------------------------------------- input errors


def test_bad_inputs_raise_clear_errors():
    stamps = daily_stamps(3)
    with pytest.raises(ValueError, match="must be positive"):
        compute_metrics(np.array([0.0, 1.0, 2.0]), stamps, periods_per_year=252)
    with pytest.raises(ValueError, match="finite"):
        compute_metrics(np.array([1.0, np.nan, 2.0]), stamps, periods_per_year=252)
    with pytest.raises(ValueError, match="one per bar"):
        compute_metrics(np.array([1.0, 2.0]), stamps, periods_per_year=252)
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_metrics(np.ones(3), stamps[::-1], periods_per_year=252)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics(np.ones(3), stamps, periods_per_year=0)
    with pytest.raises(ValueError, match="missing key"):
        compute_metrics(np.ones(3), stamps, {"net_pnl": np.ones(2)}, periods_per_year=252)
    with pytest.raises(ValueError, match="one per bar"):
        compute_metrics(np.ones(3), stamps, periods_per_year=252, position=np.ones(2))
    with pytest.raises(ValueError, match="equity"):
        drawdown_curve(np.array([]))


# ---------------------------------------------------------------- JSON and table


def test_metrics_to_json_cleans_numpy_and_non_finite_values():
    raw = {
        "a": np.float64(np.nan), "b": float("inf"), "c": np.int64(3), "d": np.float32(1.5),
        "e": np.bool_(True), "f": np.array([1.0, np.inf]), "g": {"h": -np.inf}, "i": "text", "j": None,
        "k": np.datetime64("2021-01-04T00:00:00", "ns"),
    }
    clean = metrics_to_json(raw)
    assert json.loads(json.dumps(clean, allow_nan=False)) == {
        "a": None, "b": None, "c": 3, "d": 1.5, "e": True, "f": [1.0, None], "g": {"h": None},
        "i": "text", "j": None, "k": "2021-01-04T00:00:00Z",
    }
    with pytest.raises(TypeError, match="JSON"):
        metrics_to_json({"x": object()})


def test_format_metrics_table():
    trades = trade_log(net_pnl=[50.0, -20.0, 10.0], size=[10.0, -5.0, 2.0],
                       entry_price=[100.0, 200.0, 50.0], bars_held=[3, 5, 1])
    m = metrics_for([100.0, 110.0, 121.0], periods_per_year=2, trades=trades, costs_paid=1234.5)
    table = format_metrics_table(m, title="SMA crossover, test split")
    lines = table.splitlines()
    assert lines[0] == "SMA crossover, test split" and set(lines[1]) == {"-"}
    rows = {line[: line.index("  ")].strip(): line.split()[-1] for line in lines[2:-1]}
    assert rows["Total return"] == "21.00%"
    assert rows["Win rate"] == "66.67%"
    assert rows["Trades (closed)"] == "3"
    assert rows["Bars"] == "3"
    assert rows["Costs paid"] == "1,234.50"
    assert rows["Profit factor"] == "3.000"
    assert rows["Max drawdown trough"] == "n/a"
    assert len({len(line) for line in lines[2:-1]}) == 1  # aligned columns
    assert format_metrics_table(metrics_to_json(m)) == "\n".join(lines[2:-1])


def test_sim_metrics_imports_numpy_only():
    code = "import sys, sim.metrics; bad = {'pandas', 'torch', 'gymnasium'} & set(sys.modules); print(bad)"
    repo_root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root
    )
    assert out.stdout.strip() == "set()"
