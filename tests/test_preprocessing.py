"""A saved model carries its own preprocessing and rebuilds any data with it (trust issue, item 3):
symbols in another order keep their own embedding, another scaler or feature setting is undone, another
date range is scaled with the model's scaler, an unseen symbol or timeframe is an error, and the live
path (latest bars -> window) equals the dataset path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agents.supervised_policy import SupervisedThresholdPolicy
from envs import TradingEnv, backtest
from features import DatasetConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing, PreprocessingMismatch
from supervised.bundle import load_model, save_bundle
from supervised.models import ModelConfig, build_model

BARS = {"AAA": synthetic_bars(500, seed=0), "BBB": synthetic_bars(500, seed=1, start_price=40.0),
        "CCC": synthetic_bars(500, seed=2, start_price=200.0)}


@pytest.fixture(scope="module")
def trained_on():
    return build_market_data(BARS, DatasetConfig(window=8))


@pytest.fixture(scope="module")
def bundle(trained_on, tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(kind="mlp", window=8, n_features=trained_on.n_features, n_assets=trained_on.n_assets,
                         hidden_sizes=(16,), asset_embedding_dim=4)
    model = build_model(config)
    with torch.no_grad():  # make the asset embedding matter: a wrong id moves the probability a lot
        for name, parameter in model.named_parameters():
            if "embedding" in name:
                parameter.mul_(50.0)
    path = tmp_path_factory.mktemp("bundle") / "model"
    save_bundle(path, model, config, preprocessing=Preprocessing.of(trained_on), label=trained_on.label,
                threshold=0.5, dataset_hashes=trained_on.hashes)
    loaded = load_model(path)
    rows = trained_on.sample_indices("test")
    probabilities = loaded.predict_proba(trained_on.windows(rows), trained_on.row_asset_ids[rows])
    threshold = float(np.median(probabilities))  # trades on about half the bars
    save_bundle(path, model, config, preprocessing=Preprocessing.of(trained_on), label=trained_on.label,
                threshold=threshold, dataset_hashes=trained_on.hashes)
    return path


def equity_of(bundle_path, data, symbol: str) -> np.ndarray:
    policy = SupervisedThresholdPolicy(load_model(bundle_path))
    return backtest(policy, data, "test", symbol=symbol).equity


def test_symbols_in_another_order_keep_their_own_asset_id(bundle, trained_on) -> None:
    reordered = build_market_data({s: BARS[s] for s in ("CCC", "AAA", "BBB")}, DatasetConfig(window=8))
    assert reordered.asset_map != trained_on.asset_map  # ids by order: CCC would borrow AAA's embedding
    prepared = load_model(bundle).prepare(reordered)
    assert prepared.asset_map == trained_on.asset_map
    reference = equity_of(bundle, trained_on, "CCC")
    assert len(np.unique(np.round(np.diff(reference), 6))) > 10  # the policy trades: the check has teeth
    np.testing.assert_array_equal(equity_of(bundle, reordered, "CCC"), reference)


def test_a_robust_scaled_dataset_is_rescaled_with_the_model_s_scaler(bundle, trained_on) -> None:
    robust = build_market_data(BARS, DatasetConfig(window=8, scaler="robust", clip=5.0))
    assert not robust.scaler.equals(trained_on.scaler)
    prepared = load_model(bundle).prepare(robust)
    np.testing.assert_array_equal(prepared.features, trained_on.features)
    np.testing.assert_array_equal(equity_of(bundle, robust, "BBB"), equity_of(bundle, trained_on, "BBB"))


def test_other_feature_settings_and_window_are_rebuilt_from_the_bars(bundle, trained_on) -> None:
    other = build_market_data(BARS, DatasetConfig(window=12, features={"sma_windows": [5, 10]}))
    assert other.feature_names != trained_on.feature_names
    prepared = load_model(bundle).prepare(other)
    assert prepared.feature_names == trained_on.feature_names and prepared.window == 8
    np.testing.assert_array_equal(prepared.features, trained_on.features)
    np.testing.assert_array_equal(equity_of(bundle, other, "AAA")[-50:] / equity_of(bundle, other, "AAA")[-51],
                                  equity_of(bundle, trained_on, "AAA")[-50:] / equity_of(bundle, trained_on, "AAA")[-51])


def test_another_date_range_is_scaled_with_the_model_s_scaler(bundle, trained_on) -> None:
    later = build_market_data({s: frame.iloc[200:] for s, frame in BARS.items()}, DatasetConfig(window=8))
    assert not later.scaler.equals(trained_on.scaler)
    prepared = load_model(bundle).prepare(later)
    assert prepared.scaler.equals(trained_on.scaler)
    expected = trained_on.scaler.transform(later.raw_features)
    usable = np.isfinite(later.raw_features).all(axis=1)  # every row but each symbol's warm-up
    assert usable.sum() == len(usable) - 3 * later.warmup
    np.testing.assert_array_equal(prepared.features[usable], expected[usable])
    assert backtest(SupervisedThresholdPolicy(load_model(bundle)), later, "test", symbol="AAA").equity.size > 10


def test_an_unseen_symbol_is_an_error_never_another_symbol_s_id(bundle) -> None:
    new = build_market_data({"AAA": BARS["AAA"], "ZZZ": BARS["BBB"]}, DatasetConfig(window=8))
    with pytest.raises(PreprocessingMismatch, match=r"symbol 'ZZZ' was not in this model's training data; it knows \['AAA', 'BBB', 'CCC'\]"):
        load_model(bundle).prepare(new)
    with pytest.raises(ValueError, match="ZZZ"):
        backtest(SupervisedThresholdPolicy(load_model(bundle)), new, "test", symbol="AAA")


def test_another_timeframe_is_an_error(bundle) -> None:
    hourly = synthetic_bars(600, freq="h", seed=0)
    data = build_market_data({"AAA": hourly}, DatasetConfig(window=8))
    with pytest.raises(PreprocessingMismatch, match="trained on 1Day bars; the data has 1Hour bars"):
        load_model(bundle).prepare(data)


def test_raw_bars_and_the_latest_window_match_the_dataset(bundle, trained_on) -> None:
    preprocessing = load_model(bundle).preprocessing
    from_bars = preprocessing.market_data(BARS)
    np.testing.assert_array_equal(from_bars.features, trained_on.features)
    assert from_bars.asset_map == trained_on.asset_map
    # live: the window the model sees for the newest bar equals the dataset's window of that bar
    last = trained_on.symbol_rows("BBB").stop - 1
    window, asset_id = preprocessing.latest_window(BARS["BBB"], "BBB")
    np.testing.assert_array_equal(window, trained_on.windows(np.array([last]))[0])
    assert asset_id == trained_on.asset_map["BBB"]
    with pytest.raises(PreprocessingMismatch, match=rf"BBB: 20 bars are too few; the model needs {preprocessing.min_bars}"):
        preprocessing.latest_window(BARS["BBB"].iloc[:20], "BBB")


def test_env_observations_of_a_prepared_dataset_use_the_model_s_ids(bundle) -> None:
    reordered = build_market_data({s: BARS[s] for s in ("BBB", "CCC", "AAA")}, DatasetConfig(window=8, scaler="robust"))
    prepared = load_model(bundle).prepare(reordered)
    env = TradingEnv(prepared, symbol="CCC", split="test", random_start=False)
    observation, _ = env.reset(seed=0)
    assert observation[-1] == load_model(bundle).asset_map["CCC"] == 2


def test_identical_data_is_returned_as_is_and_the_record_round_trips(trained_on) -> None:
    preprocessing = Preprocessing.of(trained_on)
    assert preprocessing.apply(trained_on) is trained_on
    again = Preprocessing.from_dict(preprocessing.to_dict())
    assert again.digest() == preprocessing.digest() and again.scaler.equals(preprocessing.scaler)
    with pytest.raises(ValueError, match="preprocessing: lacks"):
        Preprocessing.from_dict({"version": 1})


def test_a_saved_agent_runs_on_another_date_range_with_its_own_preprocessing(tmp_path, trained_on) -> None:
    from agents.config import AgentConfig
    from agents.saved_agent import load_agent
    from agents.training import train_agent

    config = AgentConfig.from_dict({"total_timesteps": 256, "n_envs": 2, "eval_freq": 256,
                                    "ppo": {"n_steps": 64, "batch_size": 64}, "env": {"episode_length": 32},
                                    "min_tstat": -1e9, "min_improvement": -1e9})
    train_agent(config, trained_on, tmp_path / "run", progress=False)
    agent = load_agent(tmp_path / "run" / "best")
    assert agent.preprocessing.digest() == Preprocessing.of(trained_on).digest()
    later = build_market_data({s: frame.iloc[150:] for s, frame in BARS.items()},
                              DatasetConfig(window=8, scaler="robust"))
    result = backtest(agent, later, "test", symbol="CCC", **agent.env_settings)
    assert np.isfinite(result.equity).all()
    with pytest.raises(ValueError, match="cannot run on this data: symbol 'QQQ'"):
        load_agent(tmp_path / "run" / "best", build_market_data({"QQQ": BARS["AAA"]}, DatasetConfig(window=8)))
