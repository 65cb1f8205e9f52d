"""The benchmark's portfolio side: allocation policies run as one account per market beside the per-symbol
policies' sleeves, refit on each fold's train rows, scored at every cost level, costs compared as a share of
the capital."""

from __future__ import annotations

import pytest

from evaluation.benchmark import plan, run_benchmark
from evaluation.config import BenchmarkConfig
from evaluation.executor import SerialExecutor
from evaluation.runner import PORTFOLIO_SLEEVE

UNIVERSE = {
    "markets": {"eq": {"symbols": ["AAPL", "IBM", "MSFT"], "start": "2006-01-01", "window": 4},
                "fx": {"symbols": ["EURUSD"], "timeframe": "1Hour", "window": 4,
                       "policies": ["cash", "buy_and_hold", "equal_weight"],
                       "labels": {"barrier": "volatility", "profit": 1.5, "stop": 1.0, "horizon": 8,
                                  "volatility_window": 20}}},
    "folds": {"n_folds": 2, "test_share": 0.3},
    "seeds": 1,
    "policies": {
        "cash": {}, "buy_and_hold": {},
        "held_equal_weight": {"kind": "allocation", "method": "equal_weight", "rebalance_every": None},
        "equal_weight": {"kind": "allocation", "method": "equal_weight", "rebalance_every": 21},
        "minimum_variance": {"kind": "allocation", "method": "minimum_variance"},
        "portfolio_ppo": {"kind": "portfolio_agent", "algo": "ppo"},
        "supervised_mlp": {"kind": "supervised", "model": "mlp", "model_settings": {"hidden_sizes": [8]}},
        "portfolio_ppo_encoder": {"kind": "portfolio_agent", "algo": "ppo", "pretrained": "supervised_mlp"},
    },
    "budgets": {"supervised": {"epochs": 1},
                "portfolio_agent": {"total_timesteps": 512, "eval_freq": 256, "n_envs": 8,
                                    "actor_hidden": [8], "critic_hidden": [8],
                                    "ppo": {"n_steps": 32, "batch_size": 128, "n_epochs": 1}}},
    "costs": {"commissions": [0.0, 0.001], "slippages_bps": [0.0, 5.0], "break_even_scales": [0.0, 1.0]},
    "statistics": {"bootstrap_resamples": 50},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config = BenchmarkConfig.from_dict(UNIVERSE)
    run_dir = tmp_path_factory.mktemp("bench") / "run"
    report = run_benchmark(config, run_dir, executor=SerialExecutor(), progress=False)
    return config, run_dir, report


def test_portfolio_policies_run_only_on_markets_of_two_symbols_or_more(finished) -> None:
    config, _, report = finished
    _, jobs = plan(config)
    on_fx = {job.policy for job in jobs if job.market == "fx"}
    assert on_fx == {"cash", "buy_and_hold"}  # listed, but a portfolio kind needs 2 symbols or more
    assert set(report["markets"]["eq"]["policies"]) == {p.name for p in config.policies}


def test_a_portfolio_job_is_one_account_scored_at_every_cost_level(finished) -> None:
    config, run_dir, _ = finished
    from evaluation.jobs import JobCache

    _, jobs = plan(config)
    job = next(j for j in jobs if j.policy == "minimum_variance" and j.market == "eq")
    result = JobCache(run_dir / "jobs").load(job.key)
    assert result.meta["symbols"] == [PORTFOLIO_SLEEVE]
    assert len(result.meta["scores"]) == len(config.costs.levels())
    weights = result.meta["weights"]
    assert set(weights) == {"AAPL", "IBM", "MSFT"} and sum(weights.values()) == pytest.approx(1.0)
    assert "train rows" in result.meta["selection"]
    base = result.meta["base_level"]
    metrics = result.meta["scores"][base]["per_symbol"][PORTFOLIO_SLEEVE]
    equity = result.arrays[f"{PORTFOLIO_SLEEVE}|{base}|equity"]
    assert metrics["costs_share"] == pytest.approx(metrics["costs_paid"] / equity[0])
    free = result.arrays[f"{PORTFOLIO_SLEEVE}|c0_s0|equity"]
    assert free[-1] > equity[-1]  # costs are charged at the base level and not at zero cost


def test_equal_weight_held_matches_the_per_symbol_buy_and_hold_sleeves(finished) -> None:
    """Three sleeves bought once with equal capital and one account bought once in equal weights are the same
    portfolio, up to how the costs of the first fills are shared (one account sizes its three buys together)."""
    _, _, report = finished
    policies = report["markets"]["eq"]["policies"]
    held = policies["held_equal_weight"]["pooled"]["log_return"]
    sleeves = policies["buy_and_hold"]["pooled"]["log_return"]
    assert held == pytest.approx(sleeves, abs=2e-3)
    rebalanced = policies["equal_weight"]["pooled"]
    assert rebalanced["n_orders"] > policies["held_equal_weight"]["pooled"]["n_orders"]
    # costs as a share of capital are comparable between one account and three sleeves
    assert 0 < policies["held_equal_weight"]["pooled"]["costs_share"] < 0.01
    assert policies["held_equal_weight"]["pooled"]["costs_share"] == pytest.approx(
        policies["buy_and_hold"]["pooled"]["costs_share"], rel=0.05)


def test_a_portfolio_agent_is_trained_per_fold_and_scored_as_one_account(finished) -> None:
    config, run_dir, report = finished
    from evaluation.jobs import JobCache

    _, jobs = plan(config)
    agent_jobs = [j for j in jobs if j.policy == "portfolio_ppo"]
    assert len(agent_jobs) == 2  # 2 folds x 1 seed
    for job in agent_jobs:
        result = JobCache(run_dir / "jobs").load(job.key)
        assert result.meta["symbols"] == [PORTFOLIO_SLEEVE]
        assert result.meta["selection"]  # the checkpoint rule (or the fallback) is recorded
        assert result.artifact is not None  # the saved agent travels with the result
    assert "portfolio_ppo" in report["markets"]["eq"]["policies"]


def test_a_portfolio_agent_on_a_pretrained_encoder_embeds_every_asset_with_the_folds_bundle(finished) -> None:
    config, run_dir, _ = finished
    from evaluation.jobs import JobCache, unpack_directory

    _, jobs = plan(config)
    for job in (j for j in jobs if j.policy == "portfolio_ppo_encoder"):
        source = next(j for j in jobs if j.policy == "supervised_mlp" and j.market == job.market
                      and j.fold == job.fold and j.seed == job.seed)
        assert job.depends_on == source.key  # the same market, fold and seed's bundle
        result = JobCache(run_dir / "jobs").load(job.key)
        saved = unpack_directory(result.artifact, run_dir.parent / f"agent{job.fold}")
        assert any(p.name == "bundle.json" for p in saved.rglob("*"))  # the agent carries its encoder


def test_the_report_shows_costs_as_a_share_of_capital(finished) -> None:
    _, run_dir, _ = finished
    text = (run_dir / "report.md").read_text()
    assert "costs (% capital)" in text
    assert "held_equal_weight" in text and "minimum_variance" in text


def test_only_markets_selects_and_names_unknown_ones() -> None:
    config = BenchmarkConfig.from_dict(UNIVERSE)
    assert [m.name for m in config.only_markets(["eq"]).markets] == ["eq"]
    with pytest.raises(ValueError, match=r"\['nope'\]: not markets of this config; its markets are \['eq', 'fx'\]"):
        config.only_markets(["nope"])


def test_each_market_reports_its_probability_of_backtest_overfitting_over_every_policy_and_seed(finished) -> None:
    config, run_dir, report = finished
    market = report["markets"]["eq"]
    overfitting = market["overfitting"]
    assert overfitting["n_strategies"] == sum(p["n_seeds"] for p in market["policies"].values())
    assert 0.0 <= overfitting["pbo"] <= 1.0 and overfitting["n_splits"] % 2 == 0
    assert {p["name"].split(" seed ")[0] for p in overfitting["most_picked"]} <= set(market["policies"])
    assert any(v.startswith("eq: PBO ") for v in report["verdicts"])
    assert "### Probability of backtest overfitting" in (run_dir / "report.md").read_text()
