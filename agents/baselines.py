"""Baseline policies for the backtester: cash, buy-and-hold, random and SMA crossover.

Each answers the backtester's protocol (``reset()``, ``act(observation) -> action``) and returns
actions of the env's discrete mode: with ``allow_short=False`` 0 = flat, 1 = long; with
``allow_short=True`` 0 = short, 1 = flat, 2 = long.
"""

from __future__ import annotations

import numpy as np

from envs.layout import ObservationLayout
from features.market_data import MarketData


class _DiscretePolicy:
    name = "policy"

    def __init__(self, allow_short: bool = False) -> None:
        self.allow_short = allow_short
        self.flat = 1 if allow_short else 0
        self.long = 2 if allow_short else 1

    def reset(self) -> None:
        """Clear any state at the start of a backtest."""


class CashPolicy(_DiscretePolicy):
    """Never trades: stays flat in cash."""

    name = "cash"

    def act(self, observation: np.ndarray) -> int:
        return self.flat

    def act_windows(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """Every bar's action at once (the backtester's fast path: actions that ignore the account)."""
        return np.full(len(windows), self.flat)


class BuyAndHoldPolicy(_DiscretePolicy):
    """Goes long on the first bar and holds to the end."""

    name = "buy_and_hold"

    def act(self, observation: np.ndarray) -> int:
        return self.long

    def act_windows(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """Every bar's action at once (the backtester's fast path: actions that ignore the account)."""
        return np.full(len(windows), self.long)


class RandomPolicy(_DiscretePolicy):
    """Picks flat or long uniformly at random each bar (seeded; ``reset`` restarts the sequence).

    :param seed: random seed.
    :param allow_short: also draw short.
    """

    name = "random"

    def __init__(self, seed: int = 0, allow_short: bool = False) -> None:
        super().__init__(allow_short)
        self.seed = seed
        self.n_actions = 3 if allow_short else 2
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def act(self, observation: np.ndarray) -> int:
        return int(self._rng.integers(self.n_actions))


class SMACrossoverPolicy(_DiscretePolicy):
    """Long while the fast SMA is above the slow SMA, flat (or short) otherwise.

    It reads the dataset's ``sma_ratio_{n}`` features (``close / SMA_n - 1``) from the last row of the
    observation window and undoes the scaling: fast SMA > slow SMA exactly when
    ``sma_ratio_fast < sma_ratio_slow``.

    :param data: the dataset whose features the observations carry.
    :param fast: fast SMA window (must be one of the dataset's SMA windows).
    :param slow: slow SMA window.
    :param allow_short: go short instead of flat when fast < slow.
    """

    name = "sma_crossover"

    def __init__(self, data: MarketData, fast: int = 10, slow: int = 50, allow_short: bool = False,
                 window: int | None = None) -> None:
        super().__init__(allow_short)
        if fast >= slow:
            raise ValueError(f"fast={fast} must be shorter than slow={slow}")
        names = data.feature_names
        columns = []
        for n in (fast, slow):
            name = f"sma_ratio_{n}"
            if name not in names:
                available = [c for c in names if c.startswith("sma_ratio_")]
                raise ValueError(f"SMA window {n} is not among the dataset's features; available: {available}")
            columns.append(names.index(name))
        self.columns = columns
        self.center = data.scaler.center[columns]
        self.scale = data.scaler.scale[columns]
        self.layout = ObservationLayout(window or data.window, data.n_features)
        self.short = 0 if allow_short else self.flat

    def act(self, observation: np.ndarray) -> int:
        self.layout.check(observation.shape[-1])
        last = self.layout.features(observation)[-1, self.columns]
        fast_ratio, slow_ratio = last * self.scale + self.center
        return self.long if fast_ratio < slow_ratio else self.short

    def act_windows(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """:meth:`act` for every window ``(T, window, n_features)`` at once (the same arithmetic)."""
        last = windows[:, -1, self.columns] * self.scale + self.center
        return np.where(last[:, 0] < last[:, 1], self.long, self.short)


BASELINES = ("cash", "buy_and_hold", "random", "sma_crossover")


def make_baseline(name: str, data: MarketData, *, seed: int = 0, allow_short: bool = False,
                  window: int | None = None) -> _DiscretePolicy:
    """A baseline policy by name (one of :data:`BASELINES`).

    :param name: policy name.
    :param data: dataset the backtest runs on (SMA crossover reads its feature scaling).
    :param seed: seed of the random policy.
    :param allow_short: use the {short, flat, long} action space.
    :param window: observation window if it differs from the dataset's.
    """
    if name == "cash":
        return CashPolicy(allow_short)
    if name == "buy_and_hold":
        return BuyAndHoldPolicy(allow_short)
    if name == "random":
        return RandomPolicy(seed, allow_short)
    if name == "sma_crossover":
        return SMACrossoverPolicy(data, allow_short=allow_short, window=window)
    raise ValueError(f"policy {name!r} is not a baseline; expected one of {list(BASELINES)} or a path to a saved agent/model")
