"""A saved policy as the live loop uses it: its preprocessing, its actions as target exposures, and the
observation the env would have built.

The observation is the env's (:mod:`envs.layout`): the policy's own scaled feature window of the latest
bars, then the sleeve's position state - exposure, unrealised return, bars held / 100, cash fraction -
computed with the same expressions as ``sim.Simulator.position_state``, then the asset id.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.layout import BARS_HELD_SCALE, ObservationLayout
from features.preprocessing import Preprocessing

RL_AGENT_FILE = "agent.json"
BUNDLE_FILE = "bundle.json"


@dataclass
class LivePolicy:
    """A policy with its preprocessing and action space.

    :param policy: the policy object (``reset()``, ``act(observation)``; ``batch_actor(n)`` when it has one).
    :param preprocessing: its own preprocessing (features, scaler, window, asset map).
    :param action_mode: ``"discrete"`` or ``"continuous"``.
    :param allow_short: whether its discrete actions include short.
    :param name: label for the journal and the monitor page.
    """

    policy: Any
    preprocessing: Preprocessing
    action_mode: str = "discrete"
    allow_short: bool = False
    name: str = "policy"
    _features: dict[str, "_FeatureHistory"] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def env_settings(self) -> dict[str, Any]:
        """The env settings the backtest of this policy uses (what ``experiments.backtest`` passes)."""
        return dict(getattr(self.policy, "env_settings", {}))

    @property
    def layout(self) -> ObservationLayout:
        return ObservationLayout(self.preprocessing.window, len(self.preprocessing.feature_names))

    def actor(self) -> Any:
        """A fresh per-symbol actor (``reset()``, ``act(observations (1, d)) -> [action]``): the same object
        the backtester drives, so a symbol's decisions are computed exactly as in its backtest."""
        make = getattr(self.policy, "batch_actor", None)
        if make is not None:
            return make(1)
        return _SingleActor(copy.deepcopy(self.policy))

    def target(self, action: Any) -> float:
        """The target exposure of ``action``, as ``TradingEnv`` maps it (discrete levels or a continuous value)."""
        if self.action_mode == "continuous":
            value = np.asarray(action, dtype=np.float64).reshape(-1)
            if value.size != 1 or not np.isfinite(value[0]) or not -1.0 <= value[0] <= 1.0:
                raise ValueError(f"policy {self.name} returned action {action!r}; expected one exposure in [-1, 1]")
            return float(value[0])
        levels = [-1.0, 0.0, 1.0] if self.allow_short else [0.0, 1.0]
        value = np.asarray(action)
        if value.size != 1 or value.dtype.kind not in "iuf" or not float(value.reshape(-1)[0]).is_integer():
            raise ValueError(f"policy {self.name} returned action {action!r}; expected an integer in 0..{len(levels) - 1}")
        index = int(value.reshape(-1)[0])
        if not 0 <= index < len(levels):
            raise ValueError(f"policy {self.name} returned action {index}; expected 0..{len(levels) - 1}")
        return levels[index]

    def observation(self, bars: pd.DataFrame, symbol: str, state: np.ndarray) -> np.ndarray:
        """The env's flat float32 observation for the last bar of ``bars``.

        :param bars: at least ``preprocessing.min_bars`` complete bars of ``symbol``, oldest first.
        :param symbol: the symbol.
        :param state: the position state (4 floats, see :func:`position_state`).
        """
        window = self._known_window(bars, symbol)
        if window is None:
            window, _ = self.preprocessing.latest_window(bars, symbol)
        asset_id = self.preprocessing.asset_id(symbol)
        layout = self.layout
        nw = layout.n_window_values
        out = np.empty(layout.size, dtype=np.float32)
        out[:nw] = window.reshape(nw)
        out[nw: nw + 4] = state
        out[nw + 4] = np.float32(asset_id)
        return out


    def remember_history(self, bars: pd.DataFrame, symbol: str) -> None:
        """Compute the scaled features of a long stretch of ``symbol``'s bars once (a replay's whole history):
        :meth:`observation` then reads the window of any bars that are a stretch of it instead of building the
        features again. The features are causal (row ``t`` uses bars up to ``t`` only), so a row's features
        computed over the longer stretch are those of the bars up to it - the dataset's own, as the backtest
        sees them - and at least as settled as those of the latest bars alone (:func:`settled_history_bars`).

        :param bars: the bars, oldest first (validated here).
        :param symbol: the symbol.
        """
        scaled = self.preprocessing.transform_bars(bars, symbol)
        values = bars.to_numpy(np.float64)
        pre = self.preprocessing
        self._features[symbol] = _FeatureHistory(list(bars.columns), bars.index.asi8.copy(), values, scaled,
                                                 pre.min_bars, pre.window, bool(np.isnan(values).any()), bars.columns)

    def _known_window(self, bars: pd.DataFrame, symbol: str) -> np.ndarray | None:
        """The feature window of the last bar of ``bars`` from :meth:`remember_history`, or None when ``bars`` is
        not, value for value, a stretch of the remembered bars that starts no earlier than they do."""
        known = self._features.get(symbol)
        n = len(bars)
        if known is None or n < known.min_bars or not isinstance(bars.index, pd.DatetimeIndex):
            return None
        # (an Index is immutable: one that is a view of the remembered bars' columns has their labels)
        if not bars.columns.is_(known.labels) and list(bars.columns) != known.columns:
            return None
        times = bars.index.asi8
        last = int(np.searchsorted(known.times, times[-1]))
        first = last - n + 1
        if first < 0 or last >= len(known.times) or known.times[last] != times[-1]:
            return None
        values = bars.to_numpy(np.float64)
        if not np.array_equal(known.times[first: last + 1], times):
            return None
        # (NaN vwap: "unknown", compared as equal; without a NaN remembered a NaN in ``values`` is a difference)
        if not _same_values(known.values[first: last + 1], values, known.has_nan):
            return None
        return np.ascontiguousarray(known.scaled[last - known.window + 1: last + 1])


def _same_values(remembered: np.ndarray, values: np.ndarray, nan_equal: bool) -> bool:
    """``np.array_equal(remembered, values, equal_nan=nan_equal)``, in a few passes over the arrays (the NaN-aware
    ``array_equal`` masks and indexes both arrays: ten times slower on a live loop's ~800 x 6 bars).

    :param remembered: float64 values.
    :param values: float64 values.
    :param nan_equal: NaN in both at the same place counts as equal.
    """
    if remembered.shape != values.shape:
        return False
    same = remembered == values
    if same.all():
        return True
    return nan_equal and bool((same | (np.isnan(remembered) & np.isnan(values))).all())


@dataclass
class _FeatureHistory:
    """A remembered stretch of one symbol's bars and its scaled features (see :meth:`LivePolicy.remember_history`)."""

    columns: list[str]
    times: np.ndarray  # int64 ns UTC
    values: np.ndarray  # float64 (n, columns)
    scaled: np.ndarray  # float32 (n, features)
    min_bars: int  # the preprocessing's warm-up + window
    window: int  # the preprocessing's window
    has_nan: bool  # some remembered value is NaN (compared as equal to a NaN)
    labels: pd.Index  # the remembered bars' columns Index (``columns`` as the frame has them)


def act_together(actors: list[Any], observations: np.ndarray) -> list[Any]:
    """Each actor's action on its own observation, ``actors[i]`` on ``observations[i]``, with one forward pass for
    all of them when they are one-account batches of the same policy that split ``act`` into a stateless
    ``forward(observations)`` and a stateful ``act_on(observations, outputs)`` (the supervised threshold policy, a
    saved agent); else one ``act`` each. Each actor's state moves exactly as by its own ``act``.

    :param actors: per-symbol actors (:meth:`LivePolicy.actor`).
    :param observations: ``(len(actors), d)`` flat float32 observations, one per actor, in order.
    """
    first = actors[0] if actors else None
    owner = getattr(first, "policy", None)
    if (first is None or not hasattr(first, "forward") or not hasattr(first, "act_on")
            or any(type(actor) is not type(first) or actor.policy is not owner for actor in actors)):
        return [actor.act(observations[i: i + 1])[0] for i, actor in enumerate(actors)]
    outputs = first.forward(observations)
    return [actor.act_on(observations[i: i + 1], outputs[i: i + 1])[0] for i, actor in enumerate(actors)]


class _SingleActor:
    """The batch protocol over one policy without ``batch_actor``."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observations: np.ndarray) -> list[Any]:
        return [self.policy.act(observations[0])]


def position_state(cash: float, units: float, close: float, cost_basis: float, bars_held: int | None) -> np.ndarray:
    """``[exposure, unrealised return, bars held / 100, cash fraction]`` of a sleeve marked at ``close``.

    The expressions are ``Simulator.position_state``'s (single-account path), so a sleeve with the same
    cash, units and cost basis gives bit-identical values.

    :param cash: the sleeve's cash.
    :param units: shares held (signed).
    :param close: the last close.
    :param cost_basis: signed cost of the open shares (0 when flat).
    :param bars_held: bars since the position was opened, None when flat.
    """
    value = units * close
    equity = cash + units * close
    out = np.empty(4)
    out[0] = value / equity if equity > 0 else 0.0
    out[1] = (value - cost_basis) / abs(cost_basis) if cost_basis != 0 else 0.0
    out[2] = bars_held if bars_held is not None else 0
    out[3] = cash / equity if equity > 0 else 1.0
    out[2] /= BARS_HELD_SCALE
    return out


def load_live_policy(spec: str | Path) -> LivePolicy:
    """Load a saved RL agent (``agent.json``) or supervised bundle (``bundle.json``) for live trading.

    A run folder is accepted for its ``best/`` or ``model/``. Baselines carry no preprocessing of their own
    and cannot trade live.

    :param spec: the path.
    """
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--policy {spec} does not exist — pass a saved agent runs/<rl>/best, a supervised "
                                f"bundle runs/<sup>/model, or the run folder holding either")
    if path.is_file():
        path = path.parent
    for candidate in (path, path / "best", path / "model"):
        if (candidate / RL_AGENT_FILE).exists():
            from agents.saved_agent import load_agent

            agent = load_agent(candidate)
            settings = agent.env_settings
            return LivePolicy(agent, agent.preprocessing, settings.get("action_mode", "discrete"),
                              bool(settings.get("allow_short", False)), agent.name)
        if (candidate / BUNDLE_FILE).exists():
            from agents.supervised_policy import SupervisedThresholdPolicy
            from supervised.bundle import load_model

            policy = SupervisedThresholdPolicy(load_model(candidate))
            run = candidate.parent.name if candidate.name == "model" else candidate.name
            return LivePolicy(policy, policy.preprocessing, "discrete", False, f"supervised:{run}")
    raise ValueError(f"--policy {path} holds no saved agent ({RL_AGENT_FILE}) and no supervised bundle ({BUNDLE_FILE}) "
                     f"— pass runs/<rl>/best or runs/<sup>/model (baselines have no preprocessing to trade live with)")


def settled_history_bars(preprocessing: Preprocessing, tolerance: float = 1e-12) -> int:
    """Bars to fetch so that features computed from the latest bars alone equal the features computed from
    the whole history to about ``tolerance``.

    The recursive indicators (EMAs, Wilder averages) remember their start: their effect decays like
    ``(1 - alpha) ** k`` after ``k`` bars. This is the policy's ``min_bars`` (warm-up + window) plus the
    bars the slowest of them needs to forget its start.

    :param preprocessing: the policy's preprocessing.
    :param tolerance: relative size of the forgotten start.
    """
    config = preprocessing.features
    spans = [*config.ema_windows, config.macd_fast, config.macd_slow, config.macd_signal]
    wilder = [config.rsi_window, config.atr_window, config.adx_window]
    alphas = [2.0 / (n + 1) for n in spans if n > 0] + [1.0 / n for n in wilder if n > 0]
    if not alphas:
        return preprocessing.min_bars
    slowest = min(alphas)
    settle = int(np.ceil(np.log(tolerance) / np.log1p(-slowest))) if slowest < 1 else 0
    return preprocessing.min_bars + settle
