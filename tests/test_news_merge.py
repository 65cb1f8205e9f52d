"""News columns are causal: an article counts for a bar only if published strictly before the bar's close."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import NEWS_FEATURES, load_bars, synthetic_bars
from features.lookahead import find_lookahead
from features.news import NewsConfig, bar_close_times, news_features

SECOND = pd.Timedelta(seconds=1)


def articles(times, scores, symbol: str = "AAA") -> pd.DataFrame:
    stamps = [pd.Timestamp(t) for t in times]
    times = pd.DatetimeIndex([t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC") for t in stamps],
                             dtype="datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            "published_at": times,
            "id": [f"a{i}" for i in range(len(times))],
            "symbol": symbol,
            "headline": "h",
            "score": np.asarray(scores, dtype=np.float64),
        }
    )


def random_articles(bars: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Articles at random instants from a day before the first bar to a day after the last."""
    rng = np.random.default_rng(seed)
    lo = bars.index[0].value - 86_400 * 10**9
    hi = bars.index[-1].value + 2 * 86_400 * 10**9
    stamps = np.sort(rng.integers(lo, hi, size=n))
    return articles(pd.to_datetime(stamps, utc=True), rng.uniform(-1, 1, size=n))


def test_daily_close_is_the_session_close_in_new_york_on_the_bar_date():
    # Embedded daily bars are stamped at midnight UTC, Alpaca's at midnight New York (05:00 UTC in winter).
    winter = pd.DatetimeIndex(["2024-01-02 00:00", "2024-01-03 05:00"], tz="UTC")
    summer = pd.DatetimeIndex(["2024-07-01 00:00", "2024-07-02 04:00"], tz="UTC")
    assert list(pd.to_datetime(bar_close_times(winter, "1Day"), utc=True)) == [
        pd.Timestamp("2024-01-02 21:00", tz="UTC"), pd.Timestamp("2024-01-03 21:00", tz="UTC")]
    assert list(pd.to_datetime(bar_close_times(summer, "1Day"), utc=True)) == [
        pd.Timestamp("2024-07-01 20:00", tz="UTC"), pd.Timestamp("2024-07-02 20:00", tz="UTC")]


def test_intraday_close_is_the_bar_end():
    index = pd.DatetimeIndex(["2024-01-02 14:00", "2024-01-02 15:00"], tz="UTC")
    closes = pd.to_datetime(bar_close_times(index, "1Hour"), utc=True)
    assert list(closes) == [pd.Timestamp("2024-01-02 15:00", tz="UTC"), pd.Timestamp("2024-01-02 16:00", tz="UTC")]
    quarter = pd.to_datetime(bar_close_times(index, "15Min"), utc=True)
    assert quarter[0] == pd.Timestamp("2024-01-02 14:15", tz="UTC")


def test_one_second_before_and_after_a_daily_close_land_in_different_bars():
    bars = synthetic_bars(5, start="2024-01-02")  # Tue..Mon, stamped midnight UTC
    close = pd.Timestamp("2024-01-03 16:00", tz="America/New_York")  # bar 1's session close
    news = articles([close - SECOND, close + SECOND], [0.5, -0.5])
    table = news_features(bars, news, "1Day")
    assert table["news_count"].tolist() == [0, 1, 1, 0, 0]
    assert table["news_score"].tolist() == [0, 0.5, -0.5, 0, 0]
    exactly = news_features(bars, articles([close], [1.0]), "1Day")
    assert exactly["news_count"].tolist() == [0, 0, 1, 0, 0]  # at the close is not before it


def test_one_second_before_and_after_an_intraday_bar_end_land_in_different_bars():
    bars = synthetic_bars(6, start="2024-01-02 14:00", freq="h")
    end = bars.index[2] + pd.Timedelta(hours=1)
    table = news_features(bars, articles([end - SECOND, end + SECOND], [1.0, -1.0]), "1Hour")
    assert table["news_count"].tolist() == [0, 0, 1, 1, 0, 0]
    assert table.loc[bars.index[2], "news_score"] == 1.0
    assert table.loc[bars.index[3], "news_score"] == -1.0


def test_weekend_news_belongs_to_monday_and_news_after_the_last_close_is_unused():
    bars = synthetic_bars(3, start="2024-01-04")  # Thu, Fri, Mon
    news = articles(["2024-01-06 12:00", "2024-01-08 15:00", "2024-01-08 22:00", "2024-01-09 10:00"], [1, 0, -1, -1])
    table = news_features(bars, news, "1Day")
    assert table["news_count"].tolist() == [0, 0, 2]
    assert table["news_score"].iloc[2] == 0.5


def test_news_before_the_first_bars_period_is_not_counted():
    bars = synthetic_bars(3, start="2024-01-03")
    news = articles(["2023-12-20", "2024-01-02 22:00"], [1.0, -1.0])  # the second is in bar 0's day
    table = news_features(bars, news, "1Day")
    assert table["news_count"].tolist() == [1, 0, 0]
    assert table["news_score"].iloc[0] == -1.0


def test_no_news_gives_zero_counts_a_zero_score_and_the_cap():
    bars = synthetic_bars(10)
    table = news_features(bars, articles([], []), "1Day", NewsConfig(bars_since_cap=7))
    assert list(table.columns) == list(NEWS_FEATURES)
    assert (table["news_count"] == 0).all() and (table["news_score"] == 0).all()
    assert (table["news_score_decayed"] == 0).all()
    assert (table["news_bars_since"] == 7).all()
    assert table.dtypes.eq(np.float64).all() and np.isfinite(table.to_numpy()).all()


def test_decayed_score_halves_every_half_life_once_news_is_old():
    bars = synthetic_bars(12, start="2024-01-02")
    news = articles([bars.index[1] + pd.Timedelta(hours=12)], [0.8])
    table = news_features(bars, news, "1Day", NewsConfig(half_life=2, bars_since_cap=5))
    decayed = table["news_score_decayed"].to_numpy()
    assert decayed[0] == 0 and decayed[1] == pytest.approx(0.8)
    assert decayed[3] == pytest.approx(0.4) and decayed[5] == pytest.approx(0.2)
    assert table["news_bars_since"].tolist() == [5, 0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5]


def test_decayed_score_is_the_weighted_mean_while_news_is_plentiful():
    bars = synthetic_bars(4, start="2024-01-02")
    noon = [bars.index[1] + pd.Timedelta(hours=12)] * 4
    table = news_features(bars, articles(noon, [0.5, 0.5, 0.5, 0.5]), "1Day", NewsConfig(half_life=1))
    assert table["news_score_decayed"].tolist()[1:] == pytest.approx([0.5, 0.5, 0.5])  # 4 -> 2 -> 1 articles


@pytest.mark.parametrize("timeframe, freq", [("1Day", "B"), ("1Hour", "h")])
def test_truncating_news_and_bars_after_any_cut_changes_nothing_before_it(timeframe, freq):
    bars = synthetic_bars(300, freq=freq, start="2024-01-02")
    news = random_articles(bars, 900, seed=1)
    settings = NewsConfig(half_life=3)
    full = news_features(bars, news, timeframe, settings)
    closes = bar_close_times(bars.index, timeframe)
    for cut in np.random.default_rng(2).integers(1, len(bars), size=15):
        cut_time = pd.Timestamp(int(closes[cut - 1]), tz="UTC")
        kept_news = news[news["published_at"] < cut_time + pd.Timedelta(seconds=int(np.random.default_rng(cut).integers(0, 3600)))]
        part = news_features(bars.iloc[:cut], kept_news, timeframe, settings)
        pd.testing.assert_frame_equal(part, full.iloc[:cut], check_exact=True)


def test_find_lookahead_finds_no_leak_in_news_columns_and_catches_a_backfill():
    bars = synthetic_bars(400, start="2024-01-02")
    news = random_articles(bars, 600, seed=3)

    def causal(frame: pd.DataFrame) -> pd.DataFrame:
        return news_features(frame, news, "1Day")

    def backfilled(frame: pd.DataFrame) -> pd.DataFrame:  # the original design's leak
        table = news_features(frame, news, "1Day")
        table["news_score"] = table["news_score"].where(table["news_count"] > 0).bfill().fillna(0.0)
        return table

    assert find_lookahead(causal, bars, cuts=20, warmup=0) == []
    leaks = find_lookahead(backfilled, bars, cuts=20, warmup=0)
    assert {f.column for f in leaks} == {"news_score"}


def test_embedded_daily_bars_get_news_of_their_own_trading_day():
    bars = load_bars(["IBM"], source="embedded", start="2010-01-04", end="2010-01-08")["IBM"]
    assert bars.index[0] == pd.Timestamp("2010-01-04", tz="UTC")  # stamped at midnight UTC
    news = articles(["2010-01-04 15:59:59-05:00", "2010-01-04 16:00:00-05:00"], [1.0, -1.0])
    table = news_features(bars, news, "1Day")
    assert table["news_score"].tolist()[:2] == [1.0, -1.0]


def test_weekly_bars_and_repeated_session_dates_are_refused():
    with pytest.raises(ValueError, match="intraday or daily"):
        bar_close_times(pd.date_range("2024-01-01", periods=3, freq="W", tz="UTC"), "1Week")
    with pytest.raises(ValueError, match="do not increase"):
        bar_close_times(pd.DatetimeIndex(["2024-01-02 01:00", "2024-01-02 05:00"], tz="UTC"), "1Day")
