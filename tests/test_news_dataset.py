"""News columns in the dataset, the env and a model's preprocessing; causal through the whole pipeline."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import envs  # noqa: F401  (registers TradingEnv-v0)
from features import NEWS_FEATURES, DatasetConfig, FeatureConfig, build_market_data, feature_names, synthetic_bars
from features.lookahead import find_env_lookahead
from features.market_data import MarketData
from features.preprocessing import Preprocessing, PreprocessingMismatch

BARS = {"AAA": synthetic_bars(260, seed=0, start="2020-01-01"),
        "BBB": synthetic_bars(260, seed=1, start="2020-01-01", start_price=40.0)}
WORDS = ["strong profit", "record gains", "loss widens", "lawsuit and losses", "quarterly update"]


def headlines(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Synthetic headlines at random times over the bars' span, naming one or both symbols."""
    rng = np.random.default_rng(seed)
    index = BARS["AAA"].index
    stamps = np.sort(rng.integers(index[0].value - 3 * 86_400 * 10**9, index[-1].value + 3 * 86_400 * 10**9, n))
    return pd.DataFrame({
        "published_at": pd.to_datetime(stamps, utc=True).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "id": [f"n{i}" for i in range(n)],
        "symbols": rng.choice(["AAA", "BBB", "AAA,BBB"], size=n),
        "headline": rng.choice(WORDS, size=n),
    })


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("news") / "headlines.csv"
    headlines().to_csv(path, index=False)
    return path


def news_config(news_csv, **overrides) -> DatasetConfig:
    settings = {"source": "csv", "path": str(news_csv), "cache_dir": str(news_csv.parent / "cache"), **overrides}
    return DatasetConfig(window=8, news=settings)


@pytest.fixture(scope="module")
def with_news(news_csv) -> MarketData:
    return build_market_data(BARS, news_config(news_csv))


def test_news_columns_follow_the_price_features(with_news):
    assert with_news.feature_names == feature_names(FeatureConfig()) + list(NEWS_FEATURES)
    counts = with_news.raw_features[:, with_news.feature_names.index("news_count")]
    assert counts.sum() > 100 and np.isfinite(with_news.features).all()


def test_default_config_has_no_news_and_keeps_its_hash():
    config = DatasetConfig()
    assert config.news is None and config.to_dict()["news"] is None
    settings = config.to_dict()
    del settings["output_dir"], settings["news"]
    import hashlib

    assert config.hash() == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    plain = build_market_data(BARS, DatasetConfig(window=8))
    assert not any(name.startswith("news_") for name in plain.feature_names) and "news" not in plain.hashes


def test_manifest_records_the_scorer_and_model(with_news, tmp_path):
    with_news.save(tmp_path / "data")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["config"]["news"]["scorer"] == "lexicon"
    assert manifest["config"]["news"]["model"] == "loughran-mcdonald"
    assert "news" in manifest["hashes"]
    loaded = MarketData.load(tmp_path / "data")
    np.testing.assert_array_equal(loaded.features, with_news.features)


def test_the_same_inputs_give_identical_news_columns(news_csv, with_news):
    again = build_market_data(BARS, news_config(news_csv))  # scores come from the cache this time
    np.testing.assert_array_equal(again.raw_features, with_news.raw_features)
    assert again.hashes == with_news.hashes


def test_articles_given_in_memory_with_scores_are_used_as_they_are(news_csv):
    frame = headlines().assign(symbol=lambda f: f["symbols"].str.split(",")).explode("symbol")
    frame = frame.drop(columns="symbols").assign(score=1.0)
    data = build_market_data(BARS, news_config(news_csv), news=frame)
    scores = data.raw_features[:, data.feature_names.index("news_score")]
    counts = data.raw_features[:, data.feature_names.index("news_count")]
    assert set(np.unique(scores[counts > 0])) == {1.0}
    with pytest.raises(ValueError, match="config.news is None"):
        build_market_data(BARS, DatasetConfig(window=8), news=frame)


def test_yaml_config_turns_news_on(tmp_path, news_csv):
    path = tmp_path / "c.yaml"
    path.write_text(f"dataset:\n  window: 8\n  news:\n    source: csv\n    path: {news_csv}\n    half_life: 3\n")
    config = DatasetConfig.from_yaml(path)
    assert config.news.half_life == 3.0 and config.news.scorer == "lexicon"
    path.write_text("dataset:\n  news:\n    scorer: lexicon\n    halflife: 3\n")
    with pytest.raises(ValueError, match="halflife"):
        DatasetConfig.from_yaml(path)


def test_the_env_observes_the_news_columns(with_news):
    env = gym.make("TradingEnv-v0", data=with_news, symbol="AAA", window=8)
    observation, _ = env.reset(seed=0)
    assert observation.shape[0] > 8 * with_news.n_features  # the window of every feature incl. news
    assert with_news.n_features == len(feature_names(FeatureConfig())) + len(NEWS_FEATURES)
    env.close()


def test_env_and_dataset_observations_are_causal_with_news(news_csv):
    result = find_env_lookahead(BARS, news_config(news_csv), cuts=2, seed=0)
    assert result.findings == [] and result.observations_compared > 0


def test_the_env_check_would_catch_backfilled_news(news_csv, monkeypatch):
    import features.news.pipeline as pipeline

    causal = pipeline.news_features

    def backfilled(bars, scored, timeframe, settings=None):  # the original design's leak
        table = causal(bars, scored, timeframe, settings)
        table["news_score"] = table["news_score"].where(table["news_count"] > 0).bfill().fillna(0.0)
        return table

    monkeypatch.setattr(pipeline, "news_features", backfilled)
    result = find_env_lookahead(BARS, news_config(news_csv), cuts=2, seed=0)
    assert {f.column for f in result.findings} >= {"news_score", "obs:news_score"}


# ----- a model's preprocessing ------------------------------------------------------------------------


def test_preprocessing_records_news_and_round_trips(with_news):
    record = Preprocessing.of(with_news)
    assert record.news["scorer"] == "lexicon"
    assert Preprocessing.from_dict(record.to_dict()).digest() == record.digest()
    plain = Preprocessing.of(build_market_data(BARS, DatasetConfig(window=8)))
    assert "news" not in plain.to_dict()  # records without news are unchanged


def test_a_news_model_refuses_data_without_news_or_with_other_news_settings(with_news, news_csv):
    record = Preprocessing.of(with_news)
    with pytest.raises(PreprocessingMismatch, match="trained with news sentiment columns"):
        record.check(build_market_data(BARS, DatasetConfig(window=8)))
    other = build_market_data(BARS, news_config(news_csv, half_life=2))
    with pytest.raises(PreprocessingMismatch, match=r"news settings differ .* \['half_life'\]"):
        record.apply(other)
    with pytest.raises(PreprocessingMismatch, match="trained without news columns"):
        Preprocessing.of(build_market_data(BARS, DatasetConfig(window=8))).check(with_news)


def test_news_from_another_source_with_the_same_settings_is_accepted(with_news, news_csv, tmp_path):
    parquet = tmp_path / "same.parquet"
    from features.news import read_news_file

    read_news_file(news_csv).to_parquet(parquet)
    same = build_market_data(BARS, news_config(news_csv, source="parquet", path=str(parquet)))
    Preprocessing.of(with_news).check(same)


def test_other_price_feature_settings_are_rebuilt_and_news_columns_kept(with_news, news_csv):
    other = build_market_data(BARS, DatasetConfig(window=8, features=FeatureConfig(rsi_window=7),
                                                  news=news_config(news_csv).news))
    rebuilt = Preprocessing.of(with_news).apply(other)
    np.testing.assert_allclose(rebuilt.raw_features, with_news.raw_features, rtol=1e-12, equal_nan=True)
    assert rebuilt.feature_names == with_news.feature_names


def test_the_live_window_includes_news(with_news):
    record = Preprocessing.of(with_news)
    window, asset_id = record.latest_window(BARS["BBB"], "BBB")
    rows = with_news.symbol_rows("BBB")
    np.testing.assert_allclose(window, with_news.features[rows][-8:], atol=1e-6)
    assert asset_id == with_news.asset_map["BBB"]


def test_model_market_data_on_new_bars_loads_news_from_its_source(with_news):
    record = Preprocessing.of(with_news)
    rebuilt = record.market_data({"AAA": BARS["AAA"]})
    rows = with_news.symbol_rows("AAA")
    np.testing.assert_allclose(rebuilt.features, with_news.features[rows], atol=1e-6)


def test_a_symbol_without_articles_gets_zero_counts_not_an_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("published_at,symbol,headline\n2020-03-02T15:00:00Z,ZZZ,Strong profit\n")
    data = build_market_data(BARS, news_config(path))
    news = data.raw_features[:, -len(NEWS_FEATURES):]
    assert (news[:, :3] == 0).all() and (news[:, 3] == 50).all()


def test_a_day_first_news_file_needs_its_declared_time_format(tmp_path, news_csv):
    frame = headlines(n=60)
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True).dt.strftime("%d/%m/%Y %H:%M")
    path = tmp_path / "day_first.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"day_first\.csv: unparseable publication time at row 0 \(line 2\).*news\.time_format"):
        build_market_data(BARS, news_config(path))
    declared = build_market_data(BARS, news_config(path, time_format="%d/%m/%Y %H:%M"))
    iso = tmp_path / "iso.csv"
    headlines(n=60).to_csv(iso, index=False)
    expected = build_market_data(BARS, news_config(iso))
    np.testing.assert_array_equal(declared.raw_features, expected.raw_features)  # every article in its own bar
