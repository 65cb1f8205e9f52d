"""``Panel``: a universe of symbols of one :class:`MarketData` laid on one timeline, for one account.

The portfolio simulator and env read prices and features by ``[time, asset]``. The timeline is the union of
every symbol's bar times; at each time an asset either has a bar or not (a holiday of its exchange, before its
listing, after its delisting). The documented rule for calendars:

- an asset with no bar at a time **holds its position and cannot trade** there; its value is its last known
  close (before its first bar it has no price, holds nothing and cannot trade);
- its observation at such a time is its latest bar's window (data up to that time only), zeros before its
  first bar;
- calendars may differ (US equities beside 24/7 crypto, holidays, listings, delistings), but within its own
  life (first to last bar) an asset must have a bar at ``min_coverage`` of the timeline's times at least
  (default 0.5: a 5-day equity beside 7-day crypto is 0.71); fewer means the symbols' bars are not of one
  timeframe or calendar family, and the panel refuses them naming the symbol.

Arrays are ``(T, N)`` float64/int64/bool, time-major (a row is one time's universe), so a step reads one
contiguous row. Memory is linear in assets x bars: the prices and indices below, plus the features stacked
with ``window`` zero rows before each symbol (:attr:`Panel.padded_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .market_data import MarketData
from .splits import SPLITS


class PanelError(ValueError):
    """A universe that cannot be laid on one timeline; the message names the symbol."""


@dataclass
class Panel:
    """Prices, features and splits of ``N`` symbols on ``T`` union times.

    :param data: the dataset the panel reads (its ``symbols`` may be more than the panel's).
    :param symbols: the panel's symbols, in asset order.
    :param timestamps: int64 (T,) UTC nanoseconds, the union of the symbols' bar times (for daily bars, of their
        UTC dates at 00:00: a stock stamped at midnight New York and a pair stamped at 00:00 UTC share a date's row).
    :param has_bar: bool (T, N): the asset traded a bar at that time.
    :param rows: int64 (T, N): the dataset row of the asset's latest bar at or before that time, -1 before
        its first bar.
    :param open: float64 (T, N): the bar's open, NaN where the asset has no bar.
    :param high: float64 (T, N): the bar's high, NaN where the asset has no bar.
    :param low: float64 (T, N): the bar's low, NaN where the asset has no bar.
    :param close: float64 (T, N): the latest known close (carried over times with no bar), 0 before the
        asset's first bar (it holds nothing then).
    :param volume: float64 (T, N): the bar's volume, 0 where no bar.
    :param close_only: bool (N,): the asset's bars have open = high = low = close on every row (a close-only
        source: its orders fill at the next close, since the next bar's open is its close).
    :param window_start: int64 (T, N): the row of :attr:`padded_features` where the asset's observation window
        at that time starts (``window`` rows from there are its window, oldest first).
    :param padded_features: float32: every panel symbol's scaled features, each preceded by ``window`` zero
        rows (the window of a time before the asset's first bars reads zeros there).
    :param split_rows: split name -> ``(start, end)`` panel rows: from the earliest symbol's first row of
        the split to the latest symbol's last row of it (splits are by time, so these are one interval).
    """

    data: MarketData
    symbols: list[str]
    timestamps: np.ndarray
    has_bar: np.ndarray
    rows: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    close_only: np.ndarray
    window_start: np.ndarray
    padded_features: np.ndarray
    split_rows: dict[str, tuple[int, int]]

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @property
    def n_times(self) -> int:
        return len(self.timestamps)

    @property
    def window(self) -> int:
        return self.data.window

    @property
    def n_features(self) -> int:
        return self.data.n_features

    @property
    def timeframe(self) -> str:
        return self.data.timeframe

    def split_range(self, split: str) -> tuple[int, int]:
        """``(start, end)`` panel rows of ``split``."""
        if split not in self.split_rows:
            raise ValueError(f"split={split!r} is not known; expected one of {list(SPLITS)}")
        return self.split_rows[split]

    def windows(self, t: int) -> np.ndarray:
        """The observation windows at time row ``t``: float32 ``(N, window, n_features)`` (a copy)."""
        index = self.window_start[t][:, None] + np.arange(self.window)
        return self.padded_features[index]

    def closes(self, start: int, end: int) -> np.ndarray:
        """Closes of rows ``[start, end)`` with NaN where the asset has no bar (for fitting allocations)."""
        return np.where(self.has_bar[start:end], self.close[start:end], np.nan)

    @classmethod
    def from_market_data(cls, data: MarketData, symbols: Sequence[str] | None = None, *,
                         min_coverage: float = 0.5) -> "Panel":
        """Lay ``symbols`` (default: all of ``data``'s) on the union of their bar times.

        :param data: a built dataset.
        :param symbols: the universe, at least 2 distinct symbols of ``data``.
        :param min_coverage: the least share of the timeline's times within its own life at which each asset
            must have a bar (see the module docstring).
        """
        symbols = list(data.symbols if symbols is None else symbols)
        unknown = [s for s in symbols if s not in data.symbols]
        if unknown:
            raise PanelError(f"symbols {unknown} are not in the dataset (it has {list(data.symbols)})")
        duplicated = sorted({s for s in symbols if symbols.count(s) > 1})
        if duplicated:
            raise PanelError(f"symbols {duplicated} appear more than once in the universe")
        if len(symbols) < 2:
            raise PanelError(f"a universe needs at least 2 assets; got {symbols} (use TradingEnv-v0 for one asset)")
        if not 0.0 < float(min_coverage) <= 1.0:
            raise PanelError(f"min_coverage={min_coverage!r} must be in (0, 1]")
        blocks = [data.symbol_rows(s) for s in symbols]
        stamps = [_time_keys(symbol, data.timestamps[b], data.timeframe) for symbol, b in zip(symbols, blocks)]
        timeline = np.unique(np.concatenate(stamps))
        n, t_len, window = len(symbols), len(timeline), data.window
        has_bar = np.zeros((t_len, n), dtype=bool)
        rows = np.full((t_len, n), -1, dtype=np.int64)
        open_ = np.full((t_len, n), np.nan)
        high = np.full((t_len, n), np.nan)
        low = np.full((t_len, n), np.nan)
        close = np.zeros((t_len, n))
        volume = np.zeros((t_len, n))
        window_start = np.zeros((t_len, n), dtype=np.int64)
        close_only = np.zeros(n, dtype=bool)
        padded: list[np.ndarray] = []
        base = 0
        for i, (symbol, block, own) in enumerate(zip(symbols, blocks, stamps)):
            at = np.searchsorted(timeline, own)  # the times where this asset has a bar
            first, last = int(at[0]), int(at[-1])
            coverage = len(own) / (last - first + 1)
            if coverage < min_coverage:
                raise PanelError(
                    f"{symbol}: has a bar at {coverage:.0%} of the universe's times within its own life, under "
                    f"min_coverage={min_coverage:g}; its bars are not of the same timeframe or calendar family as "
                    f"the others' (an asset without a bar holds and cannot trade, but a universe is one timeline)")
            has_bar[at, i] = True
            prices = data.prices[block]
            open_[at, i] = prices[:, 0]
            high[at, i] = prices[:, 1]
            low[at, i] = prices[:, 2]
            volume[at, i] = prices[:, 4]
            # latest bar at or before each time: the index of the asset's bar, carried forward
            latest = np.searchsorted(own, timeline, side="right") - 1
            listed = latest >= 0
            rows[listed, i] = block.start + latest[listed]
            close[listed, i] = prices[latest[listed], 3]
            # padded features: `window` zero rows, then the symbol's rows; the window ending at local row r
            # starts at padded row base + r + 1, and at base (all zeros) before the first bar
            window_start[:, i] = base + np.where(listed, latest + 1, 0)
            padded.append(np.zeros((window, data.n_features), dtype=np.float32))
            padded.append(np.asarray(data.features[block], dtype=np.float32))
            base += window + (block.stop - block.start)
            close_only[i] = all(np.array_equal(prices[:, k], prices[:, 3]) for k in (0, 1, 2))
        split_rows: dict[str, tuple[int, int]] = {}
        for split in SPLITS:
            starts, ends = [], []
            for symbol, own in zip(symbols, stamps):
                lo, hi = (int(v) for v in data.split_ranges[split][data.symbol_index(symbol)])  # local rows
                if hi > lo:
                    starts.append(own[lo])
                    ends.append(own[hi - 1])
            if not starts:
                split_rows[split] = (0, 0)
                continue
            split_rows[split] = (int(np.searchsorted(timeline, min(starts))),
                                 int(np.searchsorted(timeline, max(ends))) + 1)
        return cls(data=data, symbols=symbols, timestamps=timeline, has_bar=has_bar, rows=rows, open=open_, high=high,
                   low=low, close=close, volume=volume, close_only=close_only, window_start=window_start,
                   padded_features=np.concatenate(padded), split_rows=split_rows)


def _time_keys(symbol: str, stamps: np.ndarray, timeframe: str) -> np.ndarray:
    """The times a symbol's bars take on the timeline: their stamps, or for daily bars their UTC date.

    Daily bars of one date are one time of the universe whatever hour each source stamps them at (Alpaca
    stamps a stock's day at midnight New York, 04:00 or 05:00 UTC, and a crypto pair's at 00:00 UTC): a
    decision on that date's row sees every asset's bar of that date, and fills at the next date's opens.

    :param symbol: the symbol (for the message).
    :param stamps: its bar times, int64 UTC nanoseconds, increasing.
    :param timeframe: the dataset's timeframe.
    """
    from .bars import Timeframe

    tf = Timeframe.parse(timeframe)
    if tf.unit != "Day" or tf.amount != 1:
        return np.asarray(stamps, dtype=np.int64)
    day = 86_400 * 1_000_000_000
    keys = np.asarray(stamps, dtype=np.int64) // day * day
    repeated = np.flatnonzero(np.diff(keys) <= 0)
    if repeated.size:
        i = int(repeated[0]) + 1
        raise PanelError(f"{symbol}: two daily bars on one UTC date ({np.datetime64(int(stamps[i - 1]), 'ns')} and "
                         f"{np.datetime64(int(stamps[i]), 'ns')}); daily bars must be one per date")
    return keys


__all__ = ["Panel", "PanelError"]
