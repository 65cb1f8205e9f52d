"""Calendars per asset class: NYSE sessions, holidays and early closes from exchange_calendars; crypto 24/7."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import synthetic_bars
from features.bars import find_gaps
from features.calendars import (
    ASSET_CLASSES,
    CalendarError,
    asset_class_of,
    calendar_for,
)
from features.news import NewsConfig, bar_close_times, news_features

NY = "America/New_York"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def bars_on(stamps) -> pd.DataFrame:
    index = pd.DatetimeIndex(stamps, tz="UTC")
    n = len(index)
    prices = np.linspace(100.0, 101.0, n)
    return pd.DataFrame({"open": prices, "high": prices + 1, "low": prices - 1, "close": prices,
                         "volume": np.full(n, 1000.0)}, index=index)


def articles(times, symbol: str = "AAA") -> pd.DataFrame:
    stamps = pd.DatetimeIndex([pd.Timestamp(t).tz_convert("UTC") for t in times], dtype="datetime64[ns, UTC]")
    return pd.DataFrame({"published_at": stamps, "id": [f"a{i}" for i in range(len(stamps))], "symbol": symbol,
                         "headline": "h", "score": np.ones(len(stamps))})


# ------------------------------------------------------------------ asset classes


def test_a_symbol_with_a_slash_is_crypto_and_the_classes_match_the_universe_files():
    from features.universe import ASSET_CLASSES as UNIVERSE_CLASSES

    assert ASSET_CLASSES == UNIVERSE_CLASSES
    assert asset_class_of("BTC/USD") == "crypto"
    assert asset_class_of("AAPL") == "us_equity" and asset_class_of("BRK.B") == "us_equity"


def test_calendar_for_is_cached():
    assert calendar_for("us_equity") is calendar_for("us_equity")
    assert calendar_for("crypto").asset_class == "crypto"


# ------------------------------------------------------------------ NYSE sessions


def test_nyse_holidays_are_not_sessions():
    sessions = calendar_for("us_equity").sessions("2019-11-25", "2019-12-31")
    days = {d.strftime("%Y-%m-%d") for d in sessions}
    assert "2019-11-28" not in days  # Thanksgiving
    assert "2019-12-25" not in days  # Christmas
    assert "2019-11-30" not in days  # a Saturday
    assert {"2019-11-27", "2019-11-29", "2019-12-24", "2019-12-26"} <= days
    with pytest.raises(CalendarError, match="2019-11-28 is not a XNYS session"):
        calendar_for("us_equity").session_close("2019-11-28")


def test_nyse_early_closes_at_13_00_new_york_come_from_the_calendar():
    equity = calendar_for("us_equity")
    for day in ("2019-11-29", "2019-12-24"):
        close = equity.session_close(day)
        assert close == utc(f"{day} 18:00")
        assert close.tz_convert(NY).strftime("%H:%M") == "13:00"
    assert equity.session_close("2019-11-27") == utc("2019-11-27 21:00")  # an ordinary day: 16:00 New York
    assert equity.session_close("2019-07-01") == utc("2019-07-01 20:00")  # summer time


def test_nyse_trading_time_ends_at_the_early_close():
    equity = calendar_for("us_equity")
    assert equity.is_trading_time(utc("2019-11-29 17:59"))
    assert not equity.is_trading_time(utc("2019-11-29 18:00"))
    assert not equity.is_trading_time(utc("2019-11-28 17:00"))  # Thanksgiving
    assert not equity.is_trading_time(utc("2019-11-27 14:29")) and equity.is_trading_time(utc("2019-11-27 14:30"))


# ------------------------------------------------------------------ crypto


def test_crypto_has_weekend_sessions_closing_at_the_day_s_end_utc():
    crypto = calendar_for("crypto")
    sessions = crypto.sessions("2019-11-28", "2019-12-01")
    assert [d.strftime("%a") for d in sessions] == ["Thu", "Fri", "Sat", "Sun"]
    assert crypto.session_close("2019-11-30") == utc("2019-12-01 00:00")
    assert crypto.is_trading_time(utc("2019-11-30 03:17"))


# ------------------------------------------------------------------ periods per year


def test_periods_per_year_crypto_is_365_days_and_8760_hours():
    crypto = calendar_for("crypto")
    assert crypto.periods_per_year("1Day") == 365.0
    assert crypto.periods_per_year("1Hour") == 8760.0
    assert crypto.periods_per_year("15Min") == 8760.0 * 4


def test_periods_per_year_equities_is_the_calendar_s_sessions_and_trading_hours():
    equity = calendar_for("us_equity")
    sessions = equity.periods_per_year("1Day")
    assert sessions == pytest.approx(251.6)  # XNYS, mean of 2015-2024
    assert 251 <= sessions <= 253
    hours = equity.periods_per_year("1Hour")
    assert hours == pytest.approx(1629.4)  # 251.6 sessions x 6.5 h less the early closes' lost hours
    assert 251 * 6.5 - 30 < hours < 252 * 6.5
    assert equity.periods_per_year("30Min") == pytest.approx(2 * hours)


# ------------------------------------------------------------------ next bar close


def test_next_bar_close_of_a_daily_equity_bar_on_an_early_close_day_is_13_00_new_york():
    equity = calendar_for("us_equity")
    assert equity.next_bar_close(utc("2019-11-29 15:00"), "1Day") == utc("2019-11-29 18:00")
    assert equity.next_bar_close(utc("2019-11-29 18:00"), "1Day") == utc("2019-12-02 21:00")  # after: Monday's
    assert equity.next_bar_close(utc("2019-11-28 12:00"), "1Day") == utc("2019-11-29 18:00")  # from Thanksgiving


def test_next_bar_close_of_intraday_equity_bars_stays_within_sessions():
    equity = calendar_for("us_equity")
    assert equity.next_bar_close(utc("2019-11-29 16:10"), "1Hour") == utc("2019-11-29 17:00")
    assert equity.next_bar_close(utc("2019-11-29 17:30"), "1Hour") == utc("2019-11-29 18:00")
    assert equity.next_bar_close(utc("2019-11-29 18:00"), "1Hour") == utc("2019-12-02 15:00")  # 09:30 -> 10:00 NY
    assert equity.next_bar_close(utc("2019-11-30 12:00"), "15Min") == utc("2019-12-02 14:45")


def test_next_bar_close_of_crypto_is_the_bar_end_on_weekends_too():
    crypto = calendar_for("crypto")
    assert crypto.next_bar_close(utc("2019-11-30 03:17"), "1Hour") == utc("2019-11-30 04:00")
    assert crypto.next_bar_close(utc("2019-11-30 04:00"), "1Hour") == utc("2019-11-30 05:00")
    assert crypto.next_bar_close(utc("2019-11-30 03:17"), "1Day") == utc("2019-12-01 00:00")


# ------------------------------------------------------------------ news merge


def test_news_after_an_early_close_belongs_to_the_next_daily_bar():
    bars = bars_on(["2019-11-27 05:00", "2019-11-29 05:00", "2019-12-02 05:00"])  # Alpaca: midnight New York
    at_noon = pd.Timestamp("2019-11-29 12:00", tz=NY)
    at_two = pd.Timestamp("2019-11-29 14:00", tz=NY)  # after the 13:00 early close
    table = news_features(bars, articles([at_noon, at_two]), "1Day")
    assert table["news_count"].tolist() == [0, 1, 1]
    assert list(pd.to_datetime(bar_close_times(bars.index, "1Day"), utc=True)) == [
        utc("2019-11-27 21:00"), utc("2019-11-29 18:00"), utc("2019-12-02 21:00")]


def test_an_explicit_news_session_close_overrides_the_calendar():
    bars = bars_on(["2019-11-27 05:00", "2019-11-29 05:00", "2019-12-02 05:00"])
    late = pd.Timestamp("2019-11-29 14:00", tz=NY)
    config = NewsConfig(source="csv", path="x.csv", session_close="16:00")
    assert news_features(bars, articles([late]), "1Day", config)["news_count"].tolist() == [0, 1, 0]
    assert NewsConfig().session_close is None  # the default: the calendar's close


def test_a_crypto_daily_bar_closes_at_its_end_not_at_a_session_close():
    bars = bars_on(["2019-11-29", "2019-11-30", "2019-12-01"])  # Fri, Sat, Sun at 00:00 UTC
    evening = pd.Timestamp("2019-11-29 20:00", tz=NY)  # 01:00 UTC Saturday: Saturday's bar
    friday_late = utc("2019-11-29 23:00")
    table = news_features(bars, articles([friday_late, evening], symbol="BTC/USD"), "1Day")
    assert table["news_count"].tolist() == [1, 1, 0]
    closes = pd.to_datetime(bar_close_times(bars.index, "1Day", asset_class="crypto"), utc=True)
    assert list(closes) == [utc("2019-11-30"), utc("2019-12-01"), utc("2019-12-02")]


# ------------------------------------------------------------------ gaps


def test_equity_daily_bars_across_thanksgiving_have_no_gap():
    bars = bars_on(["2019-11-26 05:00", "2019-11-27 05:00", "2019-11-29 05:00", "2019-12-02 05:00"])
    assert len(find_gaps(bars, "1Day", "us_equity")) == 0
    assert len(find_gaps(bars, "1Day")) == 2  # without a calendar, the holiday and the weekend are steps


def test_a_missing_ordinary_session_is_a_gap():
    bars = bars_on(["2019-11-25 05:00", "2019-11-27 05:00", "2019-11-29 05:00"])  # Tuesday missing
    gaps = find_gaps(bars, "1Day", calendar_for("us_equity"))
    assert gaps["before"].tolist() == [utc("2019-11-25 05:00")]
    assert gaps["missing_bars"].tolist() == [1]


def test_equity_hourly_bars_skip_nights_but_not_a_missing_session_hour():
    day = ["2019-11-27 14:00", "2019-11-27 15:00", "2019-11-27 16:00", "2019-11-27 17:00", "2019-11-27 18:00",
           "2019-11-27 19:00", "2019-11-27 20:00"]  # 09:00..15:00 New York: the session's seven bars
    friday = ["2019-11-29 14:00", "2019-11-29 15:00", "2019-11-29 16:00", "2019-11-29 17:00"]  # early close
    assert len(find_gaps(bars_on(day + friday), "1Hour", "us_equity")) == 0
    gaps = find_gaps(bars_on(day[:3] + day[4:] + friday), "1Hour", "us_equity")
    assert gaps["missing_bars"].tolist() == [1]


def test_a_missing_weekend_hour_of_crypto_is_a_gap():
    hours = pd.date_range("2019-11-30 00:00", periods=48, freq="h", tz="UTC")  # Saturday and Sunday
    bars = bars_on(hours.delete(30))
    gaps = find_gaps(bars, "1Hour", "crypto")
    assert gaps["after"].tolist() == [hours[31]] and gaps["missing_bars"].tolist() == [1]
    assert len(find_gaps(bars_on(hours), "1Hour", "crypto")) == 0


def test_find_gaps_without_a_calendar_keeps_its_behaviour():
    bars = synthetic_bars(10, start="2024-01-02")
    assert find_gaps(bars, "1Day").equals(find_gaps(bars, "1Day", None))


# ------------------------------------------------------------------ errors


def test_unknown_asset_class_or_timeframe_is_a_one_line_error():
    with pytest.raises(CalendarError, match="asset class 'forex' is not known") as error:
        calendar_for("forex")
    assert "\n" not in str(error.value)
    with pytest.raises(CalendarError, match="timeframe='1Fortnight' is not understood"):
        calendar_for("crypto").periods_per_year("1Fortnight")
    with pytest.raises(CalendarError, match="1Week is neither"):
        calendar_for("us_equity").next_bar_close(utc("2019-11-29"), "1Week")
    with pytest.raises(CalendarError, match="outside the XNYS calendar"):
        calendar_for("us_equity").sessions("1980-01-01", "1980-02-01")
    with pytest.raises(ValueError, match="asset_class='fx' is not known"):
        bar_close_times(pd.DatetimeIndex(["2019-11-29"], tz="UTC"), "1Day", asset_class="fx")
    assert issubclass(CalendarError, ValueError)
