"""News columns for a dataset: load, score and merge for every symbol's bars (used by ``build_market_data``)."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from ..bars import Timeframe
from ..calendars import asset_class_of
from .config import NewsConfig
from .frame import select_symbols, validate_news
from .loading import load_news
from .merge import bar_close_times, news_features
from .scoring import make_scorer, score_articles


def news_feature_tables(
    frames: Mapping[str, pd.DataFrame],
    timeframe: str | Timeframe,
    settings: NewsConfig | Mapping[str, Any],
    articles: pd.DataFrame | None = None,
    progress: Callable[[int], Any] | None = None,
) -> tuple[dict[str, pd.DataFrame], str]:
    """The news columns of each symbol's bars, and a sha256 of them all.

    :param frames: ``{symbol: validated bars}`` (tickers, or crypto pairs spelt ``BTC/USD``: their bars close
        at their end, :func:`features.calendars.asset_class_of`).
    :param timeframe: the bars' timeframe.
    :param settings: the news settings (source, scorer, merge parameters).
    :param articles: a news frame to use instead of loading from ``settings.source`` (validated here, text
        times in ``settings.time_format`` or ISO 8601; it may hold other symbols, and may already carry a
        ``score`` column, which is then used as is).
    :param progress: passed to :func:`features.news.score_articles`.
    :return: ``({symbol: float64 frame of the news columns on the bars' index}, digest)``.
    """
    config = NewsConfig.coerce(settings)
    tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    symbols = list(frames)
    closes = {s: bar_close_times(frames[s].index, tf, config.session_close, config.session_timezone,
                                 asset_class=asset_class_of(s)) for s in symbols}
    start = pd.Timestamp(min(int(c[0]) for c in closes.values()) - tf.seconds * 1_000_000_000, tz="UTC")
    end = pd.Timestamp(max(int(c[-1]) for c in closes.values()), tz="UTC")
    if articles is None:
        news = load_news(symbols, start, end, source=config.source, cache_dir=config.cache_dir, path=config.path,
                         time_format=config.time_format)
    else:
        given_scores = "score" in articles.columns
        news = validate_news(articles.drop(columns=[c for c in articles.columns if c == "score"]), "news=",
                             time_format=config.time_format)
        if given_scores:
            keyed = articles.assign(id=articles["id"].astype(str))
            news = news.merge(keyed[["id", "symbol", "score"]].drop_duplicates(["id", "symbol"], keep="last"),
                              on=["id", "symbol"], how="left")
        news = select_symbols(news, symbols)
    if "score" not in news.columns:
        news = score_articles(news, make_scorer(config), config.cache_dir, config.text, progress)
    digest = hashlib.sha256()
    tables: dict[str, pd.DataFrame] = {}
    for symbol in symbols:
        table = news_features(frames[symbol], news[news["symbol"] == symbol], tf, config)
        tables[symbol] = table
        digest.update(symbol.encode())
        digest.update(np.ascontiguousarray(table.to_numpy(np.float64)).tobytes())
    return tables, digest.hexdigest()


__all__ = ["news_feature_tables"]
