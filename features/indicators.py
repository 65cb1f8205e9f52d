"""Causal technical indicators on numpy arrays: float64 in, float64 out, same length, NaN in warm-up.

Every function is causal: the value at index ``t`` depends only on the inputs at ``0..t``, so
truncating the input after ``t`` leaves every value at or before ``t`` bit-for-bit unchanged.
Rolling windows are summed in a fixed order (oldest to newest), and recursive smoothers run
sequentially, so no value depends on how much data follows it.

Conventions (textbook definitions; the first valid index for clean input is given as "from"):

- Rolling windows include the current bar; a window holding a NaN gives NaN.
- ``ema`` uses ``alpha = 2 / (n + 1)``; ``wilder`` (Wilder's RMA) uses ``alpha = 1 / n``. Both are
  seeded with the simple mean of the first ``n`` values, starting at the first non-NaN input, so the
  first value appears ``n - 1`` bars after it; leading NaNs are skipped, a later NaN propagates.
- Oscillators (RSI, stochastic, +DI/-DI, ADX) are on the textbook 0-100 scale here.
- Degenerate windows give a defined, documented value rather than NaN or inf (a flat market is a
  market): RSI 50 with no gains and no losses, %K 50 on a zero range, %B 0.5 on zero-width bands,
  DI and DX 0 on zero true range, z-score 0 on zero spread, VWAP the mean price on zero volume.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# Spreads below this fraction of the level are rounding noise (a flat window), not information.
_FLAT_RTOL = 1e-12


def _as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_window(n: int, name: str = "n") -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name}={n!r} must be a positive integer")


def _rolling_reduce(x: np.ndarray, n: int, op) -> np.ndarray:
    """Combine each window ``x[t-n+1..t]`` with ``op`` from oldest to newest (fixed order = causal, exact)."""
    x = _as_float(x)
    _check_window(n)
    out = np.full(x.shape, np.nan)
    size = x.shape[0] - n + 1
    if size <= 0:
        return out
    acc = x[:size].copy()
    for k in range(1, n):
        acc = op(acc, x[k : k + size])
    out[n - 1 :] = acc
    return out


def rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last ``n`` values (from index ``n - 1``).

    :param x: input series.
    :param n: window length in bars.
    """
    return _rolling_reduce(x, n, np.add)


def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Maximum of the last ``n`` values (from index ``n - 1``).

    :param x: input series.
    :param n: window length in bars.
    """
    return _rolling_reduce(x, n, np.maximum)


def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Minimum of the last ``n`` values (from index ``n - 1``).

    :param x: input series.
    :param n: window length in bars.
    """
    return _rolling_reduce(x, n, np.minimum)


def rolling_std(x: np.ndarray, n: int, ddof: int = 1) -> np.ndarray:
    """Standard deviation of the last ``n`` values, two-pass (from index ``n - 1``; ``n > ddof``).

    :param x: input series.
    :param n: window length in bars.
    :param ddof: delta degrees of freedom: 1 for the sample std, 0 for the population std.
    """
    x = _as_float(x)
    _check_window(n)
    if n <= ddof:
        raise ValueError(f"n={n} must exceed ddof={ddof} for a standard deviation")
    mean = rolling_sum(x, n) / n
    out = np.full(x.shape, np.nan)
    size = x.shape[0] - n + 1
    if size <= 0:
        return out
    m = mean[n - 1 :]
    acc = (x[:size] - m) ** 2
    for k in range(1, n):
        acc = acc + (x[k : k + size] - m) ** 2
    out[n - 1 :] = np.sqrt(acc / (n - ddof))
    return out


def simple_returns(x: np.ndarray, n: int = 1) -> np.ndarray:
    """Simple return over ``n`` bars, ``x[t] / x[t-n] - 1`` (from index ``n``).

    :param x: positive price series.
    :param n: horizon in bars.
    """
    x = _as_float(x)
    _check_window(n)
    out = np.full(x.shape, np.nan)
    out[n:] = x[n:] / x[:-n] - 1.0
    return out


def log_returns(x: np.ndarray, n: int = 1) -> np.ndarray:
    """Log return over ``n`` bars, ``log(x[t] / x[t-n])`` (from index ``n``).

    :param x: positive price series.
    :param n: horizon in bars.
    """
    x = _as_float(x)
    _check_window(n)
    out = np.full(x.shape, np.nan)
    out[n:] = np.log(x[n:] / x[:-n])
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` values (from index ``n - 1``).

    :param x: input series.
    :param n: window length in bars.
    """
    return rolling_sum(x, n) / n


def _seeded_smoother(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """``y[t] = (1 - alpha) * y[t-1] + alpha * x[t]``, seeded with the mean of the first ``n`` valid values."""
    x = _as_float(x)
    _check_window(n)
    out = np.full(x.shape, np.nan)
    valid = ~np.isnan(x)
    if not valid.any():
        return out
    start = int(np.argmax(valid))
    seed_at = start + n - 1
    if seed_at >= x.shape[0]:
        return out
    seed = np.add.reduce(x[start : seed_at + 1]) / n
    out[seed_at] = seed
    rest = x[seed_at + 1 :]
    if rest.size:
        out[seed_at + 1 :], _ = lfilter([alpha], [1.0, alpha - 1.0], rest, zi=[(1.0 - alpha) * seed])
    return out


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, ``alpha = 2 / (n + 1)``, seeded with the SMA of the first ``n`` values.

    Starts at the first non-NaN input ``s``: ``ema[s+n-1] = mean(x[s..s+n-1])``, then
    ``ema[t] = alpha * x[t] + (1 - alpha) * ema[t-1]``.

    :param x: input series (leading NaNs allowed).
    :param n: span in bars.
    """
    return _seeded_smoother(x, n, 2.0 / (n + 1.0))


def wilder(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing (RMA), ``alpha = 1 / n``, seeded with the SMA of the first ``n`` values.

    :param x: input series (leading NaNs allowed).
    :param n: period in bars.
    """
    return _seeded_smoother(x, n, 1.0 / n)


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's Relative Strength Index on 0-100 (from index ``n``).

    Average gain and loss are Wilder averages of the positive and negative close-to-close changes,
    seeded with the mean of the first ``n`` changes; ``RSI = 100 - 100 / (1 + gain / loss)``, which is
    100 when there are no losses and 50 when there are neither gains nor losses.

    :param close: close prices.
    :param n: period in bars.
    """
    close = _as_float(close)
    change = np.full(close.shape, np.nan)
    change[1:] = np.diff(close)
    gain = wilder(np.where(change > 0, change, np.where(np.isnan(change), np.nan, 0.0)), n)
    loss = wilder(np.where(change < 0, -change, np.where(np.isnan(change), np.nan, 0.0)), n)
    total = gain + loss
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(total > 0, 100.0 * gain / total, 50.0)  # == 100 - 100 / (1 + gain / loss)
    out[np.isnan(total)] = np.nan
    return out


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line ``ema(fast) - ema(slow)`` (from ``slow - 1``), its signal line ``ema(line, signal)``
    (from ``slow + signal - 2``) and the histogram ``line - signal``.

    :param close: close prices.
    :param fast: span of the fast EMA.
    :param slow: span of the slow EMA (must exceed ``fast``).
    :param signal: span of the signal EMA of the MACD line.
    """
    if fast >= slow:
        raise ValueError(f"macd fast={fast} must be shorter than slow={slow}")
    line = ema(close, fast) - ema(close, slow)
    signal_line = ema(line, signal)
    return line, signal_line, line - signal_line


def bollinger(close: np.ndarray, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Bollinger bandwidth and %B (from index ``n - 1``).

    Bands are ``sma(n) +/- k * std(n)`` with the population std (ddof 0, Bollinger's definition).
    ``bandwidth = (upper - lower) / middle``; ``%B = (close - lower) / (upper - lower)``, which is 1 at
    the upper band, 0 at the lower and 0.5 when the bands have zero width.

    :param close: close prices.
    :param n: window length in bars.
    :param k: band width in standard deviations.
    """
    close = _as_float(close)
    middle = sma(close, n)
    spread = rolling_std(close, n, ddof=0)
    spread = np.where(spread <= _FLAT_RTOL * np.abs(middle), 0.0, spread)
    upper, lower = middle + k * spread, middle - k * spread
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        bandwidth = width / middle
        percent_b = np.where(width > 0, (close - lower) / width, 0.5)
    percent_b[np.isnan(width)] = np.nan
    return bandwidth, percent_b


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range ``max(high - low, |high - prev close|, |low - prev close|)`` (from index 1).

    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    """
    high, low, close = _as_float(high), _as_float(low), _as_float(close)
    out = np.full(close.shape, np.nan)
    prev = close[:-1]
    out[1:] = np.maximum(high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's Average True Range: Wilder average of :func:`true_range` (from index ``n``).

    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    :param n: period in bars.
    """
    return wilder(true_range(high, low, close), n)


def adx(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wilder's ADX with +DI and -DI, all on 0-100.

    ``up = high[t] - high[t-1]``, ``down = low[t-1] - low[t]``; ``+DM = up`` if ``up > down`` and
    ``up > 0`` else 0 (``-DM`` mirrored). ``+DI = 100 * wilder(+DM) / wilder(TR)`` (from ``n``; 0 when the
    smoothed true range is 0), ``DX = 100 * |+DI - -DI| / (+DI + -DI)`` (0 when both are 0) and
    ``ADX = wilder(DX)`` (from ``2n - 1``).

    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    :param n: period in bars.
    :return: ``(adx, plus_di, minus_di)``.
    """
    high, low = _as_float(high), _as_float(low)
    up = np.full(high.shape, np.nan)
    down = np.full(high.shape, np.nan)
    up[1:] = high[1:] - high[:-1]
    down[1:] = low[:-1] - low[1:]
    first = np.isnan(up)
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    plus_dm[first], minus_dm[first] = np.nan, np.nan
    smoothed_tr = wilder(true_range(high, low, close), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        plus_di = np.where(smoothed_tr > 0, 100.0 * wilder(plus_dm, n) / smoothed_tr, 0.0)
        minus_di = np.where(smoothed_tr > 0, 100.0 * wilder(minus_dm, n) / smoothed_tr, 0.0)
        di_sum = plus_di + minus_di
        dx = np.where(di_sum > 0, 100.0 * np.abs(plus_di - minus_di) / di_sum, 0.0)
    undefined = np.isnan(smoothed_tr)
    plus_di[undefined], minus_di[undefined], dx[undefined] = np.nan, np.nan, np.nan
    return wilder(dx, n), plus_di, minus_di


def stochastic(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, k: int = 14, d: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic oscillator on 0-100: %K (from ``k - 1``) and %D = SMA(%K, d) (from ``k + d - 2``).

    ``%K = 100 * (close - lowest low) / (highest high - lowest low)`` over the last ``k`` bars; 50
    when that range is zero.

    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    :param k: look-back of %K in bars.
    :param d: SMA length of %D.
    """
    close = _as_float(close)
    highest, lowest = rolling_max(high, k), rolling_min(low, k)
    span = highest - lowest
    with np.errstate(divide="ignore", invalid="ignore"):
        percent_k = np.where(span > 0, 100.0 * (close - lowest) / span, 50.0)
    percent_k[np.isnan(span)] = np.nan
    return percent_k, sma(percent_k, d)


def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-Balance Volume: starts at 0, then adds the bar's volume on an up close, subtracts it on a
    down close, and keeps it on an unchanged close (from index 0).

    :param close: close prices.
    :param volume: bar volumes.
    """
    close, volume = _as_float(close), _as_float(volume)
    flow = np.zeros(close.shape)
    flow[1:] = np.sign(np.diff(close)) * volume[1:]
    return np.cumsum(flow)


def typical_price(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Typical price ``(high + low + close) / 3``, the usual stand-in for a bar's VWAP.

    :param high: high prices.
    :param low: low prices.
    :param close: close prices.
    """
    return (_as_float(high) + _as_float(low) + _as_float(close)) / 3.0


def rolling_vwap(price: np.ndarray, volume: np.ndarray, n: int = 20) -> np.ndarray:
    """Volume-weighted average price over the last ``n`` bars (from index ``n - 1``).

    ``sum(price * volume) / sum(volume)``, where ``price`` is each bar's own VWAP when known, else its
    :func:`typical_price`; the plain mean of ``price`` when the window traded no volume.

    :param price: per-bar price (bar VWAP or typical price).
    :param volume: bar volumes.
    :param n: window length in bars.
    """
    price, volume = _as_float(price), _as_float(volume)
    traded = rolling_sum(volume, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(traded > 0, rolling_sum(price * volume, n) / traded, sma(price, n))


def realised_volatility(log_ret: np.ndarray, n: int = 20) -> np.ndarray:
    """Realised volatility: sample std (ddof 1) of the last ``n`` log returns, per bar (not annualised).

    :param log_ret: log returns (NaN at the start, as from :func:`log_returns`).
    :param n: window length in bars (at least 2).
    """
    return rolling_std(log_ret, n, ddof=1)


def volume_zscore(volume: np.ndarray, n: int = 20) -> np.ndarray:
    """Z-score of the current bar's volume within the last ``n`` bars (itself included), sample std;
    0 when the window's volume does not vary (from index ``n - 1``).

    :param volume: bar volumes (or any transform of them, e.g. ``log1p``).
    :param n: window length in bars (at least 2).
    """
    volume = _as_float(volume)
    mean = sma(volume, n)
    spread = rolling_std(volume, n, ddof=1)
    flat = spread <= _FLAT_RTOL * np.maximum(np.abs(mean), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(flat, 0.0, (volume - mean) / spread)
    out[np.isnan(spread)] = np.nan
    return out
