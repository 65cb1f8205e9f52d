"""News for crypto pairs: asked of Alpaca's news API as it spells them, cached and merged as ``BTC/USD``.

Alpaca's trading and bars APIs spell a pair ``BTC/USD``; its news API spells it ``BTCUSD`` in the request's
``symbols`` and in the articles' ``symbols`` lists. The real alpaca-py ``NewsClient`` talks to the local
news server of ``test_news_alpaca.py`` (its articles plus :func:`crypto_articles`, tagged ``BTCUSD`` /
``ETHUSD``). A crypto bar closes at its end, weekends included, so a Saturday article lands on Saturday's bar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_news_alpaca import API_KEY, SECRET_KEY, FakeNews, crypto_articles, no_proxy_no_keys, serve_news

from features import DatasetConfig, build_market_data, load_news
from features.news import download_news_to_cache, news_cache_path, read_cached_news
from features.news.frame import news_api_symbol, select_symbols, validate_news
from features.news.pipeline import news_feature_tables
from features.parquet_cache import symbol_from_dir_name

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.timeout(60),
]

SPAN = ("2024-01-01", "2024-01-31")
BTC_IDS = ["2000", "2001", "2002", "2003"]  # crypto_articles() naming BTCUSD, oldest first
SATURDAY_MORNING, SATURDAY_NIGHT = "2001", "2002"  # 2024-01-06 10:30 and 22:30 UTC


@pytest.fixture
def fake_news(monkeypatch):
    no_proxy_no_keys(monkeypatch)
    fake = FakeNews()
    fake.articles += crypto_articles()
    with serve_news(fake) as served:
        yield served


@pytest.fixture
def keys(fake_news) -> dict:
    return {"api_key": API_KEY, "secret_key": SECRET_KEY, "url_override": fake_news.url}


def asked_symbols(fake: FakeNews) -> set[str]:
    return {r["query"]["symbols"] for r in fake.news_requests()}


# ----- fetching and caching ----------------------------------------------------------------------------


def test_a_pair_is_asked_for_in_alpacas_news_spelling_and_cached_under_a_name_with_no_slash(fake_news, keys,
                                                                                           tmp_path):
    written = download_news_to_cache("BTC/USD", *SPAN, tmp_path, **keys)

    assert asked_symbols(fake_news) == {"BTCUSD"}
    assert len(fake_news.news_requests()) == 2  # 4 BTCUSD articles, 3 a page
    path = written["BTC/USD"]
    assert path == tmp_path / "articles" / "BTC~USD.parquet" == news_cache_path("BTC/USD", tmp_path)
    assert [p.name for p in (tmp_path / "articles").iterdir()] == ["BTC~USD.parquet"]  # no temp file left
    assert symbol_from_dir_name(path.stem) == "BTC/USD"  # the bars cache's mapping, both ways
    assert set(pq.read_table(path).column("symbol").to_pylist()) == {"BTC/USD"}


def test_a_pairs_cached_articles_read_back_as_btc_usd(fake_news, keys, tmp_path):
    fetched = load_news("BTC/USD", *SPAN, cache_dir=tmp_path, **keys)
    cached, coverage = read_cached_news("BTC/USD", tmp_path)
    offline = load_news("BTC/USD", *SPAN, source="parquet", cache_dir=tmp_path)

    for news in (fetched, cached, offline):
        assert list(news["id"]) == BTC_IDS and set(news["symbol"]) == {"BTC/USD"}
    assert coverage == [(pd.Timestamp(SPAN[0], tz="UTC"), pd.Timestamp(SPAN[1], tz="UTC"))]
    pd.testing.assert_frame_equal(offline, fetched)


def test_a_rerun_for_a_covered_range_of_a_pair_sends_no_request(fake_news, keys, tmp_path):
    load_news("BTC/USD", *SPAN, cache_dir=tmp_path, **keys)
    count = len(fake_news.requests)
    again = load_news("BTC/USD", "2024-01-05", "2024-01-08", cache_dir=tmp_path, **keys)
    assert len(fake_news.requests) == count
    assert list(again["id"]) == BTC_IDS


def test_an_article_naming_a_pair_and_a_stock_gives_one_row_each(fake_news, keys, tmp_path):
    news = load_news(["AAPL", "BTC/USD"], *SPAN, cache_dir=tmp_path, **keys)

    assert asked_symbols(fake_news) == {"AAPL", "BTCUSD"}
    assert sorted(news.loc[news["id"] == "2003", "symbol"]) == ["AAPL", "BTC/USD"]
    assert (news["symbol"] == "AAPL").sum() == 8 + 1 and (news["symbol"] == "BTC/USD").sum() == 4
    assert set(news["symbol"]) == {"AAPL", "BTC/USD"}
    assert sorted(p.name for p in (tmp_path / "articles").iterdir()) == ["AAPL.parquet", "BTC~USD.parquet"]


def test_only_the_pair_asked_for_keeps_an_article_naming_two_pairs(fake_news, keys, tmp_path):
    news = load_news("ETH/USD", *SPAN, cache_dir=tmp_path, **keys)
    assert asked_symbols(fake_news) == {"ETHUSD"}
    assert list(news["id"]) == ["2002", "2004"] and set(news["symbol"]) == {"ETH/USD"}


def test_fetch_news_cli_fetches_a_pair_and_reuses_the_cache(fake_news, tmp_path, monkeypatch, capsys):
    from experiments.common import run_cli
    from experiments.fetch_news import main

    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    argv = ["--symbols", "BTC/USD", "--start", SPAN[0], "--end", SPAN[1], "--url-override", fake_news.url,
            "--cache-dir", str(tmp_path), "--no-progress"]
    assert run_cli(main, argv) == 0
    out = capsys.readouterr().out
    assert "4 article rows for 1 symbol(s)" in out and "BTC/USD" in out
    assert asked_symbols(fake_news) == {"BTCUSD"}
    assert (tmp_path / "articles" / "BTC~USD.parquet").is_file()
    count = len(fake_news.requests)
    assert run_cli(main, argv) == 0
    assert len(fake_news.requests) == count


# ----- spelling ----------------------------------------------------------------------------------------


def test_alpacas_news_spelling_drops_only_a_pairs_slash():
    assert [news_api_symbol(s) for s in ("BTC/USD", "ETH/BTC", "AAPL", "BRK.B")] == ["BTCUSD", "ETHBTC", "AAPL",
                                                                                      "BRK.B"]


def test_a_users_file_naming_btcusd_is_kept_as_the_pair_asked_for():
    news = validate_news(pd.DataFrame({
        "published_at": ["2024-01-06T10:30:00Z", "2024-01-06T10:30:00Z", "2024-01-06T11:00:00Z"],
        "id": ["a", "a", "b"], "symbol": ["BTCUSD", "BTC/USD", "btcusd"], "headline": ["x", "x", "y"],
    }))
    kept = select_symbols(news, ["BTC/USD"])
    assert list(kept["id"]) == ["a", "b"] and set(kept["symbol"]) == {"BTC/USD"}  # one row per article


def test_a_ticker_and_a_pair_with_the_same_news_spelling_are_refused():
    news = validate_news(pd.DataFrame({"published_at": ["2024-01-06T10:30:00Z"], "id": ["a"],
                                       "symbol": ["BTCUSD"], "headline": ["x"]}))
    with pytest.raises(ValueError, match="'BTCUSD' and 'BTC/USD' are both spelt 'BTCUSD'"):
        select_symbols(news, ["BTCUSD", "BTC/USD"])


def test_a_symbol_that_is_not_a_usable_name_is_refused_before_any_request(fake_news, keys, tmp_path):
    for bad in ("BTC/USD/EUR", "BTC~USD", "../AAPL"):
        with pytest.raises(ValueError, match="symbol="):
            download_news_to_cache(bad, *SPAN, tmp_path, **keys)
    assert fake_news.requests == []


# ----- merging into crypto bars ------------------------------------------------------------------------


def crypto_bars(start: str, periods: int, freq: str) -> pd.DataFrame:
    """24/7 bars (weekends included) stamped at their start."""
    index = pd.date_range(start, periods=periods, freq=freq, tz="UTC", name="timestamp")
    close = 40_000.0 + np.arange(periods, dtype=np.float64)
    return pd.DataFrame({"open": close, "high": close + 5.0, "low": close - 5.0, "close": close,
                         "volume": np.full(periods, 1.5)}, index=index)


def counts_by_bar(fake_news, keys, tmp_path, bars: pd.DataFrame, timeframe: str) -> pd.Series:
    """``news_count`` of BTC/USD's bars, the articles fetched from the fake and read from the cache."""
    download_news_to_cache("BTC/USD", *SPAN, tmp_path, **keys)
    settings = {"source": "parquet", "cache_dir": str(tmp_path)}
    tables, _ = news_feature_tables({"BTC/USD": bars}, timeframe, settings)
    return tables["BTC/USD"]["news_count"]


def test_a_saturday_article_lands_on_the_hourly_crypto_bar_it_was_published_in(fake_news, keys, tmp_path):
    bars = crypto_bars("2024-01-05 00:00", 24 * 4, "h")  # Friday to Monday, every hour
    counts = counts_by_bar(fake_news, keys, tmp_path, bars, "1Hour")

    published = counts[counts > 0]
    expected = pd.DatetimeIndex(["2024-01-05 21:00", "2024-01-06 10:00", "2024-01-06 22:00", "2024-01-07 12:00"],
                                tz="UTC", name="timestamp")
    pd.testing.assert_index_equal(published.index, expected)
    assert (published == 1.0).all()


def test_a_saturday_article_lands_on_saturdays_daily_crypto_bar(fake_news, keys, tmp_path):
    bars = crypto_bars("2024-01-04", 6, "D")  # Thursday to Tuesday, weekend included, 00:00 UTC
    counts = counts_by_bar(fake_news, keys, tmp_path, bars, "1Day")

    # A crypto day closes at the next 00:00 UTC: Friday 21:00 is Friday's (an equity session closes at
    # 21:00 UTC, so it would be Monday's), Saturday 10:30 and 22:30 are Saturday's, Sunday 12:00 Sunday's.
    days = pd.DatetimeIndex(["2024-01-05", "2024-01-06", "2024-01-07"], tz="UTC", name="timestamp")
    pd.testing.assert_series_equal(counts[counts > 0], pd.Series([1.0, 2.0, 1.0], index=days, name="news_count"),
                                   check_freq=False)


def test_a_dataset_of_crypto_hours_carries_the_weekend_news(fake_news, keys, tmp_path):
    download_news_to_cache("BTC/USD", *SPAN, tmp_path, **keys)
    bars = crypto_bars("2024-01-04 00:00", 24 * 6, "h")
    config = DatasetConfig(window=8, timeframe="1Hour",
                           news={"source": "parquet", "cache_dir": str(tmp_path)})
    data = build_market_data({"BTC/USD": bars}, config)

    counts = data.raw_features[:, data.feature_names.index("news_count")]
    stamps = pd.DatetimeIndex(data.timestamps)  # naive UTC
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps
    expected = ["2024-01-05 21:00", "2024-01-06 10:00", "2024-01-06 22:00", "2024-01-07 12:00"]
    assert list(stamps[counts > 0]) == [pd.Timestamp(t, tz="UTC") for t in expected]
    assert list(counts[counts > 0]) == [1.0] * 4
