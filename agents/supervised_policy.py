"""The supervised threshold policy: go long when the classifier's P(up) is high, exit when it fades or
the position has been held for the label's horizon.

It answers the backtester's policy protocol (``reset()``, ``act(observation) -> action``) on the env's
flat observation (see :mod:`envs.layout`). With ``sizing="all_in"`` (the default) it acts in the discrete
{0: flat, 1: long} action space; with ``sizing="kelly"`` or ``"vol_target"`` its actions are target
exposures in [0, 1] and it must run with ``action_mode="continuous"`` (its ``env_settings`` say so).
The thresholds, holding limits and sizing that make money on validation are chosen by
:func:`agents.threshold_choice.choose_thresholds_for_money`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from envs.layout import ObservationLayout

FLAT, LONG = 0, 1
EXIT_GAP = 0.1
PATH_BATCH = 4096  # windows per forward pass in act_path
SIZINGS: tuple[str, ...] = ("all_in", "kelly", "vol_target")
VOLATILITY_FEATURE = "logret_1"  # the 1-bar log return column vol_target sizing reads from the window


class ProbabilityModel(Protocol):
    """What the policy needs from a model: its input shape, label and threshold, and ``predict_proba``."""

    window: int
    feature_names: list[str]
    label: dict
    threshold: float

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray: ...


class SupervisedThresholdPolicy:
    """Long when P(label = 1) >= ``entry_threshold``; flat again when it drops below ``exit_threshold``
    or after ``max_holding`` bars in the position, but never before ``min_holding`` bars.

    Whether it is in a position is read from the observation's position state (``state[0] > 0``);
    the bars held are counted here, from the first observation that shows the position.

    Sizing (the exposure taken at entry, then held without rebalancing until the exit: each change of
    target would pay costs):

    - ``"all_in"``: action 1 (all equity), the discrete action space.
    - ``"kelly"``: fractional Kelly on the calibrated probability ``q = calibrator(p)``:
      ``kelly_fraction * (q * b - (1 - q)) / b`` with ``b = label profit / label stop`` (the payoff of the
      label's barriers), clipped to ``[0, max_fraction]``. A size of 0 stays flat.
    - ``"vol_target"``: ``min(max_fraction, target_volatility / sigma)`` where ``sigma`` is the standard
      deviation (ddof 1) of the 1-bar log returns (``logret_1``, unscaled with the model's scaler) over the
      last ``volatility_window`` bars of the window: bar t's size uses bars up to t only. A window whose
      returns hit the scaler's clip bound has an unknown (under-estimated) sigma and gives size 0.

    :param model: a :class:`supervised.LoadedModel` (or anything with its ``predict_proba``, ``window``,
        ``feature_names``, ``label`` and ``threshold``), or the path of a saved bundle.
    :param entry_threshold: probability to enter; None: the bundle's threshold (chosen on validation).
    :param exit_threshold: probability below which to exit; None: ``entry_threshold - 0.1`` (at least 0).
    :param max_holding: bars to hold at most; None: the label horizon of the bundle.
    :param min_holding: bars to hold before an exit is allowed (0: exit as soon as the rule says).
    :param sizing: ``"all_in"``, ``"kelly"`` or ``"vol_target"`` (see above).
    :param kelly_fraction: the share of the Kelly fraction taken (``"kelly"``).
    :param max_fraction: the largest exposure, a fraction of equity (``"kelly"``, ``"vol_target"``).
    :param calibrator: maps raw probabilities to calibrated ones, fitted on validation
        (:func:`agents.threshold_choice.fit_calibrator`); required by ``"kelly"``.
    :param target_volatility: per-bar standard deviation of log returns aimed at (``"vol_target"``).
    :param volatility_window: bars of the realised volatility (``"vol_target"``); None: the whole window.
    """

    def __init__(
        self,
        model: ProbabilityModel | str | Path,
        entry_threshold: float | None = None,
        exit_threshold: float | None = None,
        max_holding: int | None = None,
        *,
        min_holding: int = 0,
        sizing: str = "all_in",
        kelly_fraction: float = 0.5,
        max_fraction: float = 1.0,
        calibrator: Callable[[np.ndarray], np.ndarray] | None = None,
        target_volatility: float | None = None,
        volatility_window: int | None = None,
    ) -> None:
        if isinstance(model, (str, Path)):
            from supervised.bundle import load_model  # torch is imported only when a bundle is loaded here

            model = load_model(model)
        self.model = model
        # a bundle carries its preprocessing: the backtester rebuilds any data with it
        self.preprocessing = getattr(model, "preprocessing", None)
        self.entry_threshold = float(model.threshold if entry_threshold is None else entry_threshold)
        default_exit = min(max(self.entry_threshold - EXIT_GAP, 0.0), 1.0)
        self.exit_threshold = float(default_exit if exit_threshold is None else exit_threshold)
        self.max_holding = int(model.label["horizon"] if max_holding is None else max_holding)
        self.min_holding = int(min_holding)
        if not 0.0 <= self.entry_threshold <= 1.0 or not 0.0 <= self.exit_threshold <= 1.0:
            raise ValueError(
                f"thresholds must be probabilities: entry={self.entry_threshold}, exit={self.exit_threshold}"
            )
        if self.exit_threshold > self.entry_threshold:
            raise ValueError(
                f"exit_threshold={self.exit_threshold} must not exceed entry_threshold={self.entry_threshold}"
            )
        if self.max_holding < 1:
            raise ValueError(f"max_holding={self.max_holding} must be >= 1 bar")
        if not 0 <= self.min_holding <= self.max_holding:
            raise ValueError(f"min_holding={self.min_holding} must be in 0..max_holding={self.max_holding} bars")
        self.layout = ObservationLayout(int(model.window), len(model.feature_names))
        self.sizing = sizing
        self.kelly_fraction, self.max_fraction = float(kelly_fraction), float(max_fraction)
        self.calibrator = calibrator
        self.target_volatility = None if target_volatility is None else float(target_volatility)
        self.volatility_window = int(model.window if volatility_window is None else volatility_window)
        self._check_sizing()
        self.bars_held = 0
        self.entry_size = float("nan")
        self.last_probability = float("nan")

    @property
    def env_settings(self) -> dict[str, str]:
        """The env settings its actions need: the continuous action mode when it sizes positions."""
        return {} if self.sizing == "all_in" else {"action_mode": "continuous"}

    def _check_sizing(self) -> None:
        """One-line errors for sizing settings that cannot give a right number."""
        name = type(self.model).__name__
        if self.sizing not in SIZINGS:
            raise ValueError(f"sizing={self.sizing!r} is not known; expected one of {list(SIZINGS)}")
        if self.sizing == "all_in":
            return
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction={self.max_fraction} must be in (0, 1] (a fraction of equity)")
        if self.sizing == "kelly":
            if not callable(getattr(self.model, "predict_proba", None)):
                raise ValueError(f"sizing='kelly' needs probabilities: model {name} has no predict_proba")
            if self.calibrator is None:
                raise ValueError("sizing='kelly' needs a calibrator fitted on validation "
                                 "(agents.threshold_choice.fit_calibrator); got calibrator=None")
            if not 0.0 < self.kelly_fraction <= 1.0:
                raise ValueError(f"kelly_fraction={self.kelly_fraction} must be in (0, 1]")
            profit, stop = float(self.model.label["profit"]), float(self.model.label["stop"])
            if not (profit > 0 and stop > 0):
                raise ValueError(f"sizing='kelly' needs label profit and stop > 0; model {name} has "
                                 f"profit={profit}, stop={stop}")
            self.payoff = profit / stop
            return
        if self.target_volatility is None or not self.target_volatility > 0:
            raise ValueError(f"sizing='vol_target' needs target_volatility > 0 (per-bar std of log returns); "
                             f"got {self.target_volatility}")
        if not 2 <= self.volatility_window <= self.layout.window:
            raise ValueError(f"volatility_window={self.volatility_window} must be in 2..window={self.layout.window}")
        names = list(self.model.feature_names)
        if VOLATILITY_FEATURE not in names:
            raise ValueError(f"sizing='vol_target' reads feature {VOLATILITY_FEATURE!r}; model {name} has "
                             f"features {names[:6]}...")
        scaler = getattr(self.preprocessing, "scaler", None)
        if scaler is None:
            raise ValueError(f"sizing='vol_target' needs the model's scaler to unscale {VOLATILITY_FEATURE!r}; "
                             f"model {name} has no preprocessing")
        column = names.index(VOLATILITY_FEATURE)
        self._volatility_column = column
        self._return_center, self._return_scale = float(scaler.center[column]), float(scaler.scale[column])
        self._return_clip = None if scaler.clip is None else float(scaler.clip)

    def sizes(self, probabilities: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """The exposure an entry at each bar would take (see the class docstring), float64 ``(n,)``.

        :param probabilities: P(label = 1) of each window, ``(n,)``.
        :param windows: the scaled feature windows, ``(n, window, n_features)``.
        """
        if self.sizing == "all_in":
            return np.ones(len(probabilities))
        if self.sizing == "kelly":
            q = np.asarray(self.calibrator(np.asarray(probabilities, dtype=np.float64)), dtype=np.float64)
            b = self.payoff
            return np.clip(self.kelly_fraction * (q * b - (1.0 - q)) / b, 0.0, self.max_fraction)
        scaled = np.ascontiguousarray(windows[:, -self.volatility_window:, self._volatility_column], dtype=np.float64)
        returns = scaled * self._return_scale + self._return_center
        sigma = returns.std(axis=1, ddof=1)
        size = np.minimum(self.max_fraction, self.target_volatility / np.maximum(sigma, 1e-300))
        if self._return_clip is not None:
            size[(np.abs(scaled) >= self._return_clip).any(axis=1)] = 0.0
        return size

    def reset(self) -> None:
        """Forget the position count (call at the start of each episode)."""
        self.bars_held = 0
        self.entry_size = float("nan")
        self.last_probability = float("nan")

    def act_path(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """Every action of a split at once, for the backtester's fast path (:func:`envs.backtest.backtest_many`):
        the probabilities of all windows in one batched ``predict_proba``, then the entry/exit rule with the
        position taken to be this policy's own last action (long after a positive target, flat after 0). The
        backtester checks that assumption against the account (an order that did not fill breaks it) and runs
        the event path where it fails, so the result is always the event path's.

        :param windows: ``(T, window, n_features)``, the windows of consecutive bars.
        :param asset_ids: ``(T,)`` integer asset ids.
        :return: ``(T,)`` actions: 0 (flat) or 1 (long) with ``"all_in"`` sizing, else target exposures.
        """
        probabilities = np.concatenate([  # bounded batches: the windows may be a strided view of the split
            np.asarray(self.model.predict_proba(np.array(windows[i : i + PATH_BATCH], dtype=np.float32),
                                                asset_ids[i : i + PATH_BATCH]), dtype=np.float64)
            for i in range(0, len(windows), PATH_BATCH)
        ] or [np.zeros(0)])
        self.last_probability = float(probabilities[-1]) if len(probabilities) else float("nan")
        if self.sizing == "all_in":
            actions = np.zeros(len(probabilities), dtype=np.int64)
            action, bars_held = FLAT, 0
            for t, probability in enumerate(probabilities.tolist()):
                action, bars_held = self.decide(action == LONG, bars_held, probability)
                actions[t] = action
            return actions
        sizes = np.concatenate([self.sizes(probabilities[i : i + PATH_BATCH], windows[i : i + PATH_BATCH])
                                for i in range(0, len(windows), PATH_BATCH)] or [np.zeros(0)])
        targets = np.zeros(len(probabilities), dtype=np.float64)
        target, bars_held = 0.0, 0
        for t, probability in enumerate(probabilities.tolist()):
            in_position = target > 0.0
            action, bars_held = self.decide(in_position, bars_held, probability)
            target = (target if in_position else float(sizes[t])) if action == LONG else 0.0
            targets[t] = target
        return targets

    def batch_actor(self, n: int) -> "_ThresholdBatch":
        """The batch protocol of :func:`envs.backtest.backtest_many`: ``n`` accounts, one forward pass."""
        return _ThresholdBatch(self, n)

    def act(self, observation: np.ndarray) -> int | float:
        """The target position for the next bar: 1 (long) or 0 (flat); a target exposure when sizing.

        :param observation: the env's flat float32 observation (features window | state | asset id).
        """
        observation = np.asarray(observation, dtype=np.float32)
        if observation.ndim != 1:
            raise ValueError(f"observation must be one flat vector, got shape {observation.shape}")
        self.layout.check(observation.shape[0], "observation")
        windows = self.layout.features(observation)[None]
        asset_id = np.array([int(round(float(self.layout.asset_id(observation))))], dtype=np.int64)
        probability = float(self.model.predict_proba(windows, asset_id)[0])
        self.last_probability = probability
        in_position = float(self.layout.state(observation)[0]) > 0.0
        action, self.bars_held = self.decide(in_position, self.bars_held, probability)
        if self.sizing == "all_in":
            return action
        target, self.entry_size = self.target(action, in_position, self.entry_size,
                                              lambda: self.sizes(np.array([probability]), windows))
        return target

    def target(self, action: int, in_position: bool, entry_size: float,
               size_now: Callable[[], np.ndarray]) -> tuple[float, float]:
        """The target exposure of a sized policy for one bar, and the entry size to remember.

        :param action: the rule's action (:meth:`decide`).
        :param in_position: whether the account holds the asset.
        :param entry_size: the size taken at this position's entry (NaN: not seen; this bar's size is used).
        :param size_now: this bar's size (:meth:`sizes` of its window), computed only when needed.
        """
        if action == FLAT:
            return 0.0, float("nan")
        if in_position and entry_size == entry_size:
            return entry_size, entry_size
        size = float(size_now()[0])
        return size, size

    def decide(self, in_position: bool, bars_held: int, probability: float) -> tuple[int, int]:
        """The rule, one bar: the action and the new count of bars held.

        :param in_position: whether the account holds the asset (as the observation shows).
        :param bars_held: bars counted in the position before this one.
        :param probability: P(label = 1) of this bar's window.
        """
        if not in_position:
            return (LONG if probability >= self.entry_threshold else FLAT), 0
        bars_held += 1
        if bars_held >= self.min_holding and (probability < self.exit_threshold or bars_held >= self.max_holding):
            return FLAT, 0
        return LONG, bars_held


class _ThresholdBatch:
    """:class:`SupervisedThresholdPolicy` for ``n`` accounts at once: the same rule, state per account,
    one ``predict_proba`` call per bar for all of them."""

    def __init__(self, policy: SupervisedThresholdPolicy, n: int) -> None:
        self.policy = policy
        self.bars_held = np.zeros(n, dtype=np.int64)
        self.entry_size = np.full(n, np.nan)

    def reset(self) -> None:
        self.bars_held[:] = 0
        self.entry_size[:] = np.nan

    def act(self, observations: np.ndarray) -> list[int] | list[float]:
        """The actions of the ``n`` accounts on their observations ``(n, d)``: :meth:`forward`, then :meth:`act_on`.

        :param observations: one flat float32 observation per account, in account order.
        """
        return self.act_on(observations, self.forward(observations))

    def forward(self, observations: np.ndarray) -> np.ndarray:
        """The stateless part: P(label = 1) of each observation's window, float64 ``(m,)``, one ``predict_proba``.
        Any number of observations: a caller holding several one-account batches of the same policy (the live loop,
        one per symbol) computes theirs in one pass and hands each its row (:meth:`act_on`).

        :param observations: flat float32 observations ``(m, d)``.
        """
        policy = self.policy
        observations = np.asarray(observations, dtype=np.float32)
        policy.layout.check(observations.shape[1], "observation")
        windows, asset_ids = self._inputs(observations)
        return np.asarray(policy.model.predict_proba(windows, asset_ids), dtype=np.float64)

    def act_on(self, observations: np.ndarray, probabilities: np.ndarray) -> list[int] | list[float]:
        """The entry/exit rule of the ``n`` accounts given their :meth:`forward` probabilities (state updated).

        :param observations: the accounts' observations ``(n, d)``, in account order.
        :param probabilities: :meth:`forward` of them, ``(n,)``.
        """
        policy = self.policy
        observations = np.asarray(observations, dtype=np.float32)
        layout = policy.layout
        windows, _ = self._inputs(observations)
        in_position = observations[:, layout.state_slice.start] > 0.0
        actions = []
        for i, probability in enumerate(np.asarray(probabilities, dtype=np.float64).tolist()):
            action, self.bars_held[i] = policy.decide(bool(in_position[i]), int(self.bars_held[i]), probability)
            if policy.sizing != "all_in":
                action, self.entry_size[i] = policy.target(
                    action, bool(in_position[i]), float(self.entry_size[i]),
                    lambda i=i, p=probability: policy.sizes(np.array([p]), windows[i : i + 1]))
            actions.append(action)
        return actions

    def _inputs(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's windows ``(m, window, features)`` and int64 asset ids of float32 observations ``(m, d)``."""
        layout = self.policy.layout
        windows = observations[:, : layout.n_window_values].reshape(len(observations), layout.window, layout.n_features)
        return windows, np.rint(observations[:, layout.asset_index]).astype(np.int64)
