"""Synthetic bars frames for tests and experiments, from :func:`sim.synthetic.generate_ohlcv`."""

from __future__ import annotations

import pandas as pd

from sim.synthetic import generate_ohlcv


def synthetic_bars(
    n_bars: int = 3000,
    *,
    phi: float = 0.0,
    signal: float = 0.0,
    sigma: float = 0.02,
    start: str = "2010-01-04",
    freq: str = "B",
    seed: int = 0,
    **options: float,
) -> pd.DataFrame:
    """A validated-shape bars frame (UTC index) of a synthetic market with a planted edge.

    :param n_bars: number of bars.
    :param phi: AR(1) coefficient of returns (0 = no edge).
    :param signal: loading on the hidden signal (not a column of the frame).
    :param sigma: return noise per bar.
    :param start: first timestamp.
    :param freq: pandas frequency of the index (``"B"`` business days, ``"h"`` hours).
    :param seed: random seed.
    :param options: passed to :func:`sim.synthetic.generate_ohlcv` (``start_price``, ``overnight_fraction``).
    """
    arrays = generate_ohlcv(n_bars, phi=phi, signal=signal, sigma=sigma, seed=seed, **options)
    index = pd.date_range(start, periods=n_bars, freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame({k: arrays[k] for k in ("open", "high", "low", "close", "volume")}, index=index)
