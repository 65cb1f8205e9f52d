"""Ensembles: several supervised models averaged into one probability, and FinRL's per-window agent choice.

:class:`SupervisedEnsemble` is a probability model (``predict_proba``, ``window``, ``feature_names``,
``label``, ``threshold``, ``preprocessing``): the threshold policy
(:class:`agents.supervised_policy.SupervisedThresholdPolicy`) and the money chooser
(:func:`agents.threshold_choice.choose_thresholds_for_money`) run on it as on one model. Its weights are
fitted on the VALIDATION split only:

- ``"equal"``: the plain mean of the members' probabilities.
- ``"inverse_loss"``: member i weighs ``(1 / L_i) / sum_j (1 / L_j)``, ``L_i`` its validation log loss.
- ``"stacking"``: a logistic regression (scikit-learn, seeded) on the members' validation probabilities;
  the ensemble's probability is ``expit(coef . p + intercept)``.

Members must have been trained on the same dataset: the same feature names, window, label and preprocessing
(digest); a difference is a one-line :class:`EnsembleMismatch` naming the two members and the field.

:func:`select_per_window` and :class:`AgentSelector` are FinRL's ensemble strategy: over a walk-forward
sequence of windows, each window is traded by the policy with the best validation Sharpe on the window
before it (the choice for window k reads only windows < k).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from features.market_data import MarketData

from .supervised_policy import ProbabilityModel

WEIGHTINGS: tuple[str, ...] = ("equal", "inverse_loss", "stacking")
MEMBER_FIELDS: tuple[str, ...] = ("feature_names", "window", "label", "preprocessing")


class EnsembleMismatch(ValueError):
    """Ensemble members (or selector policies) that cannot be combined; the message names them and the field."""


def member_name(model: Any, index: int) -> str:
    """How a member is named in messages and records: its bundle path when it has one, else ``member <i>``.

    :param model: the member.
    :param index: its position in the ensemble.
    """
    path = getattr(model, "path", None)
    return str(path) if path else f"member {index}"


def _field(model: Any, name: str) -> Any:
    if name == "preprocessing":
        preprocessing = getattr(model, "preprocessing", None)
        return None if preprocessing is None else preprocessing.digest()
    value = getattr(model, name)
    return list(value) if name == "feature_names" else (int(value) if name == "window" else dict(value))


def check_members(models: Sequence[ProbabilityModel]) -> None:
    """Raise :class:`EnsembleMismatch` when the members were not trained on the same dataset.

    :param models: the members.
    """
    if len(models) < 1:
        raise EnsembleMismatch("an ensemble needs at least one member; got none")
    for name in MEMBER_FIELDS:
        first = _field(models[0], name)
        for i, model in enumerate(models[1:], start=1):
            value = _field(model, name)
            if value != first:
                shown = (first, value) if name != "feature_names" else (
                    sorted(set(first) - set(value))[:3] or first[:3], sorted(set(value) - set(first))[:3] or value[:3])
                raise EnsembleMismatch(f"ensemble members {member_name(models[0], 0)!r} and {member_name(model, i)!r} "
                                       f"were trained on different datasets: {name!r} differs ({shown[0]} vs {shown[1]})")


class SupervisedEnsemble:
    """The weighted mean (or stacked logistic combination) of several probability models.

    :param models: the members (e.g. :class:`supervised.LoadedModel` of several seeds or architectures).
    :param weights: ``"equal"``, ``"inverse_loss"`` or ``"stacking"`` (fitted on ``data``'s validation split),
        or explicit non-negative weights, one per member (normalised to sum 1).
    :param data: the fold's data; its validation split fits ``"inverse_loss"``/``"stacking"`` and the threshold.
    :param threshold: the default entry threshold of the threshold policy; None: chosen on validation by F1
        (:func:`supervised.evaluation.choose_threshold`, as the benchmark does for one model), which needs ``data``.
    :param seed: the seed of the stacking regression.
    :param stacking: a recorded stacking ``{"coef": [...], "intercept": x}`` (:meth:`from_dict`); not fitted again.
    """

    def __init__(self, models: Sequence[ProbabilityModel], weights: str | Sequence[float] = "equal", *,
                 data: MarketData | None = None, threshold: float | None = None, seed: int = 0,
                 stacking: Mapping[str, Any] | None = None) -> None:
        check_members(models)
        self.members = list(models)
        first = self.members[0]
        self.window, self.feature_names = int(first.window), list(first.feature_names)
        self.label, self.preprocessing = dict(first.label), getattr(first, "preprocessing", None)
        self.seed = int(seed)
        self.validation_log_loss: list[float] | None = None
        self.stacking: dict[str, Any] | None = None
        self.weighting = weights if isinstance(weights, str) else "explicit"
        validation = None
        if isinstance(weights, str):
            if weights not in WEIGHTINGS:
                raise EnsembleMismatch(f"weights={weights!r} is not known; expected one of {list(WEIGHTINGS)} or numbers")
            if weights == "stacking" and stacking is not None:
                self.stacking = {"coef": [float(c) for c in stacking["coef"]], "intercept": float(stacking["intercept"])}
                if len(self.stacking["coef"]) != len(self.members):
                    raise EnsembleMismatch(f"stacking has {len(self.stacking['coef'])} coefficients for "
                                           f"{len(self.members)} members")
            elif weights != "equal":
                if data is None:
                    raise EnsembleMismatch(f"weights={weights!r} are fitted on validation: pass data=")
                validation = self._validation(data)
            self.weights = self._fit(weights, validation)
        else:
            self.weights = _explicit_weights(weights, len(self.members))
        if threshold is None:
            if data is None:
                raise EnsembleMismatch("threshold=None is chosen on validation by F1: pass data= or a threshold")
            from supervised.evaluation import choose_threshold, threshold_sweep

            probabilities, labels = validation if validation is not None else self._validation(data)
            threshold = choose_threshold(threshold_sweep(labels, self._combine(probabilities.T)))["threshold"]
        if not 0.0 <= float(threshold) <= 1.0:
            raise EnsembleMismatch(f"threshold={threshold} must be a probability in [0, 1]")
        self.threshold = float(threshold)

    def _validation(self, data: MarketData) -> tuple[np.ndarray, np.ndarray]:
        """``(n, members)`` validation probabilities and the ``(n,)`` labels."""
        from .threshold_choice import validation_probabilities

        columns, labels = [], None
        for member in self.members:
            probabilities, labels = validation_probabilities(member, data)
            columns.append(probabilities)
        return np.column_stack(columns), labels

    def _fit(self, weighting: str, validation: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        n = len(self.members)
        if weighting == "equal" or (weighting == "stacking" and validation is None):
            return np.full(n, 1.0 / n)
        probabilities, labels = validation
        if len(np.unique(labels)) < 2:
            raise EnsembleMismatch(f"weights={weighting!r} need both labels in the validation split; it has only "
                                   f"{int(labels[0]) if len(labels) else 'no'} labels")
        if weighting == "inverse_loss":
            from sklearn.metrics import log_loss

            losses = np.array([log_loss(labels, probabilities[:, i], labels=[0, 1]) for i in range(n)])
            self.validation_log_loss = [float(v) for v in losses]
            inverse = 1.0 / np.maximum(losses, 1e-12)
            return inverse / inverse.sum()
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(random_state=self.seed).fit(probabilities, labels)
        self.stacking = {"coef": [float(c) for c in fitted.coef_[0]], "intercept": float(fitted.intercept_[0])}
        return np.full(n, 1.0 / n)

    def _combine(self, member_probabilities: np.ndarray) -> np.ndarray:
        """The ensemble probability of ``(members, n)`` member probabilities."""
        if self.stacking is not None:
            from scipy.special import expit

            return expit(np.asarray(self.stacking["coef"]) @ member_probabilities + self.stacking["intercept"])
        return self.weights @ member_probabilities

    def predict_proba(self, windows: np.ndarray, asset_ids: np.ndarray) -> np.ndarray:
        """P(label = 1) of each window, float64 ``(n,)``.

        :param windows: scaled features ``(n, window, n_features)``.
        :param asset_ids: ``(n,)`` integer asset ids.
        """
        member_probabilities = np.stack([np.asarray(m.predict_proba(windows, asset_ids), dtype=np.float64).ravel()
                                         for m in self.members])
        return self._combine(member_probabilities)

    def to_dict(self) -> dict[str, Any]:
        """What a benchmark job records: the members' names, the weighting and its fitted numbers."""
        return {"members": [member_name(m, i) for i, m in enumerate(self.members)], "weighting": self.weighting,
                "weights": [float(w) for w in self.weights], "stacking": self.stacking,
                "validation_log_loss": self.validation_log_loss, "threshold": self.threshold, "seed": self.seed}

    @classmethod
    def from_dict(cls, models: Sequence[ProbabilityModel], record: Mapping[str, Any]) -> "SupervisedEnsemble":
        """The ensemble :meth:`to_dict` recorded, on the same members (nothing is fitted again).

        :param models: the members, in the recorded order.
        :param record: the recorded mapping.
        """
        if len(record["members"]) != len(models):  # names are for reading: bundles move between runs
            raise EnsembleMismatch(f"the record has {len(record['members'])} members {record['members']}; "
                                   f"got {len(models)} models")
        if record["weighting"] == "stacking":
            return cls(models, "stacking", threshold=record["threshold"], seed=record["seed"], stacking=record["stacking"])
        return cls(models, record["weights"], threshold=record["threshold"], seed=record["seed"])


def _explicit_weights(weights: Sequence[float], n: int) -> np.ndarray:
    values = np.asarray(weights, dtype=np.float64).ravel()
    if len(values) != n:
        raise EnsembleMismatch(f"weights has {len(values)} values for {n} members")
    if not (np.isfinite(values).all() and (values >= 0).all() and values.sum() > 0):
        raise EnsembleMismatch(f"weights {values.tolist()} must be finite, >= 0 and not all 0")
    return values / values.sum()


# ----- FinRL's agent selection ---------------------------------------------------------------------------
def select_per_window(validation_sharpes: Mapping[str, Sequence[float]], lag: int = 1) -> list[str | None]:
    """The policy to trade each window with: the best Sharpe on the window before it.

    ``validation_sharpes[name][k]`` is the Sharpe of policy ``name`` measured on window k. Window k is traded by
    the name with the highest Sharpe on window ``k - lag``, so with ``lag=1`` (the default) the choice for window
    k reads only windows < k. ``lag=0`` is for tables whose entry k is already measured before window k (a
    walk-forward fold's own validation split, which ends before its test window).
    Rules: a window with no earlier entry (k < lag) is cash (None). A best Sharpe <= 0 does not beat cash: None.
    Ties go to the name listed first.

    :param validation_sharpes: per policy name, one Sharpe per window (all the same length, finite).
    :param lag: windows between the Sharpe read and the window traded (>= 0).
    :return: one name (or None for cash) per window.
    """
    names = list(validation_sharpes)
    if not names:
        raise EnsembleMismatch("validation_sharpes is empty; give at least one policy")
    if isinstance(lag, bool) or int(lag) != lag or lag < 0:
        raise EnsembleMismatch(f"lag={lag!r} must be a whole number of windows >= 0")
    lengths = {name: len(validation_sharpes[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise EnsembleMismatch(f"validation_sharpes have different numbers of windows: {lengths}")
    for name in names:
        for k, value in enumerate(validation_sharpes[name]):
            if not math.isfinite(float(value)):
                raise EnsembleMismatch(f"validation_sharpes[{name!r}][{k}]={value} is not a finite Sharpe")
    choices: list[str | None] = []
    for k in range(lengths[names[0]]):
        if k < lag:
            choices.append(None)
            continue
        best = max(names, key=lambda name: (float(validation_sharpes[name][k - lag]), -names.index(name)))
        choices.append(best if float(validation_sharpes[best][k - lag]) > 0.0 else None)
    return choices


class AgentSelector:
    """Acts with ``policies[choices[k]]`` while the bar is in window k (flat where the choice is None).

    Window k starts at row ``window_starts[k]``; bars before the first window are flat. The row of each
    observation is counted from ``first_row`` (the row of the backtest's first observation of ONE symbol:
    :func:`first_observation_row`), so one selector serves one symbol. Every policy is asked every bar (the
    chosen one's action is used), so a policy's own history (bars held, moving averages) is current when it
    takes over.

    :param policies: name -> policy (the backtester's protocol); they must share preprocessing and env settings.
    :param choices: one name (or None: flat) per window, e.g. :func:`select_per_window`.
    :param window_starts: the first row of each window, increasing.
    :param first_row: the row of the first observation.
    :param flat: the flat action of the env's action space (0 for discrete long/flat, 0.0 continuous).
    """

    name = "agent_selector"

    def __init__(self, policies: Mapping[str, Any], choices: Sequence[str | None], window_starts: Sequence[int],
                 first_row: int, flat: Any = 0) -> None:
        self.policies = dict(policies)
        unknown = sorted({c for c in choices if c is not None} - set(self.policies))
        if unknown:
            raise EnsembleMismatch(f"choices name {unknown}, which are not among the policies {sorted(self.policies)}")
        starts = np.asarray(window_starts, dtype=np.int64)
        if len(starts) != len(choices) or (np.diff(starts) <= 0).any():
            raise EnsembleMismatch(f"window_starts {starts.tolist()} must be increasing, one per choice ({len(choices)})")
        self.choices, self.window_starts = list(choices), starts
        self.first_row, self.flat = int(first_row), flat
        self.preprocessing = _shared(self.policies, "preprocessing",
                                     lambda p: None if p is None else p.digest())
        settings = _shared(self.policies, "env_settings", lambda s: dict(s or {}))
        if settings:
            self.env_settings = dict(settings)
        self.step = 0

    def reset(self) -> None:
        """Start counting rows from ``first_row`` again and reset every policy."""
        self.step = 0
        for policy in self.policies.values():
            policy.reset()

    def window_of(self, row: int) -> int:
        """The window a row falls in (-1 before the first).

        :param row: a global row.
        """
        return int(np.searchsorted(self.window_starts, row, side="right")) - 1

    def act(self, observation: np.ndarray) -> Any:
        """The chosen policy's action for this bar (every policy observes it).

        :param observation: the env's flat observation.
        """
        actions = {name: policy.act(observation) for name, policy in self.policies.items()}
        k = self.window_of(self.first_row + self.step)
        self.step += 1
        choice = self.choices[k] if k >= 0 else None
        return self.flat if choice is None else actions[choice]


def _shared(policies: Mapping[str, Any], attribute: str, key: Any) -> Any:
    """The value of ``attribute`` all ``policies`` share (compared by ``key``), else a mismatch naming two."""
    names = list(policies)
    values = {name: getattr(policies[name], attribute, None) for name in names}
    first = key(values[names[0]]) if names else None
    for name in names[1:]:
        if key(values[name]) != first:
            raise EnsembleMismatch(f"policies {names[0]!r} and {name!r} differ in {attribute!r}: one selector runs "
                                   f"them on one data and one action space")
    return values[names[0]] if names else None


def first_observation_row(data: MarketData, split: str, symbol: str, **env_settings: Any) -> int:
    """The row of the first observation a backtest of ``symbol`` over ``split`` shows (the first bar whose
    window fits): the ``first_row`` of :class:`AgentSelector`.

    :param data: the data the policies observe (already rebuilt with their preprocessing, if any).
    :param split: the split.
    :param symbol: the symbol.
    :param env_settings: other env settings (``window``...).
    """
    from envs.trading_env import TradingEnv

    env = TradingEnv(data, symbol=symbol, split=split, random_start=False, episode_length=None, **env_settings)
    _, info = env.reset(seed=0)
    return int(info["row"])
