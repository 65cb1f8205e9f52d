"""The supervised threshold policy: go long when the classifier's P(up) is high, exit when it fades or
the position has been held for the label's horizon.

It answers the backtester's policy protocol (``reset()``, ``act(observation) -> action``) on the env's
flat observation (see :mod:`envs.layout`) and the discrete {0: flat, 1: long} action space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from envs.layout import ObservationLayout

FLAT, LONG = 0, 1
EXIT_GAP = 0.1
PATH_BATCH = 4096  # windows per forward pass in act_path


class ProbabilityModel(Protocol):
    """What the policy needs from a model: its input shape, label and threshold, and ``predict_proba``."""

    window: int
    feature_names: list[str]
    label: dict
    threshold: float

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray: ...


class SupervisedThresholdPolicy:
    """Long when P(label = 1) >= ``entry_threshold``; flat again when it drops below ``exit_threshold``
    or after ``max_holding`` bars in the position.

    Whether it is in a position is read from the observation's position state (``state[0] > 0``);
    the bars held are counted here, from the first observation that shows the position.

    :param model: a :class:`supervised.LoadedModel` (or anything with its ``predict_proba``, ``window``,
        ``feature_names``, ``label`` and ``threshold``), or the path of a saved bundle.
    :param entry_threshold: probability to enter; None: the bundle's threshold (chosen on validation).
    :param exit_threshold: probability below which to exit; None: ``entry_threshold - 0.1`` (at least 0).
    :param max_holding: bars to hold at most; None: the label horizon of the bundle.
    """

    def __init__(
        self,
        model: ProbabilityModel | str | Path,
        entry_threshold: float | None = None,
        exit_threshold: float | None = None,
        max_holding: int | None = None,
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
        self.layout = ObservationLayout(int(model.window), len(model.feature_names))
        self.bars_held = 0
        self.last_probability = float("nan")

    def reset(self) -> None:
        """Forget the position count (call at the start of each episode)."""
        self.bars_held = 0
        self.last_probability = float("nan")

    def act_path(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """Every action of a split at once, for the backtester's fast path (:func:`envs.backtest.backtest_many`):
        the probabilities of all windows in one batched ``predict_proba``, then the entry/exit rule with the
        position taken to be this policy's own last action (long after 1, flat after 0). The backtester
        checks that assumption against the account (an order that did not fill breaks it) and runs the
        event path where it fails, so the result is always the event path's.

        :param windows: ``(T, window, n_features)``, the windows of consecutive bars.
        :param asset_ids: ``(T,)`` integer asset ids.
        :return: ``(T,)`` actions, 0 (flat) or 1 (long).
        """
        probabilities = np.concatenate([  # bounded batches: the windows may be a strided view of the split
            np.asarray(self.model.predict_proba(np.array(windows[i : i + PATH_BATCH], dtype=np.float32),
                                                asset_ids[i : i + PATH_BATCH]), dtype=np.float64)
            for i in range(0, len(windows), PATH_BATCH)
        ] or [np.zeros(0)])
        actions = np.zeros(len(probabilities), dtype=np.int64)
        action, bars_held = FLAT, 0
        for t, probability in enumerate(probabilities.tolist()):
            action, bars_held = self.decide(action == LONG, bars_held, probability)
            actions[t] = action
        self.last_probability = float(probabilities[-1]) if len(probabilities) else float("nan")
        return actions

    def batch_actor(self, n: int) -> "_ThresholdBatch":
        """The batch protocol of :func:`envs.backtest.backtest_many`: ``n`` accounts, one forward pass."""
        return _ThresholdBatch(self, n)

    def act(self, observation: np.ndarray) -> int:
        """The target position for the next bar: 1 (long) or 0 (flat).

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
        return action

    def decide(self, in_position: bool, bars_held: int, probability: float) -> tuple[int, int]:
        """The rule, one bar: the action and the new count of bars held.

        :param in_position: whether the account holds the asset (as the observation shows).
        :param bars_held: bars counted in the position before this one.
        :param probability: P(label = 1) of this bar's window.
        """
        if not in_position:
            return (LONG if probability >= self.entry_threshold else FLAT), 0
        bars_held += 1
        if probability < self.exit_threshold or bars_held >= self.max_holding:
            return FLAT, 0
        return LONG, bars_held


class _ThresholdBatch:
    """:class:`SupervisedThresholdPolicy` for ``n`` accounts at once: the same rule, state per account,
    one ``predict_proba`` call per bar for all of them."""

    def __init__(self, policy: SupervisedThresholdPolicy, n: int) -> None:
        self.policy = policy
        self.bars_held = np.zeros(n, dtype=np.int64)

    def reset(self) -> None:
        self.bars_held[:] = 0

    def act(self, observations: np.ndarray) -> list[int]:
        policy = self.policy
        observations = np.asarray(observations, dtype=np.float32)
        policy.layout.check(observations.shape[1], "observation")
        layout = policy.layout
        windows = observations[:, : layout.n_window_values].reshape(len(observations), layout.window, layout.n_features)
        asset_ids = np.rint(observations[:, layout.asset_index]).astype(np.int64)
        probabilities = np.asarray(policy.model.predict_proba(windows, asset_ids), dtype=np.float64)
        in_position = observations[:, layout.state_slice.start] > 0.0
        actions = []
        for i, probability in enumerate(probabilities.tolist()):
            action, self.bars_held[i] = policy.decide(bool(in_position[i]), int(self.bars_held[i]), probability)
            actions.append(action)
        return actions
