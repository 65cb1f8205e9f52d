"""The supervised threshold policy: entry, exit, holding limit, defaults and observation checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.supervised_policy import SupervisedThresholdPolicy
from envs.layout import ObservationLayout
from features import DatasetConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from supervised.bundle import save_bundle
from supervised.models import ModelConfig, build_model

WINDOW, FEATURES = 3, 2
LAYOUT = ObservationLayout(WINDOW, FEATURES)


class StubModel:
    """Returns scripted probabilities and records what it was given."""

    def __init__(self, probabilities, threshold=0.6, horizon=4):
        self.window = WINDOW
        self.feature_names = ["a", "b"]
        self.label = {"profit": 0.05, "stop": 0.02, "horizon": horizon}
        self.threshold = threshold
        self.probabilities = list(probabilities)
        self.calls = []

    def predict_proba(self, windows, asset_ids):
        self.calls.append((windows.copy(), asset_ids.copy()))
        return np.array([self.probabilities.pop(0)])


def obs(position: float = 0.0, asset_id: int = 1) -> np.ndarray:
    values = np.zeros(LAYOUT.size, dtype=np.float32)
    values[: LAYOUT.n_window_values] = np.arange(LAYOUT.n_window_values, dtype=np.float32)
    values[LAYOUT.state_slice.start] = position
    values[LAYOUT.asset_index] = asset_id
    return values


def run(policy: SupervisedThresholdPolicy, positions: list[float]) -> list[int]:
    return [policy.act(obs(p)) for p in positions]


def test_enters_at_the_entry_threshold_and_exits_below_the_exit_threshold() -> None:
    model = StubModel([0.5, 0.6, 0.55, 0.45, 0.7])
    policy = SupervisedThresholdPolicy(model, entry_threshold=0.6, exit_threshold=0.5)
    # flat below entry; enter at entry; hold between exit and entry; exit below exit; flat then re-enter
    assert run(policy, [0, 0, 1, 1, 0]) == [0, 1, 1, 0, 1]
    windows, ids = model.calls[0]
    assert windows.shape == (1, WINDOW, FEATURES) and windows[0, 1, 0] == 2.0
    assert ids.tolist() == [1] and ids.dtype == np.int64


def test_exits_after_max_holding_bars_and_counts_again_after_reset() -> None:
    policy = SupervisedThresholdPolicy(StubModel([0.9] * 12), max_holding=3)
    assert run(policy, [0, 1, 1, 1, 0]) == [1, 1, 1, 0, 1]
    policy.reset()
    assert run(policy, [1, 1, 1]) == [1, 1, 0]  # a position seen after reset is counted from there
    assert policy.bars_held == 0


def test_defaults_come_from_the_bundle() -> None:
    policy = SupervisedThresholdPolicy(StubModel([], threshold=0.6, horizon=8))
    assert policy.entry_threshold == 0.6 and policy.exit_threshold == pytest.approx(0.5) and policy.max_holding == 8
    low = SupervisedThresholdPolicy(StubModel([], threshold=0.05))
    assert low.exit_threshold == 0.0
    with pytest.raises(ValueError, match="exit_threshold=0.7 must not exceed entry_threshold=0.6"):
        SupervisedThresholdPolicy(StubModel([]), exit_threshold=0.7)
    with pytest.raises(ValueError, match="max_holding=0"):
        SupervisedThresholdPolicy(StubModel([]), max_holding=0)


def test_observation_length_mismatch_is_named() -> None:
    policy = SupervisedThresholdPolicy(StubModel([0.9]))
    with pytest.raises(ValueError, match=r"observation has 12 values but window=3 x n_features=2 .* needs 11"):
        policy.act(np.zeros(12, dtype=np.float32))


def test_loads_a_bundle_from_a_path(tmp_path) -> None:
    torch.manual_seed(0)
    data = build_market_data({"X": synthetic_bars(300, seed=0), "Y": synthetic_bars(300, seed=1)},
                             DatasetConfig(window=WINDOW))
    config = ModelConfig(kind="mlp", window=WINDOW, n_features=data.n_features, n_assets=2, hidden_sizes=(8,))
    save_bundle(tmp_path / "model", build_model(config), config, preprocessing=Preprocessing.of(data),
                label={"profit": 0.05, "stop": 0.02, "horizon": 5}, threshold=0.4, dataset_hashes={})
    policy = SupervisedThresholdPolicy(str(tmp_path / "model"))
    assert policy.max_holding == 5 and policy.entry_threshold == 0.4
    assert policy.preprocessing is not None and policy.preprocessing.asset_map == {"X": 0, "Y": 1}
    observation = np.zeros(ObservationLayout(WINDOW, data.n_features).size, dtype=np.float32)
    action = policy.act(observation)
    assert action in (0, 1) and action == int(policy.last_probability >= 0.4)