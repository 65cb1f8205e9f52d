"""The embedded default data: real bars shipped inside PyPI packages, read from the installed package.

- ``AAPL, IBM, MSFT, GOOG, FB``: daily US equities from ``bokeh-sampledata`` (Quandl WIKI, public
  domain). Its OHLC are unadjusted; they are adjusted here by ``Adj Close / Close`` (volume by the
  inverse) so that splits (AAPL 2000 and 2005) do not appear as -50% overnight moves.
- ``SP500, NASDAQ``: daily index levels from ``arch`` (1999-2018), the buy-and-hold benchmarks.
- ``EURUSD``: hourly EUR/USD ask bars from ``gym-anytrading`` (2017), when that package is installed.

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


def embedded_symbols() -> dict[str, str]:
    """Every embedded symbol and its timeframe."""
    table = {s: "1Day" for s in BOKEH_SYMBOLS}
    table.update({s: "1Day" for s in INDEX_SYMBOLS})
    table.update({s: "1Hour" for s in FX_SYMBOLS})
    return table


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
