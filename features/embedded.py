"""The embedded default data: real bars shipped inside PyPI packages, read from the installed package.

- ``AAPL, IBM, MSFT, GOOG, FB``: daily US equities from ``bokeh-sampledata`` (Quandl WIKI, public
  domain). Its OHLC are unadjusted; they are adjusted here by ``Adj Close / Close`` (volume by the
  inverse) so that splits (AAPL 2000 and 2005) do not appear as -50% overnight moves.
- ``SP500, NASDAQ``: daily index levels from ``arch`` (1999-2018), the buy-and-hold benchmarks.
- ``EURUSD``: hourly EUR/USD ask bars from ``gym-anytrading`` (2017), when that package is installed.

These are ``source="embedded"``. The portfolio universe is its own source, ``source="skfolio"``
(:func:`load_skfolio_bars`), because AAPL, MSFT and SP500 exist in both with different data:

- ``SKFOLIO_SYMBOLS`` (20 S&P 500 stocks) and ``SKFOLIO_INDEX`` (``"SP500"``, the S&P 500 index):
  daily adjusted closes 1990-01-02..2022-12-28 from ``skfolio.datasets`` (BSD-3), read from the
  installed wheel. These bars are close-only: open = high = low = close = the adjusted close and
  volume = 0. Consequences: the volume-based features take their documented degenerate values
  (OBV flow 0, VWAP distance against the mean close, volume z-score 0); the volume slippage model
  finds no dollar volume, so its impact term is 0 (only its base bps is charged) - market impact is
  off for this data; and an order filled at the next bar's open fills at the next close, since that
  bar's open equals its close. :func:`is_close_only` tells such data apart, whatever its source.

Nothing is downloaded and nothing is copied into the repository.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache

import numpy as np
import pandas as pd

from .bars import validate_bars

BOKEH_SYMBOLS: tuple[str, ...] = ("AAPL", "IBM", "MSFT", "GOOG", "FB")
INDEX_SYMBOLS: dict[str, str] = {"SP500": "sp500", "NASDAQ": "nasdaq"}
FX_SYMBOLS: tuple[str, ...] = ("EURUSD",)
DEFAULT_SYMBOLS: tuple[str, ...] = ("AAPL", "IBM", "MSFT", "GOOG")
SKFOLIO_SYMBOLS: tuple[str, ...] = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)
SKFOLIO_INDEX: str = "SP500"


def embedded_symbols() -> dict[str, str]:
    """Every embedded symbol and its timeframe."""
    table = {s: "1Day" for s in BOKEH_SYMBOLS}
    table.update({s: "1Day" for s in INDEX_SYMBOLS})
    table.update({s: "1Hour" for s in FX_SYMBOLS})
    return table


def skfolio_symbols() -> dict[str, str]:
    """Every ``source="skfolio"`` symbol (the 20 stocks, then the index) and its timeframe."""
    table = {s: "1Day" for s in SKFOLIO_SYMBOLS}
    table[SKFOLIO_INDEX] = "1Day"
    return table


def is_close_only(bars: pd.DataFrame) -> bool:
    """True when open, high and low equal close on every row (close-only data: fills at the next close).

    An empty frame is not close-only (False).

    :param bars: a bars frame with columns open, high, low, close.
    :raises ValueError: when one of those columns is missing.
    """
    missing = [c for c in ("open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"is_close_only: bars lack column(s) {missing}; expected open, high, low, close")
    if len(bars) == 0:
        return False
    close = bars["close"].to_numpy()
    return bool(all(np.array_equal(bars[c].to_numpy(), close) for c in ("open", "high", "low")))


def load_skfolio_bars(symbol: str, timeframe: str = "1Day") -> pd.DataFrame:
    """Validated close-only daily bars of one stock of skfolio's S&P 500 universe, or of the index.

    Rows where skfolio has no price for the symbol (not yet listed) are dropped: bars are traded bars only.

    :param symbol: one of :func:`skfolio_symbols`.
    :param timeframe: must be ``"1Day"`` (no resampling is done).
    """
    table = skfolio_symbols()
    if symbol not in table:
        hint = " (it is in source='embedded')" if symbol in embedded_symbols() else ""
        raise ValueError(f"unknown skfolio symbol {symbol!r}{hint}; source='skfolio' has {list(table)}")
    if timeframe != table[symbol]:
        raise ValueError(
            f"skfolio symbol {symbol!r} has timeframe {table[symbol]!r}, not timeframe={timeframe!r}"
        )
    close = _skfolio_closes()[symbol].dropna()
    values = close.to_numpy(np.float64)
    bars = pd.DataFrame(
        {"open": values, "high": values, "low": values, "close": values, "volume": np.zeros(len(values))},
        index=pd.DatetimeIndex(close.index, name="timestamp"),
    )
    return validate_bars(bars, symbol)


def load_embedded_bars(symbol: str, timeframe: str = "1Day") -> pd.DataFrame:
    """Validated, split-adjusted bars of one embedded symbol.

    :param symbol: one of :func:`embedded_symbols`.
    :param timeframe: must match the symbol's native timeframe (no resampling is done).
    """
    table = embedded_symbols()
    if symbol not in table:
        raise ValueError(
            f"unknown embedded symbol {symbol!r}; the embedded data has {sorted(table)} "
            f"(use source='parquet' or source='alpaca' for other symbols)"
        )
    if timeframe != table[symbol]:
        raise ValueError(
            f"embedded symbol {symbol!r} has timeframe {table[symbol]!r}, not timeframe={timeframe!r}"
        )
    if symbol in BOKEH_SYMBOLS:
        frame = _bokeh_stocks()
        frame = frame[frame["Ticker"] == symbol]
        bars = _adjusted(frame, pd.to_datetime(frame["Date"], format="%Y-%m-%d", utc=True))
    elif symbol in INDEX_SYMBOLS:
        frame = _arch_index(INDEX_SYMBOLS[symbol])
        bars = _adjusted(frame, pd.to_datetime(frame["Date"], format="%m/%d/%Y", utc=True))
    else:
        bars = _eurusd()
    return validate_bars(bars, symbol)


def _adjusted(frame: pd.DataFrame, stamps: pd.Series) -> pd.DataFrame:
    ratio = (frame["Adj Close"] / frame["Close"]).to_numpy(np.float64)
    bars = pd.DataFrame(
        {
            "open": frame["Open"].to_numpy(np.float64) * ratio,
            "high": frame["High"].to_numpy(np.float64) * ratio,
            "low": frame["Low"].to_numpy(np.float64) * ratio,
            "close": frame["Adj Close"].to_numpy(np.float64),
            "volume": frame["Volume"].to_numpy(np.float64) / ratio,
        },
        index=pd.DatetimeIndex(stamps.to_numpy(), name="timestamp"),
    )
    # Rounding in the source can leave high a hair below open/close after adjustment.
    bars["high"] = np.maximum(bars["high"], bars[["open", "close"]].max(axis=1))
    bars["low"] = np.minimum(bars["low"], bars[["open", "close"]].min(axis=1))
    return bars.sort_index()


def _read_packaged_csv(package: str, parts: tuple[str, ...], requirement: str) -> pd.DataFrame:
    """Read a CSV shipped inside an installed package; a missing package names what to install."""
    try:
        resource = importlib.resources.files(package).joinpath(*parts)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{requirement}: pip install {package.split('.')[0].replace('_', '-')}") from exc
    with importlib.resources.as_file(resource) as path:
        return pd.read_csv(path)


@lru_cache(maxsize=1)
def _bokeh_stocks() -> pd.DataFrame:
    return _read_packaged_csv("bokeh_sampledata", ("_data", "stocks.csv.gz"),
                              "the embedded default data needs the 'bokeh-sampledata' package")


@lru_cache(maxsize=2)
def _arch_index(name: str) -> pd.DataFrame:
    return _read_packaged_csv(f"arch.data.{name}", (f"{name}.csv.gz",),
                              "the embedded index data needs the 'arch' package")


def _eurusd() -> pd.DataFrame:
    frame = _read_packaged_csv("gym_anytrading", ("datasets", "data", "FOREX_EURUSD_1H_ASK.csv"),
                               "the embedded EURUSD hourly bars come from 'gym-anytrading'")
    stamps = pd.to_datetime(frame["Time"], format="%d.%m.%Y %H:%M:%S.%f", utc=True)
    bars = pd.DataFrame(
        {
            "open": frame["Open"].to_numpy(np.float64),
            "high": frame["High"].to_numpy(np.float64),
            "low": frame["Low"].to_numpy(np.float64),
            "close": frame["Close"].to_numpy(np.float64),
            "volume": frame["Volume"].to_numpy(np.float64),
        },
        index=pd.DatetimeIndex(stamps.to_numpy(), name="timestamp"),
    )
    # The file repeats stale quotes over weekends with zero volume; those bars did not trade.
    return bars[bars["volume"] > 0].sort_index()


@lru_cache(maxsize=1)
def _skfolio_closes() -> pd.DataFrame:
    """The 20 stocks' adjusted closes and the index level, one column each, indexed at UTC midnight."""
    try:
        from skfolio.datasets import load_sp500_dataset, load_sp500_index
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("source='skfolio' needs the 'skfolio' package: pip install skfolio") from exc
    stocks, index = load_sp500_dataset(), load_sp500_index()
    if tuple(stocks.columns) != SKFOLIO_SYMBOLS or list(index.columns) != [SKFOLIO_INDEX]:
        raise ValueError(
            f"skfolio's S&P 500 data has columns {list(stocks.columns)} and {list(index.columns)}; "
            f"expected {list(SKFOLIO_SYMBOLS)} and {[SKFOLIO_INDEX]} (skfolio version changed?)"
        )
    frame = stocks.join(index, how="outer").astype(np.float64)
    stamps = pd.DatetimeIndex(frame.index)
    frame.index = (stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")).as_unit("ns")
    return frame.sort_index()
