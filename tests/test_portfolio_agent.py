"""The portfolio RL agent's parts: an equivariant actor, embeddings computed once per (asset, bar), one-line
config errors, saved agents that load alone and act, the fallback, the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from agents.portfolio_agent import (
    FixedWeights,
    PortfolioAgentConfig,
    PortfolioCheckpointRule,
    PortfolioEnvSettings,
    build_portfolio_model,
    evaluate_allocation,
    load_portfolio_agent,
    make_portfolio_env,
    train_portfolio_agent,
)
from agents.portfolio_encoder import embed_panel
from configs.loader import ConfigError
from envs.portfolio_core import PortfolioLayout
from experiments import train_portfolio
from experiments.common import run_cli
from features import DatasetConfig, build_market_data
from features.panel import Panel
from features.planted_universe import planted_universe
from supervised.models import ModelConfig, build_encoder


def _panel(n_assets: int = 4, n_bars: int = 400, window: int = 2) -> Panel:
    bars = planted_universe(n_assets, n_bars, edge_assets=(0,), seed=3)
    return Panel.from_market_data(build_market_data(bars, DatasetConfig(window=window)))


def _tiny_config(**changes) -> PortfolioAgentConfig:
    settings = {"total_timesteps": 512, "n_envs": 8, "eval_freq": 256, "actor_hidden": [8], "critic_hidden": [8],
                "ppo": {"n_steps": 32, "batch_size": 128, "n_epochs": 1},
                "sac": {"learning_starts": 64, "batch_size": 32, "buffer_size": 1000}, **changes}
    return PortfolioAgentConfig.from_dict(settings)


def _permute(obs: np.ndarray, layout: PortfolioLayout, order: np.ndarray) -> np.ndarray:
    features = layout.features(obs)[:, order]
    weights = layout.weights(obs)
    weights = np.concatenate([weights[:, order], weights[:, -1:]], axis=1)
    return np.concatenate([features.reshape(len(obs), -1), weights], axis=1).astype(np.float32)


def test_permuting_the_assets_permutes_the_policy_logits():
    """Without the per-asset vectors (asset_embedding_dim 0) the actor treats every asset alike."""
    panel = _panel()
    config = _tiny_config(asset_embedding_dim=0)
    env = make_portfolio_env(config, panel)
    layout = PortfolioLayout(panel.n_assets, panel.window, panel.n_features)
    model = build_portfolio_model(config, env, layout, None)
    torch.manual_seed(0)
    for parameter in model.policy.parameters():  # not the near-zero initial output layer: a generic network
        parameter.data.normal_(0.0, 0.5)
    obs = env.reset()
    obs[:, layout.weights_slice] = np.random.default_rng(0).dirichlet(np.ones(panel.n_assets + 1), len(obs))
    order = np.array([2, 0, 3, 1])
    with torch.no_grad():
        logits = model.policy.get_distribution(torch.as_tensor(obs)).distribution.mean.numpy()
        permuted = model.policy.get_distribution(torch.as_tensor(_permute(obs, layout, order))).distribution.mean.numpy()
        std = model.policy.get_distribution(torch.as_tensor(obs)).distribution.stddev.numpy()
    assert np.abs(logits[:, :-1]).max() > 0.1  # the check is not vacuous
    np.testing.assert_allclose(permuted[:, :-1], logits[:, order], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(permuted[:, -1], logits[:, -1], rtol=1e-5, atol=1e-5)
    assert np.all(std[:, :-1] == std[:, :1])  # one exploration noise for every asset


def test_asset_embeddings_let_the_actor_tell_assets_apart():
    panel = _panel()
    config = _tiny_config(asset_embedding_dim=3)
    env = make_portfolio_env(config, panel)
    layout = PortfolioLayout(panel.n_assets, panel.window, panel.n_features)
    model = build_portfolio_model(config, env, layout, None)
    for parameter in model.policy.parameters():
        parameter.data.normal_(0.0, 0.5)
    obs = env.reset()
    same = obs.copy()
    block = layout.features(same)
    block[:] = block[:, :1]  # every asset sees the first asset's window
    same = np.concatenate([block.reshape(len(obs), -1), layout.weights(obs) * 0 + 1 / (panel.n_assets + 1)], axis=1)
    with torch.no_grad():
        logits = model.policy.get_distribution(torch.as_tensor(same.astype(np.float32))).distribution.mean.numpy()
    assert np.ptp(logits[:, :-1], axis=1).min() > 1e-3


def _late_listing_panel(window: int = 3) -> Panel:
    bars = planted_universe(3, 300, edge_assets=(0,), seed=5)
    bars["A02"] = bars["A02"].iloc[100:]  # listed 100 bars later
    return Panel.from_market_data(build_market_data(bars, DatasetConfig(window=window)))


def test_embed_panel_gives_the_encoders_output_per_asset_and_time_and_zeros_before_listing():
    panel = _late_listing_panel()
    torch.manual_seed(0)
    encoder = build_encoder(ModelConfig(kind="mlp", window=panel.window, n_features=panel.n_features,
                                        n_assets=panel.data.n_assets, hidden_sizes=(16, 8), dropout=0.0)).eval()
    embedded = embed_panel(panel, encoder, batch=64)  # several batches per asset
    assert (embedded.window, embedded.n_features) == (1, 8)
    assert embedded.split_rows == panel.split_rows
    np.testing.assert_array_equal(embedded.timestamps, panel.timestamps)
    np.testing.assert_array_equal(embedded.close, panel.close)
    np.testing.assert_array_equal(embedded.has_bar, panel.has_bar)
    ids = torch.tensor([panel.data.asset_map[s] for s in panel.symbols])
    for t in (0, 99, 100, 101, 250, panel.n_times - 1):
        with torch.no_grad():
            expected = encoder(torch.from_numpy(panel.windows(t)), ids).numpy()
        got = embedded.windows(t)[:, 0]
        listed = panel.rows[t] >= 0
        np.testing.assert_allclose(got[listed], expected[listed], rtol=1e-5, atol=1e-6)
        assert np.all(got[~listed] == 0.0)
    assert not (panel.rows[50] >= 0)[2]  # A02 is not listed yet at row 50...
    assert np.all(embedded.windows(50)[2] == 0.0)  # ...and its embedding there is zeros


@pytest.mark.parametrize("text, named", [
    ("agent:\n  algo: dqn\n", "algo='dqn'"),
    ("agent:\n  fallback: hold\n", "fallback='hold'"),
    ("agent:\n  actor_hidden: []\n", "actor_hidden"),
    ("agent:\n  ppo:\n    gamma: 1.5\n", "ppo.gamma"),
    ("agent:\n  env:\n    commission: -0.1\n", "commission"),
    ("agent:\n  eval_split: test\n", "eval_split='test'"),
    ("agent:\n  n_env: 4\n", "n_env"),
    ("agnet:\n  algo: ppo\n", "agnet"),
])
def test_config_errors_are_one_line_naming_the_file_and_key(tmp_path, text, named):
    path = tmp_path / "portfolio.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        train_portfolio.load_portfolio_config(path)
    message = str(error.value)
    assert "\n" not in message and named in message and str(path) in message


def test_the_package_config_is_the_dataclass_defaults():
    assert PortfolioAgentConfig.from_yaml() == PortfolioAgentConfig()


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_tiny_run_saves_agents_that_load_alone_and_act(tmp_path, algo):
    panel = _panel()
    config = _tiny_config(algo=algo, min_tstat=-100.0, min_margin=-1.0)  # any checkpoint qualifies
    summary = train_portfolio_agent(config, panel, tmp_path / "run", progress=False)
    assert summary["fallback"] is None and summary["timesteps"] >= 512
    for name in ("best", "final"):
        agent = load_portfolio_agent(tmp_path / "run" / name)
        assert agent.action_transform == "softmax" and agent.rebalance_every is None
        assert agent.prepare(panel) is panel
        obs = make_portfolio_env(config, panel).reset()[0]
        action = agent.act(obs)
        assert action.shape == (panel.n_assets + 1,) and np.all(np.isfinite(action))
        result = evaluate_allocation(agent, panel, "test", config.env)
        assert result["n_steps"] == panel.split_range("test")[1] - panel.split_range("test")[0] - 1


def test_a_saved_agent_refuses_a_universe_of_another_size(tmp_path):
    panel = _panel()
    train_portfolio_agent(_tiny_config(min_tstat=-100.0, min_margin=-1.0), panel, tmp_path / "run", progress=False)
    agent = load_portfolio_agent(tmp_path / "run" / "best")
    with pytest.raises(ValueError, match="allocates over 4 assets; the universe has 3"):
        agent.check_panel(_panel(n_assets=3))


@pytest.mark.parametrize("fallback", ["equal_weight", "cash"])
def test_the_fallback_is_saved_when_no_checkpoint_beats_the_baselines(tmp_path, fallback):
    panel = _panel()
    config = _tiny_config(min_tstat=100.0, fallback=fallback)  # no checkpoint can qualify
    summary = train_portfolio_agent(config, panel, tmp_path / "run", progress=False)
    assert summary["fallback"] == fallback and summary["best_validation"] is None
    agent = load_portfolio_agent(tmp_path / "run" / "best")
    assert agent.fallback == fallback and agent.action_transform == "weights"
    base = FixedWeights.equal_weight(4) if fallback == "equal_weight" else FixedWeights.cash(4)
    assert agent.rebalance_every == base.rebalance_every
    np.testing.assert_array_equal(agent.act(np.zeros(10, dtype=np.float32)), base.weights)
    ours, theirs = (evaluate_allocation(p, panel, "test", config.env) for p in (agent, base))
    assert ours["log_return"] == theirs["log_return"] and ours["turnover"] == theirs["turnover"]
    assert load_portfolio_agent(tmp_path / "run" / "final").fallback is None  # final keeps the trained policy


def test_buy_and_hold_trades_once_and_equal_weight_rebalances():
    panel = _panel()
    settings = PortfolioEnvSettings()
    hold = evaluate_allocation(FixedWeights.buy_and_hold(4), panel, "validation", settings)
    equal = evaluate_allocation(FixedWeights.equal_weight(4), panel, "validation", settings)
    assert hold["n_orders"] == 4 and hold["turnover"] == pytest.approx(1.0, abs=0.01)
    steps = panel.split_range("validation")[1] - panel.split_range("validation")[0] - 1
    rebalances = -(-steps // 21)  # steps 0, 21, 42, ... send orders (every asset whose weight drifted)
    assert 4 < equal["n_orders"] <= 4 * rebalances and equal["turnover"] > hold["turnover"]


def test_cli_help_and_one_line_errors(capsys, tmp_path):
    assert run_cli(train_portfolio.main, ["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--config", "--algo", "--seed", "--run-name", "--total-timesteps", "--data", "--bundle"):
        assert option in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  fallback: hold\n")
    assert run_cli(train_portfolio.main, ["--config", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "fallback='hold'" in err and "\n" not in err
    assert run_cli(train_portfolio.main, ["--data", str(tmp_path / "nowhere")]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_trains_on_a_saved_dataset(tmp_path, capsys):
    bars = planted_universe(3, 400, edge_assets=(0,), seed=2)
    data = build_market_data(bars, DatasetConfig(window=2))
    data.save(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text("agent:\n  n_envs: 4\n  eval_freq: 128\n  actor_hidden: [8]\n  critic_hidden: [8]\n"
                      "  ppo:\n    n_steps: 32\n    batch_size: 64\n    n_epochs: 1\n")
    summary = train_portfolio.main(["--config", str(config), "--data", str(tmp_path / "data"), "--total-timesteps",
                                    "256", "--runs-dir", str(tmp_path / "runs"), "--run-name", "pf", "--no-progress"])
    assert (tmp_path / "runs" / "pf" / "summary.json").exists()
    assert (tmp_path / "runs" / "pf" / "best" / "portfolio_agent.json").exists()
    assert summary["symbols"] == ["A00", "A01", "A02"]
    assert "best agent:" in capsys.readouterr().out


def test_with_a_bundle_the_agent_observes_embeddings_and_its_saved_copy_of_the_encoder(tmp_path):
    from features.preprocessing import Preprocessing
    from supervised.bundle import save_bundle
    from supervised.models import build_model

    data = build_market_data(planted_universe(3, 400, edge_assets=(0,), seed=4), DatasetConfig(window=3))
    torch.manual_seed(0)
    model_config = ModelConfig(kind="mlp", window=3, n_features=data.n_features, n_assets=data.n_assets,
                               hidden_sizes=(16, 6), dropout=0.0)
    save_bundle(tmp_path / "bundle", build_model(model_config), model_config, preprocessing=Preprocessing.of(data),
                label=data.label, threshold=0.5, dataset_hashes={})
    summary = train_portfolio_agent(_tiny_config(min_tstat=-100.0, min_margin=-1.0), data, tmp_path / "run",
                                    bundle=tmp_path / "bundle", progress=False)
    assert summary["observation"] == {"n_assets": 3, "window": 1, "n_features": 6, "encoder": str(tmp_path / "bundle")}
    shutil.rmtree(tmp_path / "bundle")  # the agent loads alone
    agent = load_portfolio_agent(tmp_path / "run" / "best")
    panel = agent.prepare(data)
    assert (panel.n_assets, panel.window, panel.n_features) == (3, 1, 6)
    result = evaluate_allocation(agent, panel, "validation", PortfolioEnvSettings())
    assert result["n_steps"] > 10 and np.isfinite(result["log_return"])
    assert agent.act(np.zeros(3 * 6 + 4, dtype=np.float32)).shape == (4,)


def test_an_evaluation_covers_the_whole_split_whatever_the_policy_loses():
    """A policy that loses more than half its equity is still scored on every step of the split, so its per-step
    returns line up with the baselines' for the checkpoint rule (a shorter series was a crash in training)."""
    panel = _panel()

    class Churn:
        action_transform, rebalance_every = "weights", None

        def __init__(self) -> None:
            self.k = 0

        def reset(self) -> None:
            self.k = 0

        def act(self, observation):
            self.k += 1
            weights = np.zeros(panel.n_assets + 1)
            weights[self.k % panel.n_assets] = 1.0
            return weights

    settings = PortfolioEnvSettings(commission=0.05)
    churn = evaluate_allocation(Churn(), panel, "validation", settings)
    equal = evaluate_allocation(FixedWeights.equal_weight(panel.n_assets), panel, "validation", settings)
    assert churn["log_return"] < np.log(0.5)
    assert churn["n_steps"] == equal["n_steps"] == len(churn["returns"])
    PortfolioCheckpointRule().judge(churn, {"equal_weight": equal})
