"""One entry point for bars from every source: :func:`load_bars`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from .bars import Timeframe

SOURCES: tuple[str, ...] = ("embedded", "skfolio", "parquet", "alpaca")
DEFAULT_CACHE_DIR = Path("data/historical")


def load_bars(
    symbols: str | Iterable[str],
    timeframe: str | None = "1Day",
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    source: str = "embedded",
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    **alpaca_options,
) -> dict[str, pd.DataFrame]:
    """Load validated bars for each symbol.

    :param symbols: one symbol or several: tickers (``"AAPL"``) or, for ``"parquet"`` and ``"alpaca"``,
        crypto pairs as Alpaca spells them (``"BTC/USD"``, cached as ``BTC~USD``).
    :param timeframe: bar length in Alpaca's spelling (``"1Day"``, ``"1Hour"``, ``"15Min"``); None means
        ``"1Day"``.
    :param start: first timestamp kept (inclusive, UTC if naive); None keeps from the beginning.
    :param end: last timestamp kept (inclusive, UTC if naive); None keeps to the end.
    :param source: ``"embedded"`` (real bars shipped in installed packages, no network),
        ``"skfolio"`` (skfolio's 20 S&P 500 stocks and the index, daily close-only bars, no network; see
        :mod:`features.embedded`), ``"parquet"`` (the cache ``cache_dir/{SYMBOL}/{TIMEFRAME}/data.parquet``)
        or ``"alpaca"`` (downloaded with alpaca-py, written to the cache, keys from APCA_API_KEY_ID /
        APCA_API_SECRET_KEY).
    :param cache_dir: root of the Parquet cache.
    :param alpaca_options: passed to :func:`features.alpaca_source.fetch_alpaca_bars`
        (``api_key``, ``secret_key``, ``url_override``, ``feed``, ``adjustment``; keys are needed for
        stocks only, ``feed`` and ``adjustment`` apply to stocks only), and ``crypto_batch_size`` to
        :func:`features.alpaca_source.download_to_cache`.
    :return: ``{symbol: bars}``, each frame validated (UTC index, float columns).
    """
    if isinstance(symbols, str):
        symbols = [symbols]
    symbols = list(symbols)
    if not symbols:
        raise ValueError("symbols is empty; pass at least one symbol")
    timeframe = str(Timeframe.parse(timeframe or "1Day"))
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not known; expected one of {list(SOURCES)}")
    start_ts, end_ts = _as_utc(start, "start"), _as_utc(end, "end")
    if start_ts is not None and end_ts is not None and start_ts > end_ts:
        raise ValueError(f"start={start_ts} is after end={end_ts}")

    if source == "alpaca":
        from .alpaca_source import download_to_cache

        if start_ts is None:
            raise ValueError("source='alpaca' needs a start date (start=...)")
        # Every symbol in one call: crypto pairs are fetched several per request.
        download_to_cache(symbols, timeframe, start_ts, end_ts, root=cache_dir, **alpaca_options)

    result: dict[str, pd.DataFrame] = {}
    for symbol in symbols:
        if source == "embedded":
            from .embedded import load_embedded_bars

            bars = load_embedded_bars(symbol, timeframe)
        elif source == "skfolio":
            from .embedded import load_skfolio_bars

            bars = load_skfolio_bars(symbol, timeframe)
        else:  # parquet, or alpaca (downloaded into the cache above)
            from .parquet_cache import read_cached_bars

            bars = read_cached_bars(symbol, timeframe, root=cache_dir)
        bars = bars.loc[start_ts:end_ts] if (start_ts is not None or end_ts is not None) else bars
        if len(bars) == 0:
            raise ValueError(
                f"{symbol}: no bars between start={start_ts} and end={end_ts} in source={source!r}"
            )
        result[symbol] = bars
    return result


def _as_utc(value: str | pd.Timestamp | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a date or timestamp") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
