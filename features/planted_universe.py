"""Planted multi-asset markets: a universe where some assets carry a known AR(1) edge, and the oracle.

:func:`planted_universe` builds ``{symbol: bars}`` (daily business days, UTC) from
:func:`sim.synthetic.generate_ohlcv`, one independent market per asset: the assets named in
``edge_assets`` have log returns ``r_t = phi * r_{t-1} + sigma * e_t`` (their next return is predictable
from their own last return, which the default features carry as ``ret_1`` / ``logret_1``); the others
have ``phi = 0`` (iid returns, no edge). Opens equal the previous close (``overnight_fraction=0``), so an
order decided at the close of ``t`` and filled at the next open earns the next close-to-close return.

:func:`expected_returns` is what the planted rule says at each close about the next bar, and
:class:`OraclePolicy` trades on it (the rule is documented there). Feed the bars to
``features.build_market_data`` (any window) and then to ``envs.PortfolioEnv``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from sim.engine import Costs
from sim.synthetic import generate_ohlcv

from .panel import Panel

PLANTED_START = "2010-01-04"  # a Monday: business-day bars


class PlantedUniverseError(ValueError):
    """Bad arguments to :func:`planted_universe` (one line naming the argument)."""


def planted_symbols(n_assets: int) -> list[str]:
    """The symbols of a planted universe of ``n_assets``: ``A00``, ``A01``, ...

    :param n_assets: number of assets.
    """
    return [f"A{i:02d}" for i in range(int(n_assets))]


def _edge_indices(n_assets: int, edge_assets: Iterable[int | str]) -> list[int]:
    symbols = planted_symbols(n_assets)
    out: list[int] = []
    for asset in edge_assets:
        if isinstance(asset, str):
            if asset not in symbols:
                raise PlantedUniverseError(f"edge_assets: {asset!r} is not a symbol of this universe ({symbols})")
            out.append(symbols.index(asset))
        elif isinstance(asset, (int, np.integer)) and not isinstance(asset, bool) and 0 <= asset < n_assets:
            out.append(int(asset))
        else:
            raise PlantedUniverseError(f"edge_assets: {asset!r} must be an asset index in [0, {n_assets}) or a symbol")
    if len(set(out)) != len(out):
        raise PlantedUniverseError(f"edge_assets: {list(edge_assets)} names an asset twice")
    return sorted(out)


def _arrays(n_assets: int, n_bars: int, edge_assets: Iterable[int | str], phi: float, sigma: float,
            seed: int) -> list[dict[str, np.ndarray]]:
    if isinstance(n_assets, bool) or int(n_assets) != n_assets or n_assets < 2:
        raise PlantedUniverseError(f"n_assets={n_assets!r} must be an integer >= 2 (a universe)")
    if isinstance(n_bars, bool) or int(n_bars) != n_bars or n_bars < 2:
        raise PlantedUniverseError(f"n_bars={n_bars!r} must be an integer >= 2")
    edges = set(_edge_indices(int(n_assets), edge_assets))
    out = []
    for i in range(int(n_assets)):
        asset_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        try:
            out.append(generate_ohlcv(int(n_bars), phi=phi if i in edges else 0.0, sigma=sigma, seed=asset_seed,
                                      overnight_fraction=0.0))
        except ValueError as error:
            raise PlantedUniverseError(f"planted_universe: {error}") from None
    return out


def planted_universe(n_assets: int = 5, n_bars: int = 3000, edge_assets: Iterable[int | str] = (0, 1),
                     phi: float = -0.3, sigma: float = 0.02, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``{symbol: bars}`` of a universe whose ``edge_assets`` have AR(1) returns (coefficient ``phi``).

    Every asset is its own market (independent noise, seeded by ``(seed, asset index)``), on one timeline of
    ``n_bars`` business days from 2010-01-04 (UTC). ``open(t + 1) = close(t)``.

    :param n_assets: number of assets (symbols ``A00``, ``A01``, ...).
    :param n_bars: bars per asset.
    :param edge_assets: indices (or symbols) of the assets with the planted edge; the others are iid.
    :param phi: AR(1) coefficient of the edge assets' log returns, in (-1, 1) (0: no edge anywhere).
    :param sigma: standard deviation of every asset's return innovation per bar.
    :param seed: random seed.
    """
    index = pd.date_range(PLANTED_START, periods=int(n_bars), freq="B", tz="UTC", name="timestamp")
    arrays = _arrays(n_assets, n_bars, edge_assets, phi, sigma, seed)
    return {symbol: pd.DataFrame({k: a[k] for k in ("open", "high", "low", "close", "volume")}, index=index)
            for symbol, a in zip(planted_symbols(n_assets), arrays)}


def expected_returns(n_assets: int = 5, n_bars: int = 3000, edge_assets: Iterable[int | str] = (0, 1),
                     phi: float = -0.3, sigma: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """What the planted rule says at the close of each bar about each asset's next log return
    (``phi * r_t`` for an edge asset, 0 for the others); same arguments, index and symbols as
    :func:`planted_universe`."""
    index = pd.date_range(PLANTED_START, periods=int(n_bars), freq="B", tz="UTC", name="timestamp")
    arrays = _arrays(n_assets, n_bars, edge_assets, phi, sigma, seed)
    return pd.DataFrame({s: a["expected_return"] for s, a in zip(planted_symbols(n_assets), arrays)}, index=index)


def round_trip_cost(costs: Costs) -> float:
    """The cost, as a fraction of notional, of leaving one asset and entering another: two fills of
    commission plus slippage. Only slippage models with a constant fraction (fixed bps, spread) have one
    number; others are a one-line ValueError.

    :param costs: the env's costs.
    """
    slippage = costs.slippage.constant_fraction()
    if slippage is None:
        raise ValueError(f"slippage model '{costs.slippage.describe()}' has no constant fraction; the planted "
                         f"oracle's threshold needs fixed-bps or spread slippage")
    return 2.0 * (float(costs.commission) + float(slippage))


def oracle_weights(expected: np.ndarray, threshold: float) -> np.ndarray:
    """The oracle's target weights (T, N + 1), assets then cash, from the expected next returns (T, N).

    The rule, at each decision time: put 100% in the asset with the highest expected next return if that
    return exceeds ``threshold`` (the round-trip cost: what leaving one asset for another costs), else hold
    100% cash. A tie goes to the lower asset index. It never holds more than one asset.

    :param expected: float (T, N) expected next log returns.
    :param threshold: the expected return an asset must beat to be held.
    """
    expected = np.asarray(expected, dtype=np.float64)
    if expected.ndim != 2:
        raise ValueError(f"expected returns must be (T, N); got shape {expected.shape}")
    t_len, n = expected.shape
    out = np.zeros((t_len, n + 1))
    best = np.argmax(expected, axis=1)
    take = expected[np.arange(t_len), best] > threshold
    out[np.arange(t_len)[take], best[take]] = 1.0
    out[~take, n] = 1.0
    return out


class OraclePolicy:
    """A portfolio policy that knows the planted rule (see :func:`oracle_weights`).

    It reads the time of each decision from the panel row it is told about, so it acts through
    :meth:`act_at` (row -> weights); ``act(obs)`` is not enough for it (it needs the row, not the
    observation). ``action_transform = "weights"``, ``rebalance_every = None``.

    :param panel: the universe's panel (its timeline).
    :param expected: float (T_bars, N) expected next log returns by bar, indexed like the bars
        (a DataFrame from :func:`expected_returns`, columns in the panel's symbol order).
    :param costs: the env's costs (the threshold is their round trip).
    """

    action_transform = "weights"
    rebalance_every = None
    name = "oracle"

    def __init__(self, panel: Panel, expected: pd.DataFrame, costs: Costs) -> None:
        missing = [s for s in panel.symbols if s not in expected.columns]
        if missing:
            raise ValueError(f"expected returns lack the panel's symbols {missing}")
        stamps = pd.DatetimeIndex(pd.to_datetime(panel.timestamps, utc=True))
        frame = expected[panel.symbols].reindex(stamps)
        self.weights = oracle_weights(frame.fillna(-np.inf).to_numpy(), round_trip_cost(costs))

    def reset(self) -> None:
        """Stateless."""

    def act_at(self, row: int) -> np.ndarray:
        """The target weights decided at the close of panel row ``row``.

        :param row: the panel row of the decision.
        """
        return self.weights[int(row)]


def symbols_with_edge(n_assets: int, edge_assets: Sequence[int | str]) -> list[str]:
    """The symbols of ``edge_assets`` in a universe of ``n_assets``.

    :param n_assets: number of assets.
    :param edge_assets: indices or symbols.
    """
    symbols = planted_symbols(n_assets)
    return [symbols[i] for i in _edge_indices(int(n_assets), edge_assets)]


__all__ = ["OraclePolicy", "PlantedUniverseError", "expected_returns", "oracle_weights", "planted_symbols",
           "planted_universe", "round_trip_cost", "symbols_with_edge"]
