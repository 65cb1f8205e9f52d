"""Your own headlines (CSV/Parquet) load into the validated news frame; bad rows are named by file and row."""

from __future__ import annotations

import pandas as pd
import pytest

from features import load_news
from features.news import NewsConfig, NewsValidationError, read_news_file, validate_news
from features.news.alpaca import missing_intervals

CSV = """published_at,symbol,headline,summary,source
2024-01-02T14:30:00Z,AAPL,Apple profit rises,,wire
2024-01-02 10:00:00-05:00,MSFT,Microsoft faces lawsuit,Details,wire
2024-01-03T09:00:00,AAPL,Apple gains,,
"""


def write(tmp_path, text: str, name: str = "news.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_loads_typed_sorted_in_utc_with_stable_ids(tmp_path):
    path = write(tmp_path, CSV)
    news = read_news_file(path)
    assert list(news.columns) == ["published_at", "id", "symbol", "headline", "summary", "source"]
    assert str(news["published_at"].dtype) == "datetime64[ns, UTC]"
    assert news["published_at"].tolist() == [
        pd.Timestamp("2024-01-02 14:30", tz="UTC"), pd.Timestamp("2024-01-02 15:00", tz="UTC"),
        pd.Timestamp("2024-01-03 09:00", tz="UTC"),  # naive means UTC
    ]
    assert news["id"].str.startswith("h").all() and news["id"].nunique() == 3
    assert read_news_file(path)["id"].tolist() == news["id"].tolist()  # the same ids every read
    assert news["summary"].tolist() == ["", "Details", ""]


def test_missing_time_names_file_row_and_line(tmp_path):
    path = write(tmp_path, CSV.replace("2024-01-03T09:00:00,AAPL", ",AAPL"))
    with pytest.raises(NewsValidationError, match=r"news\.csv: missing publication time at row 2 \(line 4\)"):
        read_news_file(path)


def test_unparseable_time_names_file_row_and_value(tmp_path):
    path = write(tmp_path, CSV.replace("2024-01-02 10:00:00-05:00", "yesterday-ish"))
    with pytest.raises(NewsValidationError, match=r"unparseable publication time at row 1 \(line 3\).*'yesterday-ish'"):
        read_news_file(path)


def test_empty_headline_names_file_and_row(tmp_path):
    path = write(tmp_path, CSV.replace("Apple gains", "   "))
    with pytest.raises(NewsValidationError, match=r"news\.csv: empty headline at row 2 \(line 4\)"):
        read_news_file(path)


def test_parquet_errors_name_the_row(tmp_path):
    frame = pd.DataFrame({"created_at": ["2024-01-02T10:00:00Z", "not a time"], "ticker": ["AAPL", "AAPL"],
                          "title": ["a", "b"], "id": [1, 2]})
    path = tmp_path / "mine.parquet"
    frame.to_parquet(path)
    with pytest.raises(NewsValidationError, match=r"mine\.parquet: unparseable publication time at row 1,"):
        read_news_file(path)


def test_symbols_column_gives_one_row_per_symbol_and_symbols_are_selected(tmp_path):
    path = write(tmp_path, "time,symbols,title,id\n2024-01-02T10:00:00Z,\"AAPL, MSFT\",Deal,7\n"
                           "2024-01-02T11:00:00Z,IBM,Other,8\n")
    news = read_news_file(path)
    assert news[["id", "symbol"]].values.tolist() == [["7", "AAPL"], ["7", "MSFT"], ["8", "IBM"]]
    assert read_news_file(path, ["msft"])["symbol"].tolist() == ["msft"]


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(NewsValidationError, match="no headline column"):
        read_news_file(write(tmp_path, "published_at,symbol\n2024-01-02,AAPL\n"))
    with pytest.raises(NewsValidationError, match="no symbol column"):
        read_news_file(write(tmp_path, "published_at,headline\n2024-01-02,x\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_news_file(tmp_path / "nope.csv")


def test_load_news_from_csv_and_parquet_filters_symbols_and_time(tmp_path):
    path = write(tmp_path, CSV)
    news = load_news(["AAPL"], start="2024-01-02", end="2024-01-02 23:59", source="csv", path=path)
    assert news["headline"].tolist() == ["Apple profit rises"]
    parquet = tmp_path / "news.parquet"
    read_news_file(path).to_parquet(parquet)
    again = load_news(["AAPL", "MSFT"], source="parquet", path=parquet)
    assert len(again) == 3


def test_parquet_source_without_a_path_reads_the_cache_and_says_how_to_fill_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments.fetch_news --symbols AAPL"):
        load_news("AAPL", "2024-01-01", source="parquet", cache_dir=tmp_path)


def test_duplicate_article_symbol_pairs_keep_the_last():
    frame = pd.DataFrame({"published_at": ["2024-01-02T10:00Z", "2024-01-02T10:00Z"], "id": ["1", "1"],
                          "symbol": ["AAPL", "AAPL"], "headline": ["old", "new"]})
    news = validate_news(frame)
    assert news["headline"].tolist() == ["new"]


def test_news_config_rejects_bad_settings_by_name():
    with pytest.raises(ValueError, match="news.scorer='vader'"):
        NewsConfig(scorer="vader")
    with pytest.raises(ValueError, match="news.source='csv' needs news.path"):
        NewsConfig(source="csv")
    with pytest.raises(ValueError, match="half_life"):
        NewsConfig(half_life=0)
    with pytest.raises(ValueError, match="session_close"):
        NewsConfig(session_close="4pm")
    with pytest.raises(ValueError, match="unknown key"):
        NewsConfig.coerce({"scorre": "lexicon"})
    assert NewsConfig(scorer="finbert").model == "ProsusAI/finbert"
    assert NewsConfig().model == "loughran-mcdonald"


def test_missing_intervals_are_the_uncovered_parts():
    t = lambda day: pd.Timestamp(f"2024-01-{day:02d}", tz="UTC")  # noqa: E731
    assert missing_intervals(t(1), t(10), []) == [(t(1), t(10))]
    assert missing_intervals(t(1), t(10), [(t(3), t(5)), (t(7), t(8))]) == [(t(1), t(3)), (t(5), t(7)), (t(8), t(10))]
    assert missing_intervals(t(4), t(5), [(t(3), t(6))]) == []
    assert missing_intervals(t(2), t(2), []) == [(t(2), t(2))]
    assert missing_intervals(t(1), t(5), [(t(1), t(5))]) == []
