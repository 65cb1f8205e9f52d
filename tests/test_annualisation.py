"""Annualisation follows each symbol's calendar: 365 days and 8,760 hours a year for crypto, the XNYS sessions
and trading hours for US stocks, the measured frequency for bars that follow no known calendar; the dataset
records each symbol's asset class and calendar, and the backtests and the benchmark annualise by them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.baselines import BuyAndHoldPolicy
from envs.backtest import backtest
from agents.portfolio_baselines import fit_allocation_policy
from envs.portfolio_backtest import backtest_portfolio
from features import DatasetConfig, build_market_data, synthetic_bars
from features.panel import Panel, PanelError
from features.calendars import (
    NO_CALENDAR,
    CalendarError,
    annualisation,
    bars_calendar,
    calendar_for,
    calendar_named,
    timeline_calendar,
)
from sim.metrics import bars_per_year

XNYS, CRYPTO = "XNYS", "24/7 (UTC days)"


def frame(index: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    """Random-walk OHLCV bars on ``index`` (UTC)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(index))))
    return pd.DataFrame({"open": close * (1 + rng.normal(0, 0.002, len(index))), "high": close * 1.01,
                         "low": close * 0.99, "close": close, "volume": np.full(len(index), 1e4)}, index=index)


def session_hours(start: str, end: str) -> pd.DatetimeIndex:
    """Hourly bar starts as Alpaca stamps a stock's regular session: 9:00 (the 9:30-10:00 part) to 15:00 NY."""
    opens, closes = calendar_for("us_equity").session_bounds(start, end)
    hour = 3_600 * 10**9
    stamps = [t for o, c in zip(opens, closes) for t in range(o - o % hour, c, hour)]
    return pd.DatetimeIndex(np.asarray(stamps, dtype="datetime64[ns]"), tz="UTC")


def sessions_daily(start: str, end: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(calendar_for("us_equity").sessions(start, end), tz="UTC")


def every_day(start: str, periods: int, freq: str = "D") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq=freq, tz="UTC")


CONFIG = DatasetConfig(window=8, split={"train": 0.6, "validation": 0.2, "test": 0.2})


# ------------------------------------------------------------------ which calendar the bars follow

def test_stock_sessions_daily_and_hourly_follow_xnys() -> None:
    assert bars_calendar("AAA", sessions_daily("2021-01-01", "2021-12-31").asi8, "1Day") == XNYS
    assert bars_calendar("AAA", session_hours("2021-11-20", "2021-12-31").asi8, "1Hour") == XNYS


def test_a_stock_bar_on_a_holiday_or_a_weekend_follows_no_calendar() -> None:
    days = sessions_daily("2021-01-01", "2021-12-31").append(pd.DatetimeIndex(["2021-12-25"], tz="UTC"))
    assert bars_calendar("AAA", np.sort(days.asi8), "1Day") == NO_CALENDAR  # Christmas Day: no session
    business = pd.bdate_range("2021-01-01", "2021-12-31", tz="UTC")  # business days include the NYSE holidays
    assert bars_calendar("AAA", business.asi8, "1Day") == NO_CALENDAR
    saturday = pd.DatetimeIndex(["2021-12-04 15:00"], tz="UTC")
    assert bars_calendar("AAA", session_hours("2021-11-29", "2021-12-03").append(saturday).asi8, "1Hour") == NO_CALENDAR


def test_an_hourly_stock_bar_in_the_night_follows_no_calendar() -> None:
    night = pd.DatetimeIndex(["2021-12-02 03:00"], tz="UTC")
    stamps = np.sort(session_hours("2021-11-29", "2021-12-03").append(night).asi8)
    assert bars_calendar("AAA", stamps, "1Hour") == NO_CALENDAR


def test_a_crypto_pair_follows_24_7_weekends_included() -> None:
    assert bars_calendar("BTC/USD", every_day("2021-01-01", 24 * 30, "h").asi8, "1Hour") == CRYPTO


def test_bars_before_the_calendar_starts_follow_no_calendar() -> None:
    assert bars_calendar("AAA", pd.bdate_range("1985-01-01", periods=50, tz="UTC").asi8, "1Day") == NO_CALENDAR


# ------------------------------------------------------------------ bars per year by calendar

@pytest.mark.parametrize(("calendar", "timeframe", "expected"), [
    (CRYPTO, "1Hour", 8_760.0), (CRYPTO, "1Day", 365.0), (CRYPTO, "15Min", 35_040.0),
    (XNYS, "1Day", 251.6), (XNYS, "1Hour", 1_629.4),
])
def test_a_known_calendar_gives_its_bars_per_year(calendar: str, timeframe: str, expected: float) -> None:
    periods, basis = annualisation(calendar, timeframe, np.zeros(0, dtype=np.int64))
    assert periods == pytest.approx(expected, abs=0.05)
    assert calendar in basis


def test_no_calendar_measures_the_bars_frequency() -> None:
    stamps = pd.bdate_range("2020-01-01", periods=600, tz="UTC").asi8
    periods, basis = annualisation(NO_CALENDAR, "1Day", stamps)
    assert periods == pytest.approx(bars_per_year(stamps)) and "measured" in basis


def test_an_unknown_calendar_name_is_a_one_line_error() -> None:
    with pytest.raises(CalendarError, match=r"calendar 'LSE' is not known; expected one of \['XNYS', '24/7"):
        calendar_named("LSE")


def test_a_timeline_with_any_pair_is_round_the_clock() -> None:
    assert timeline_calendar([XNYS, CRYPTO]) == CRYPTO
    assert timeline_calendar([XNYS, XNYS]) == XNYS
    assert timeline_calendar([XNYS, NO_CALENDAR]) == NO_CALENDAR


# ------------------------------------------------------------------ datasets record them, backtests use them

def test_a_dataset_records_each_symbols_asset_class_and_calendar_and_keeps_them_through_save(tmp_path) -> None:
    bars = {"AAA": frame(sessions_daily("2019-01-01", "2021-12-31")),
            "BTC/USD": frame(every_day("2019-01-01", 3 * 365), seed=1), "SYN": synthetic_bars(700, seed=2)}
    data = build_market_data(bars, CONFIG)
    assert data.asset_classes == ["us_equity", "crypto", "us_equity"]
    assert data.calendars == [XNYS, CRYPTO, NO_CALENDAR]
    from features import load_dataset

    loaded = load_dataset(data.save(tmp_path / "ds"))
    assert (loaded.asset_classes, loaded.calendars) == (data.asset_classes, data.calendars)


@pytest.mark.parametrize(("symbol", "index", "expected"), [
    ("BTC/USD", every_day("2021-01-01", 24 * 120, "h"), 8_760.0),
    ("AAA", session_hours("2021-06-01", "2021-12-31"), 1_629.4),
    ("BTC/USD", every_day("2019-01-01", 3 * 365), 365.0),
    ("AAA", sessions_daily("2019-01-01", "2021-12-31"), 251.6),
])
def test_a_backtest_is_annualised_by_the_symbols_calendar(symbol: str, index: pd.DatetimeIndex,
                                                          expected: float) -> None:
    data = build_market_data({symbol: frame(index)}, CONFIG)
    result = backtest(BuyAndHoldPolicy(), data, "test")
    assert result.metrics["periods_per_year"] == pytest.approx(expected, abs=0.05)
    returns = result.equity[1:] / result.equity[:-1] - 1.0
    sharpe = returns.mean() / returns.std(ddof=1) * np.sqrt(expected)
    assert result.metrics["sharpe"] == pytest.approx(sharpe, rel=1e-3, abs=1e-3)


def test_a_backtest_of_bars_on_no_calendar_is_annualised_by_their_measured_frequency() -> None:
    data = build_market_data({"SYN": synthetic_bars(700, seed=2)}, CONFIG)
    result = backtest(BuyAndHoldPolicy(), data, "test")
    rows = data.symbol_rows("SYN")
    assert result.metrics["periods_per_year"] == pytest.approx(bars_per_year(data.timestamps[rows]))


def test_a_mixed_universe_on_daily_bars_is_annualised_round_the_clock() -> None:
    bars = {"AAA": frame(sessions_daily("2019-01-01", "2021-12-31")),
            "BBB": frame(sessions_daily("2019-01-01", "2021-12-31"), seed=3),
            "BTC/USD": frame(every_day("2019-01-01", 3 * 365), seed=1)}
    mixed = build_market_data(bars, CONFIG)
    result = backtest_portfolio(fit_allocation_policy("equal_weight", mixed), mixed, "test")
    assert result.metrics["periods_per_year"] == pytest.approx(365.0)
    stocks = build_market_data({k: v for k, v in bars.items() if "/" not in k}, CONFIG)
    result = backtest_portfolio(fit_allocation_policy("equal_weight", stocks), stocks, "test")
    assert result.metrics["periods_per_year"] == pytest.approx(251.6, abs=0.05)


def test_daily_bars_of_one_date_share_a_row_whatever_hour_each_source_stamps_them() -> None:
    """Alpaca stamps a stock's day at midnight New York and a pair's at 00:00 UTC: one date, one universe row."""
    sessions = pd.DatetimeIndex(calendar_for("us_equity").sessions("2019-01-01", "2021-12-31"))
    stocks = sessions.tz_localize("America/New_York").tz_convert("UTC")
    bars = {"AAA": frame(stocks), "BBB": frame(stocks, seed=3), "BTC/USD": frame(every_day("2019-01-01", 3 * 365), 1)}
    data = build_market_data(bars, CONFIG)
    panel = Panel.from_market_data(data)
    dates = pd.date_range("2019-01-01", "2021-12-31", freq="D", tz="UTC")  # the pair's 1,095 days and 2021-12-31
    assert np.array_equal(panel.timestamps, dates.as_unit("ns").asi8)  # every date once, not a stock row and a pair row per weekday
    weekday = int(np.searchsorted(panel.timestamps, pd.Timestamp("2021-03-03", tz="UTC").value))
    assert panel.has_bar[weekday].all() and not panel.has_bar[weekday + 3, :2].any()  # Wed: all; Sat: pair only
    result = backtest_portfolio(fit_allocation_policy("equal_weight", data), data, "test")
    assert result.metrics["periods_per_year"] == pytest.approx(365.0)


def test_two_daily_bars_of_one_symbol_on_one_date_are_refused_naming_it() -> None:
    twice = pd.DatetimeIndex(["2021-03-01 00:00", "2021-03-01 23:00"], tz="UTC")
    days = every_day("2021-01-01", 59).append(twice).append(every_day("2021-03-02", 300))
    bars = {"AAA": frame(every_day("2021-01-01", 361)), "BTC/USD": frame(days, 1)}
    data = build_market_data(bars, DatasetConfig(window=4, timeframe="1Day",
                                                 split={"train": 0.6, "validation": 0.2, "test": 0.2}))
    with pytest.raises(PanelError, match=r"BTC/USD: two daily bars on one UTC date \(2021-03-01T00:00"):
        Panel.from_market_data(data)
