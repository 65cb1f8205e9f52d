"""Each indicator against a hand-computed value or an independent pandas/loop reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import indicators as ind


@pytest.fixture(scope="module")
def ohlc() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 120
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.005, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n))
    volume = rng.uniform(1e5, 1e6, n)
    return open_, high, low, close, volume


def _wilder_loop(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing written out: skip leading NaN, seed with the mean of n values, then recurse."""
    out = np.full(len(x), np.nan)
    start = int(np.argmax(~np.isnan(x)))
    out[start + n - 1] = np.mean(x[start : start + n])
    for t in range(start + n, len(x)):
        out[t] = (out[t - 1] * (n - 1) + x[t]) / n
    return out


def _ema_pandas(x: np.ndarray, n: int) -> np.ndarray:
    """pandas ewm(adjust=False) over [SMA seed, rest...], the seed placed at index n - 1."""
    s = pd.Series(x).dropna()
    start = s.index[0]
    seeded = pd.concat([pd.Series([s.iloc[:n].mean()]), s.iloc[n:]], ignore_index=True)
    values = seeded.ewm(span=n, adjust=False).mean().to_numpy()
    out = np.full(len(x), np.nan)
    out[start + n - 1 :] = values
    return out


def test_returns_hand_values() -> None:
    x = np.array([100.0, 110.0, 99.0, 99.0])
    np.testing.assert_allclose(ind.simple_returns(x, 1), [np.nan, 0.1, -0.1, 0.0])
    np.testing.assert_allclose(ind.simple_returns(x, 2), [np.nan, np.nan, -0.01, -0.1])
    np.testing.assert_allclose(ind.log_returns(x, 1), [np.nan, np.log(1.1), np.log(0.9), 0.0])
    np.testing.assert_allclose(ind.log_returns(x, 3), [np.nan, np.nan, np.nan, np.log(0.99)])


def test_sma_and_rolling_against_pandas(ohlc) -> None:
    close = ohlc[3]
    s = pd.Series(close)
    for n in (1, 3, 20):
        np.testing.assert_allclose(ind.sma(close, n), s.rolling(n).mean(), rtol=1e-12)
        np.testing.assert_allclose(ind.rolling_max(close, n), s.rolling(n).max(), rtol=0)
        np.testing.assert_allclose(ind.rolling_min(close, n), s.rolling(n).min(), rtol=0)
    np.testing.assert_allclose(ind.rolling_std(close, 10, ddof=1), s.rolling(10).std(ddof=1), rtol=1e-10)
    np.testing.assert_allclose(ind.rolling_std(close, 10, ddof=0), s.rolling(10).std(ddof=0), rtol=1e-10)
    np.testing.assert_allclose(ind.sma(np.array([1.0, 2.0, 3.0, 4.0]), 3), [np.nan, np.nan, 2.0, 3.0])


def test_ema_hand_values_and_pandas_reference(ohlc) -> None:
    # n=3: alpha=0.5, seed = mean(1, 2, 3) = 2 at index 2; then 0.5*6 + 0.5*2 = 4; 0.5*0 + 0.5*4 = 2.
    np.testing.assert_allclose(ind.ema(np.array([1.0, 2.0, 3.0, 6.0, 0.0]), 3), [np.nan, np.nan, 2.0, 4.0, 2.0])
    close = ohlc[3]
    for n in (5, 12, 26):
        np.testing.assert_allclose(ind.ema(close, n), _ema_pandas(close, n), rtol=1e-12)
    with_nan = np.concatenate([[np.nan, np.nan], close])
    np.testing.assert_allclose(ind.ema(with_nan, 10), _ema_pandas(with_nan, 10), rtol=1e-12)
    assert np.isnan(ind.ema(close[:4], 5)).all()


def test_wilder_against_loop(ohlc) -> None:
    close = ohlc[3]
    np.testing.assert_allclose(ind.wilder(close, 14), _wilder_loop(close, 14), rtol=1e-12)


def test_rsi_step_by_step_on_20_values() -> None:
    close = np.array(
        [44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08,
         45.89, 46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64]
    )  # fmt: skip
    n = 14
    change = np.diff(close)
    avg_gain = np.mean(np.clip(change[:n], 0, None))
    avg_loss = np.mean(np.clip(-change[:n], 0, None))
    expected = [np.nan] * n + [100.0 - 100.0 / (1.0 + avg_gain / avg_loss)]
    for d in change[n:]:
        avg_gain = (avg_gain * (n - 1) + max(d, 0.0)) / n
        avg_loss = (avg_loss * (n - 1) + max(-d, 0.0)) / n
        expected.append(100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
    got = ind.rsi(close, n)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[n] == pytest.approx(70.46, abs=0.01)  # the classic StockCharts example


def test_rsi_known_properties() -> None:
    rising = np.arange(1.0, 31.0)
    assert np.isnan(ind.rsi(rising, 14)[:14]).all()
    np.testing.assert_array_equal(ind.rsi(rising, 14)[14:], 100.0)
    np.testing.assert_array_equal(ind.rsi(rising[::-1].copy(), 14)[14:], 0.0)
    np.testing.assert_array_equal(ind.rsi(np.full(30, 5.0), 14)[14:], 50.0)


def test_macd_against_pandas(ohlc) -> None:
    close = ohlc[3]
    line, signal, hist = ind.macd(close, 12, 26, 9)
    expected_line = _ema_pandas(close, 12) - _ema_pandas(close, 26)
    np.testing.assert_allclose(line, expected_line, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(signal, _ema_pandas(expected_line, 9), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hist, line - signal)
    assert np.isnan(line[:25]).all() and not np.isnan(line[25])
    assert np.isnan(signal[:33]).all() and not np.isnan(signal[33])
    with pytest.raises(ValueError, match="fast=26"):
        ind.macd(close, 26, 12)


def test_bollinger_against_pandas_and_band_edges(ohlc) -> None:
    close = ohlc[3]
    s = pd.Series(close)
    mid, sd = s.rolling(20).mean(), s.rolling(20).std(ddof=0)
    upper, lower = mid + 2 * sd, mid - 2 * sd
    bandwidth, percent_b = ind.bollinger(close, 20, 2.0)
    np.testing.assert_allclose(bandwidth, (upper - lower) / mid, rtol=1e-10)
    np.testing.assert_allclose(percent_b, (s - lower) / (upper - lower), rtol=1e-9)
    x = np.array([1.0] * 4 + [2.0])  # mean 1.2, population std 0.4: upper (k=2) = 2.0 = close -> %B = 1
    assert ind.bollinger(x, 5, 2.0)[1][-1] == pytest.approx(1.0, abs=1e-12)
    assert ind.bollinger(np.array([1.0, 3.0, 2.0]), 3, 2.0)[1][-1] == pytest.approx(0.5)  # close == middle
    y = np.array([2.0] * 4 + [1.0])  # mirror: close on the lower band -> %B = 0
    assert ind.bollinger(y, 5, 2.0)[1][-1] == pytest.approx(0.0, abs=1e-12)
    flat_bw, flat_b = ind.bollinger(np.full(25, 3.3), 20)
    np.testing.assert_array_equal(flat_b[19:], 0.5)
    np.testing.assert_array_equal(flat_bw[19:], 0.0)


def test_true_range_and_atr(ohlc) -> None:
    high = np.array([10.0, 11.0, 10.5, 12.0])
    low = np.array([9.0, 10.0, 8.0, 11.5])
    close = np.array([9.5, 10.8, 9.0, 11.8])
    # t=1: max(1, |11-9.5|, |10-9.5|) = 1.5; t=2: max(2.5, .3, 2.8) = 2.8; t=3: max(.5, 3, 2.5) = 3.
    np.testing.assert_allclose(ind.true_range(high, low, close), [np.nan, 1.5, 2.8, 3.0])
    # n=2: seed mean(1.5, 2.8) = 2.15 at t=2; t=3: (2.15 + 3) / 2 = 2.575.
    np.testing.assert_allclose(ind.atr(high, low, close, 2), [np.nan, np.nan, 2.15, 2.575])
    _, h, l, c, _ = ohlc
    prev = pd.Series(c).shift()
    parts = [pd.Series(h - l), (pd.Series(h) - prev).abs(), (pd.Series(l) - prev).abs()]
    tr = pd.concat(parts, axis=1).max(axis=1).to_numpy(copy=True)
    tr[0] = np.nan
    np.testing.assert_allclose(ind.atr(h, l, c, 14), _wilder_loop(tr, 14), rtol=1e-12)


def test_adx_against_loop_reference(ohlc) -> None:
    _, high, low, close, _ = ohlc
    n = 14
    size = len(close)
    tr, pdm, mdm = np.full(size, np.nan), np.full(size, np.nan), np.full(size, np.nan)
    for t in range(1, size):
        tr[t] = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        up, down = high[t] - high[t - 1], low[t - 1] - low[t]
        pdm[t] = up if (up > down and up > 0) else 0.0
        mdm[t] = down if (down > up and down > 0) else 0.0
    str_, spdm, smdm = _wilder_loop(tr, n), _wilder_loop(pdm, n), _wilder_loop(mdm, n)
    pdi, mdi = 100 * spdm / str_, 100 * smdm / str_
    dx = 100 * np.abs(pdi - mdi) / (pdi + mdi)
    adx, plus_di, minus_di = ind.adx(high, low, close, n)
    np.testing.assert_allclose(plus_di, pdi, rtol=1e-10)
    np.testing.assert_allclose(minus_di, mdi, rtol=1e-10)
    np.testing.assert_allclose(adx, _wilder_loop(dx, n), rtol=1e-10)
    assert np.isnan(adx[: 2 * n - 1]).all() and not np.isnan(adx[2 * n - 1])
    # A steady uptrend: all movement is +DM, so -DI = 0 and DX = ADX = 100.
    rising = np.arange(1.0, 60.0)
    adx_up, plus_up, minus_up = ind.adx(rising + 0.5, rising - 0.5, rising, n)
    np.testing.assert_allclose(adx_up[2 * n - 1 :], 100.0)
    np.testing.assert_array_equal(minus_up[n:], 0.0)
    assert (plus_up[n:] > 0).all()


def test_stochastic_hand_values_and_pandas(ohlc) -> None:
    high = np.array([10.0, 12.0, 11.0, 13.0])
    low = np.array([8.0, 9.0, 10.0, 9.5])
    close = np.array([9.0, 11.0, 10.5, 12.0])
    k, d = ind.stochastic(high, low, close, 3, 2)
    # t=2: range [8, 12] -> (10.5-8)/4 = 62.5; t=3: range [9, 13] -> (12-9)/4 = 75; %D(2) at t=3 = 68.75.
    np.testing.assert_allclose(k, [np.nan, np.nan, 62.5, 75.0])
    np.testing.assert_allclose(d, [np.nan, np.nan, np.nan, 68.75])
    _, h, l, c, _ = ohlc
    hh, ll = pd.Series(h).rolling(14).max(), pd.Series(l).rolling(14).min()
    expected_k = 100 * (pd.Series(c) - ll) / (hh - ll)
    k, d = ind.stochastic(h, l, c, 14, 3)
    np.testing.assert_allclose(k, expected_k, rtol=1e-12)
    np.testing.assert_allclose(d, expected_k.rolling(3).mean(), rtol=1e-12)
    assert np.nanmin(k) >= 0 and np.nanmax(k) <= 100
    np.testing.assert_array_equal(ind.stochastic(np.ones(5), np.ones(5), np.ones(5), 3, 2)[0][2:], 50.0)


def test_obv_sign_logic() -> None:
    close = np.array([10.0, 11.0, 10.5, 10.5, 12.0])
    volume = np.array([100.0, 200.0, 50.0, 70.0, 10.0])
    # up +200, down -50, unchanged 0, up +10
    np.testing.assert_array_equal(ind.obv(close, volume), [0.0, 200.0, 150.0, 150.0, 160.0])


def test_rolling_vwap_and_typical_price() -> None:
    high, low, close = np.array([3.0, 6.0, 9.0]), np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    tp = ind.typical_price(high, low, close)
    np.testing.assert_allclose(tp, [2.0, 4.0, 6.0])
    volume = np.array([1.0, 3.0, 0.0])
    # t=1: (2*1 + 4*3) / 4 = 3.5; t=2: (4*3 + 6*0) / 3 = 4.
    np.testing.assert_allclose(ind.rolling_vwap(tp, volume, 2), [np.nan, 3.5, 4.0])
    # No volume in the window: the plain mean price.
    np.testing.assert_allclose(ind.rolling_vwap(tp, np.zeros(3), 2), [np.nan, 3.0, 5.0])


def test_realised_volatility_and_volume_zscore(ohlc) -> None:
    _, _, _, close, volume = ohlc
    lr = ind.log_returns(close)
    np.testing.assert_allclose(ind.realised_volatility(lr, 20), pd.Series(lr).rolling(20).std(), rtol=1e-10)
    assert np.isnan(ind.realised_volatility(lr, 20)[:20]).all()
    s = pd.Series(volume)
    expected = (s - s.rolling(20).mean()) / s.rolling(20).std()
    np.testing.assert_allclose(ind.volume_zscore(volume, 20), expected, rtol=1e-9)
    # hand value: [1, 2, 3] -> mean 2, sample std 1, z of 3 = 1
    assert ind.volume_zscore(np.array([1.0, 2.0, 3.0]), 3)[-1] == pytest.approx(1.0)
    np.testing.assert_array_equal(ind.volume_zscore(np.full(6, 5e5), 3)[2:], 0.0)


def test_every_indicator_is_causal(ohlc) -> None:
    _, high, low, close, volume = ohlc
    lr = ind.log_returns(close)
    calls = {
        "sma": lambda k: ind.sma(close[:k], 10),
        "ema": lambda k: ind.ema(close[:k], 10),
        "rsi": lambda k: ind.rsi(close[:k], 14),
        "macd": lambda k: np.column_stack(ind.macd(close[:k])),
        "bollinger": lambda k: np.column_stack(ind.bollinger(close[:k])),
        "atr": lambda k: ind.atr(high[:k], low[:k], close[:k]),
        "adx": lambda k: np.column_stack(ind.adx(high[:k], low[:k], close[:k])),
        "stochastic": lambda k: np.column_stack(ind.stochastic(high[:k], low[:k], close[:k])),
        "obv": lambda k: ind.obv(close[:k], volume[:k]),
        "vwap": lambda k: ind.rolling_vwap(ind.typical_price(high, low, close)[:k], volume[:k]),
        "rvol": lambda k: ind.realised_volatility(lr[:k], 10),
        "volume_z": lambda k: ind.volume_zscore(volume[:k]),
    }
    for name, call in calls.items():
        full = call(len(close))
        assert full.shape[0] == len(close), name
        for k in (1, 15, 30, 61, 100):
            np.testing.assert_array_equal(call(k), full[:k], err_msg=name)


def test_short_input_is_all_nan_and_bad_window_errors() -> None:
    x = np.array([1.0, 2.0])
    assert np.isnan(ind.sma(x, 5)).all() and np.isnan(ind.ema(x, 5)).all() and np.isnan(ind.rsi(x, 14)).all()
    with pytest.raises(ValueError, match="n=0"):
        ind.sma(x, 0)
