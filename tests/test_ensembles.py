"""Ensembles of supervised models (weights fitted on validation) and FinRL's per-window agent selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from agents.baselines import BuyAndHoldPolicy, CashPolicy
from agents.ensembles import (AgentSelector, EnsembleMismatch, SupervisedEnsemble, first_observation_row,
                              select_per_window)
from agents.supervised_policy import SupervisedThresholdPolicy
from agents.threshold_choice import choose_thresholds_for_money
from envs.backtest import backtest
from features import DatasetConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from features.splits import SplitConfig
from sim.engine import Costs
from supervised.samples import split_rows

WINDOW = 5
SPLIT = SplitConfig(validation_start="2011-01-03", test_start="2011-05-02")


def market(bars):
    return build_market_data({"X": bars}, DatasetConfig(window=WINDOW, split=SPLIT))


class FeatureModel:
    """P(up) = expit(scale * one feature of the window's last bar)."""

    def __init__(self, data, column: int, scale: float, path: str | None = None) -> None:
        self.window, self.feature_names, self.label = data.window, list(data.feature_names), dict(data.label)
        self.threshold, self.preprocessing, self.path = 0.5, None, path
        self.column, self.scale = column, scale

    def predict_proba(self, windows, asset_ids):
        return expit(self.scale * np.asarray(windows, dtype=np.float64)[:, -1, self.column])


class ConstantModel(FeatureModel):
    def __init__(self, data, probability: float) -> None:
        super().__init__(data, 0, 0.0)
        self.probability = probability

    def predict_proba(self, windows, asset_ids):
        return np.full(len(windows), self.probability)


@pytest.fixture(scope="module")
def bars():
    return synthetic_bars(600, seed=3, phi=0.1)


@pytest.fixture(scope="module")
def data(bars):
    return market(bars)


def test_equal_weights_of_two_identical_members_equal_one_member(data) -> None:
    member = FeatureModel(data, 0, 1.5)
    ensemble = SupervisedEnsemble([member, FeatureModel(data, 0, 1.5)], "equal", threshold=0.5)
    windows = data.windows(np.arange(100, 300))
    ids = np.zeros(len(windows), np.int64)
    assert np.array_equal(ensemble.predict_proba(windows, ids), member.predict_proba(windows, ids))
    one = backtest(SupervisedThresholdPolicy(member), data, "test")
    both = backtest(SupervisedThresholdPolicy(ensemble), data, "test")
    assert np.array_equal(one.equity, both.equity)


def test_inverse_loss_weights_by_hand(data) -> None:
    ensemble = SupervisedEnsemble([ConstantModel(data, 0.8), ConstantModel(data, 0.4)], "inverse_loss", data=data,
                                  threshold=0.5)
    labels = split_rows(data, "validation").labels.astype(float)
    k, n = labels.sum(), len(labels)
    loss = [-(k * math.log(p) + (n - k) * math.log(1 - p)) / n for p in (0.8, 0.4)]
    weights = np.array([1 / loss[0], 1 / loss[1]]) / (1 / loss[0] + 1 / loss[1])
    assert ensemble.weights == pytest.approx(weights, rel=1e-12)
    assert ensemble.validation_log_loss == pytest.approx(loss, rel=1e-12)
    assert ensemble.predict_proba(data.windows(np.arange(100, 102)), np.zeros(2, np.int64)) == \
        pytest.approx(weights @ [0.8, 0.4], rel=1e-12)


def test_stacking_is_fitted_on_validation_only(bars, data) -> None:
    from sklearn.linear_model import LogisticRegression

    changed = bars.copy()
    later = changed.index >= SPLIT.test_start
    changed.loc[later, ["open", "high", "low", "close"]] *= 0.7  # another test market
    members = [FeatureModel(data, 0, 2.0), FeatureModel(data, 3, -1.0)]
    ensemble = SupervisedEnsemble(members, "stacking", data=data, seed=0)
    other = SupervisedEnsemble(members, "stacking", data=market(changed), seed=0)
    assert ensemble.to_dict() == other.to_dict()
    rows = split_rows(data, "validation")
    member_p = np.column_stack([m.predict_proba(rows.gather(np.arange(len(rows))), rows.asset_ids) for m in members])
    fitted = LogisticRegression(random_state=0).fit(member_p, rows.labels)
    windows = data.windows(np.arange(450, 520))
    ids = np.zeros(len(windows), np.int64)
    by_hand = fitted.predict_proba(np.column_stack([m.predict_proba(windows, ids) for m in members]))[:, 1]
    assert ensemble.predict_proba(windows, ids) == pytest.approx(by_hand, rel=1e-12)
    again = SupervisedEnsemble.from_dict(members, ensemble.to_dict())
    assert np.array_equal(again.predict_proba(windows, ids), ensemble.predict_proba(windows, ids))


def test_the_threshold_policy_and_the_money_chooser_run_on_an_ensemble(data) -> None:
    ensemble = SupervisedEnsemble([FeatureModel(data, 0, 2.0), FeatureModel(data, 3, -1.0)], "inverse_loss", data=data)
    assert 0.0 <= ensemble.threshold <= 1.0  # chosen on validation by F1
    choice = choose_thresholds_for_money(ensemble, data, Costs(), entries=(0.5, 0.6), hysteresis=(0.1,),
                                         min_holds=(0,))
    assert len(choice.table) == 2 and choice.policy(ensemble) is not None


def test_members_of_different_datasets_are_refused(data) -> None:
    a, b = FeatureModel(data, 0, 1.0, path="runs/a"), FeatureModel(data, 0, 1.0, path="runs/b")
    b.window = WINDOW + 1
    with pytest.raises(EnsembleMismatch, match=r"members 'runs/a' and 'runs/b' .* 'window' differs \(5 vs 6\)"):
        SupervisedEnsemble([a, b], threshold=0.5)
    b.window, b.label = WINDOW, {**a.label, "horizon": 3}
    with pytest.raises(EnsembleMismatch, match="'label' differs"):
        SupervisedEnsemble([a, b], threshold=0.5)
    b.label, b.feature_names = a.label, a.feature_names[:-1] + ["news_sentiment"]
    with pytest.raises(EnsembleMismatch, match="'feature_names' differs"):
        SupervisedEnsemble([a, b], threshold=0.5)
    b.feature_names, b.preprocessing = a.feature_names, Preprocessing.of(data)
    with pytest.raises(EnsembleMismatch, match="'preprocessing' differs"):
        SupervisedEnsemble([a, b], threshold=0.5)


def test_select_per_window_uses_only_earlier_windows() -> None:
    sharpes = {"a": [0.5, -0.2, 0.1, -0.3, 0.9], "b": [0.2, 0.4, 0.1, -0.1, 0.0]}
    # window 0: no history; 1: a won window 0; 2: b won 1; 3: tie -> first listed; 4: all negative -> cash
    assert select_per_window(sharpes) == [None, "a", "b", "a", None]
    for k in range(5):  # changing window k and later changes no choice up to window k
        changed = {name: values[:k] + [-v * 7 for v in values[k:]] for name, values in sharpes.items()}
        assert select_per_window(changed)[: k + 1] == select_per_window(sharpes)[: k + 1]
    # lag 0: entry k is measured before window k (a fold's own validation split)
    assert select_per_window(sharpes, lag=0) == ["a", "b", "a", None, "a"]
    with pytest.raises(EnsembleMismatch, match=r"validation_sharpes\['b'\]\[1\]=nan"):
        select_per_window({"a": [0.1, 0.2], "b": [0.1, float("nan")]})


def test_agent_selector_switches_at_window_boundaries(data) -> None:
    start, end = data.split_range("test", "X")
    first = first_observation_row(data, "test", "X")
    middle = (first + end) // 2
    selector = AgentSelector({"cash": CashPolicy(), "hold": BuyAndHoldPolicy()}, ["hold", "cash", "hold"],
                             [first - 100, first + 10, middle], first)
    result = backtest(selector, data, "test", Costs())
    rows = np.arange(first, first + len(result.position))
    # the action at row r shows in the position after the next step
    expected = np.where((rows >= first + 10) & (rows < middle), 0.0, 1.0)[:-1]
    assert np.array_equal(result.position[1:] > 0, expected > 0)
    with pytest.raises(EnsembleMismatch, match=r"choices name \['sma'\]"):
        AgentSelector({"cash": CashPolicy()}, ["sma"], [0], first)
