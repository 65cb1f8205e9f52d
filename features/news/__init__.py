"""News sentiment: Alpaca news (or your own headlines) scored by a finance lexicon or FinBERT, merged
into bars with no look-ahead.

Public API::

    load_news(symbols, start, end, source="alpaca"|"parquet"|"csv", cache_dir="data/news", path=None,
              time_format=None)
        -> DataFrame  (published_at UTC, id, symbol, headline, summary, source)

Times in your own file are ISO 8601 unless ``time_format`` (``news.time_format``) declares a strptime
format, which every row must then match; nothing else is guessed. Times without an offset are UTC.
    make_scorer(NewsConfig(scorer="lexicon"|"finbert", model=...)) -> Scorer
    score_articles(news, scorer, cache_dir) -> news + score (+ the scorer's columns)
    news_features(bars, scored_for_one_symbol, timeframe, NewsConfig(...)) -> DataFrame of NEWS_FEATURES
    bar_close_times(index, timeframe) -> int64 UTC ns of each bar's close (the causal cut-off)

``DatasetConfig(news={...})`` runs all of it inside ``build_market_data``: the news columns are appended
after the price features. See :mod:`features.news.merge` for the causal rule.
"""

from .alpaca import download_news_to_cache, fetch_alpaca_news, news_cache_path, read_cached_news
from .config import NEWS_FEATURES, NewsConfig, news_identity
from .frame import NEWS_COLUMNS, NewsValidationError, read_news_file, validate_news
from .loading import load_news
from .merge import bar_close_times, news_features
from .pipeline import news_feature_tables
from .scoring import (
    FinbertScorer,
    LexiconScorer,
    NewsModelNotFound,
    Scorer,
    make_scorer,
    score_articles,
    score_cache_path,
)

__all__ = [
    "FinbertScorer",
    "LexiconScorer",
    "NEWS_COLUMNS",
    "NEWS_FEATURES",
    "NewsConfig",
    "NewsModelNotFound",
    "NewsValidationError",
    "Scorer",
    "bar_close_times",
    "download_news_to_cache",
    "fetch_alpaca_news",
    "load_news",
    "make_scorer",
    "news_cache_path",
    "news_feature_tables",
    "news_features",
    "news_identity",
    "read_cached_news",
    "read_news_file",
    "score_articles",
    "score_cache_path",
    "validate_news",
]
