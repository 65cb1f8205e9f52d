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


DAY_FIRST = """date,symbol,headline
03/04/2020 10:00,AAPL,Apple gains
13/04/2020 10:00,AAPL,Apple slips
"""


def test_day_first_dates_are_refused_not_guessed_and_ask_for_the_format(tmp_path):
    path = write(tmp_path, DAY_FIRST)
    with pytest.raises(NewsValidationError, match=r"news\.csv: unparseable publication time at row 0 \(line 2\), "
                                                  r"column 'date'.*'03/04/2020 10:00'.*news\.time_format") as error:
        read_news_file(path)
    assert "\n" not in str(error.value)
    with pytest.raises(NewsValidationError, match=r"row 0 \(line 2\).*time_format"):
        load_news("AAPL", source="csv", path=path)


def test_a_declared_time_format_reads_day_first_dates_as_utc(tmp_path):
    path = write(tmp_path, DAY_FIRST)
    news = read_news_file(path, time_format="%d/%m/%Y %H:%M")
    assert news["published_at"].tolist() == [pd.Timestamp("2020-04-03 10:00", tz="UTC"),
                                             pd.Timestamp("2020-04-13 10:00", tz="UTC")]
    assert str(news["published_at"].dtype) == "datetime64[ns, UTC]"
    loaded = load_news("AAPL", source="csv", path=path, time_format="%d/%m/%Y %H:%M")
    assert loaded["published_at"].tolist() == news["published_at"].tolist()
    offset = write(tmp_path, "date,symbol,headline\n03/04/2020 10:00 +0200,AAPL,x\n", "offset.csv")
    assert read_news_file(offset, time_format="%d/%m/%Y %H:%M %z")["published_at"].tolist() == [
        pd.Timestamp("2020-04-03 08:00", tz="UTC")]


def test_a_row_that_does_not_match_the_declared_format_names_file_and_row(tmp_path):
    path = write(tmp_path, DAY_FIRST + "2020-04-14T10:00:00Z,AAPL,Apple flat\n")
    with pytest.raises(NewsValidationError, match=r"news\.csv: unparseable publication time at row 2 \(line 4\), "
                                                  r"column 'date'.*does not match news\.time_format='%d/%m/%Y %H:%M'"):
        read_news_file(path, time_format="%d/%m/%Y %H:%M")


@pytest.mark.parametrize("stamp", ["3000-01-01T00:00:00Z", "2999-12-31", "1969-12-31T23:59:59Z", "1900-01-01"])
def test_times_absurdly_in_the_future_or_before_1970_name_file_and_row(tmp_path, stamp):
    path = write(tmp_path, CSV.replace("2024-01-02 10:00:00-05:00", stamp))
    with pytest.raises(NewsValidationError, match=r"news\.csv: publication time out of range at row 1 \(line 3\)"):
        read_news_file(path)


def test_a_time_far_in_the_future_is_refused_in_a_declared_format_and_in_memory(tmp_path):
    path = write(tmp_path, DAY_FIRST.replace("13/04/2020", "13/04/2100"))
    with pytest.raises(NewsValidationError, match=r"out of range at row 1 \(line 3\)"):
        read_news_file(path, time_format="%d/%m/%Y %H:%M")
    ahead = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)
    frame = pd.DataFrame({"published_at": [ahead], "id": ["1"], "symbol": ["AAPL"], "headline": ["x"]})
    with pytest.raises(NewsValidationError, match="articles: publication time out of range at row 0"):
        validate_news(frame, "articles")


def test_time_format_is_checked_and_applies_to_a_file_only(tmp_path):
    with pytest.raises(ValueError, match=r"news\.time_format='%H:%M' does not give a full date"):
        NewsConfig(source="csv", path="x.csv", time_format="%H:%M")
    with pytest.raises(ValueError, match=r"news\.time_format='day/month' must be a strptime format"):
        NewsConfig(source="csv", path="x.csv", time_format="day/month")
    with pytest.raises(ValueError, match=r"news\.time_format=.*applies to your own file"):
        NewsConfig(source="alpaca", time_format="%d/%m/%Y")
    with pytest.raises(ValueError, match=r"time_format=.*applies to your own file \(path=\)"):
        load_news("AAPL", "2024-01-01", source="parquet", cache_dir=tmp_path, time_format="%d/%m/%Y")
    config = NewsConfig(source="csv", path="x.csv", time_format="%d/%m/%Y %H:%M")
    assert NewsConfig.coerce(config.to_dict()) == config


def test_an_unset_time_format_leaves_the_config_and_dataset_hash_as_before():
    import hashlib
    import json

    from features import DatasetConfig

    before = ["source", "path", "cache_dir", "scorer", "model", "text", "half_life", "bars_since_cap",
              "session_close", "session_timezone", "device", "batch_size"]  # NewsConfig's keys before time_format
    assert list(NewsConfig().to_dict()) == before
    config = DatasetConfig(window=8, news={"source": "csv", "path": "headlines.csv"})
    settings = config.to_dict()
    del settings["output_dir"]
    assert list(settings["news"]) == before
    assert config.hash() == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    declared = DatasetConfig(window=8, news={"source": "csv", "path": "headlines.csv", "time_format": "%d/%m/%Y"})
    assert declared.hash() != config.hash() and DatasetConfig.from_dict(declared.to_dict()) == declared
