"""The benchmark end to end on a small config: report structure, every seed reported, intervals that
contain their points, resuming after a kill, a rerun that skips every job, and the same jobs on a Dask
cluster of two worker processes started by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.benchmark import plan, run_benchmark
from evaluation.config import BenchmarkConfig
from evaluation.executor import SerialExecutor

SMALL = {
    "markets": {"eq": {"symbols": ["AAPL", "IBM"], "start": "2006-01-01", "window": 12}},
    "folds": {"n_folds": 2, "test_share": 0.3},
    "seeds": 2,
    "policies": {
        "cash": {}, "buy_and_hold": {}, "random": {}, "sma_crossover": {},
        "supervised_mlp": {"kind": "supervised", "model": "mlp", "model_settings": {"hidden_sizes": [16]}},
        "ppo": {"kind": "ppo"},
        "ppo_frozen_encoder": {"kind": "ppo", "pretrained": "supervised_mlp"},
        "dqn": {"kind": "dqn"},
    },
    "budgets": {
        "supervised": {"epochs": 1},
        "ppo": {"total_timesteps": 1024, "eval_freq": 512, "n_envs": 4, "ppo": {"n_steps": 128, "batch_size": 256}},
        "dqn": {"total_timesteps": 1024, "eval_freq": 512, "n_envs": 2, "dqn": {"learning_starts": 200}},
    },
    "costs": {"commissions": [0.0, 0.001], "slippages_bps": [0.0, 5.0], "break_even_scales": [0.0, 1.0, 2.0]},
    "statistics": {"bootstrap_resamples": 100},
}


class CountingExecutor(SerialExecutor):
    """Serial, but interrupted (like a kill) after ``stop_after`` finished jobs."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.done = 0

    def run(self, fn, jobs, *, on_result=None, progress=True, description="jobs"):
        def counted(job, result):
            on_result(job, result)
            self.done += 1
            if self.stop_after is not None and self.done >= self.stop_after:
                raise KeyboardInterrupt

        return super().run(fn, jobs, on_result=counted, progress=False, description=description)


@pytest.fixture(scope="module")
def config() -> BenchmarkConfig:
    return BenchmarkConfig.from_dict(SMALL)


@pytest.fixture(scope="module")
def finished(config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bench") / "run"
    report = run_benchmark(config, run_dir, executor=SerialExecutor(), progress=False)
    return run_dir, report


def test_the_report_has_every_policy_fold_and_seed(config, finished) -> None:
    run_dir, report = finished
    market = report["markets"]["eq"]
    assert set(market["policies"]) == {p.name for p in config.policies}
    assert len(market["folds"]) == 2 and market["n_trials"] == 3 + 5 * 2  # cash, b&h, sma: 1 run each; the rest 2 seeds
    for name, result in market["policies"].items():
        seeds = 2 if config.policy(name).seeded else 1
        assert result["n_seeds"] == seeds and len(result["per_seed"]) == seeds
        assert len(result["per_fold"]) == 2 * seeds  # every fold x seed, none dropped
        for key in ("log_return", "sharpe", "max_drawdown", "n_orders", "turnover", "costs_paid", "exposure"):
            assert np.isfinite(result["pooled"][key])
        for interval in result["intervals"].values():
            point, low, high = interval
            assert low <= point <= high
        dsr = result["deflated_sharpe"]["dsr"]
        assert dsr is None or 0.0 <= dsr <= 1.0
        assert 0.0 <= result["beat_buy_and_hold_share"] <= 1.0
        assert len(result["cost_sensitivity"]) == len(config.costs.levels())
    cash = market["policies"]["cash"]
    assert cash["pooled"]["log_return"] == 0.0 and cash["pooled"]["n_orders"] == 0
    bh = market["policies"]["buy_and_hold"]
    assert bh["intervals"]["excess_vs_buy_and_hold"] == [0.0, 0.0, 0.0]
    # costs only ever lower a policy's result
    sens = market["policies"]["random"]["cost_sensitivity"]
    assert sens["c0_s0"]["log_return"] > sens["c0.001_s5"]["log_return"]
    assert report["verdicts"] and all(v.startswith("eq: ") for v in report["verdicts"])
    for name in ("report.md", "report.json", "equity_eq.png", "sharpe_eq.png", "costs_eq.png", "trades_eq.png"):
        assert (run_dir / name).stat().st_size > 0, name
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["markets"]["eq"]["ranking"] == market["ranking"]
    assert "buy_and_hold" in (run_dir / "report.md").read_text()


def test_a_rerun_skips_every_job_and_rebuilds_the_same_report(config, finished) -> None:
    run_dir, report = finished
    again = run_benchmark(config, run_dir, executor=CountingExecutor(), progress=False)
    assert again["run"]["cached"] == again["run"]["jobs"] == report["run"]["jobs"] and again["run"]["ran"] == 0
    assert again["markets"] == report["markets"]


def test_a_killed_benchmark_resumes_where_it_stopped(config, finished, tmp_path) -> None:
    _, report = finished
    small = BenchmarkConfig.from_dict({**SMALL, "seeds": 1, "policies": {
        k: v for k, v in SMALL["policies"].items() if k in ("cash", "buy_and_hold", "random", "sma_crossover",
                                                          "supervised_mlp")}})
    total = len(plan(small)[1])
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(small, tmp_path / "run", executor=CountingExecutor(stop_after=5), progress=False)
    assert len(list((tmp_path / "run" / "jobs").iterdir())) == 5  # finished jobs kept, nothing half-written
    resumed = run_benchmark(small, tmp_path / "run", executor=CountingExecutor(), progress=False)
    assert resumed["run"]["cached"] == 5 and resumed["run"]["ran"] == total - 5
    # the same job gives the same numbers in either run
    a = resumed["markets"]["eq"]["policies"]["sma_crossover"]["pooled"]
    b = report["markets"]["eq"]["policies"]["sma_crossover"]["pooled"]
    assert a["log_return"] == pytest.approx(b["log_return"], rel=1e-12)


def test_another_config_in_the_same_run_folder_is_refused(finished) -> None:
    run_dir, _ = finished
    other = BenchmarkConfig.from_dict({**SMALL, "seeds": 1})
    with pytest.raises(FileExistsError, match="holds a benchmark of another config"):
        run_benchmark(other, run_dir, executor=CountingExecutor(), progress=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_same_jobs_run_on_a_dask_cluster_and_a_rerun_skips_them(finished, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    _, report = finished
    small = BenchmarkConfig.from_dict({**SMALL, "seeds": 1, "policies": {
        k: v for k, v in SMALL["policies"].items() if k in ("cash", "buy_and_hold", "sma_crossover", "supervised_mlp",
                                                          "ppo_frozen_encoder")}})
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        first = run_benchmark(small, tmp_path / "run", scheduler=cluster.scheduler_address, progress=False)
        assert first["run"]["ran"] == first["run"]["jobs"] == len(plan(small)[1])
        again = run_benchmark(small, tmp_path / "run", scheduler=cluster.scheduler_address, progress=False)
        assert again["run"]["ran"] == 0
    policies = first["markets"]["eq"]["policies"]
    for name in ("buy_and_hold", "sma_crossover"):
        assert policies[name]["pooled"]["log_return"] == pytest.approx(
            report["markets"]["eq"]["policies"][name]["pooled"]["log_return"], rel=1e-12)
    assert policies["ppo_frozen_encoder"]["per_fold"][0]["selection"]  # the dependent wave ran on the cluster


def test_the_shipped_config_and_its_quick_variant_load() -> None:
    from configs.loader import CONFIG_DIR

    config = BenchmarkConfig.from_yaml(CONFIG_DIR / "benchmark.yaml")
    assert config.hash() == BenchmarkConfig().hash()
    assert [m.name for m in config.markets] == ["equities_daily", "eurusd_hourly", "sp500_20", "crypto_hourly",
                                                "stocks_and_crypto_daily"]
    quick = config.with_quick()
    assert quick.folds.n_folds == 2 and quick.seeds == 1 and quick.budgets.ppo["total_timesteps"] < 20_000
    assert quick.budgets.portfolio_agent["total_timesteps"] < 20_000
    assert {p.kind for p in config.policies} == {"cash", "buy_and_hold", "random", "sma_crossover", "supervised",
                                                 "ppo", "dqn", "allocation", "portfolio_agent", "ensemble",
                                                 "agent_selector"}
    equities = next(m for m in config.markets if m.name == "equities_daily")
    options = {"supervised_mlp_money", "supervised_mlp_kelly", "supervised_mlp_vol_target", "supervised_mlp_volatility",
               "supervised_mlp_hmm", "supervised_mlp_drawdown", "ensemble_inverse_loss", "ensemble_stacking",
               "agent_selector"}
    assert options <= set(equities.policies)
    assert not any(m.runs(config.policy(name)) for m in config.markets if m is not equities for name in options)
    universe = next(m for m in config.markets if m.name == "sp500_20")
    assert len(universe.dataset.symbols) == 20 and universe.dataset.source == "skfolio"
    runs = {p.kind for p in config.policies if universe.runs(p)}
    assert {"allocation", "portfolio_agent", "buy_and_hold", "supervised", "ppo"} <= runs
    eurusd = next(m for m in config.markets if m.name == "eurusd_hourly")
    assert not any(eurusd.runs(p) for p in config.policies if p.kind in ("allocation", "portfolio_agent"))


@pytest.mark.parametrize(
    ("change", "match"),
    [({"datasets": {}}, r"unknown section\(s\) \['datasets'\]"),
     ({"policies": {"x": {"kind": "ppo", "pretrained": "nope"}, "cash": {}, "buy_and_hold": {}}}, "must name a 'supervised' policy"),
     ({"policies": {"cash": {}}}, "must include a 'buy_and_hold' policy"),
     ({"folds": {"scheme": "sliding"}}, "scheme='sliding' is not known"),
     ({"policies": {"cash": {}, "buy_and_hold": {}, "ew": {"kind": "allocation"}}}, "needs method: one of"),
     ({"policies": {"cash": {}, "buy_and_hold": {}, "ew": {"kind": "allocation", "method": "equal_weight",
                                                            "rebalance_every": 0}}}, r"rebalance_every=0 must be"),
     ({"policies": {"cash": {}, "buy_and_hold": {}, "a": {"kind": "portfolio_agent", "algo": "dqn"}}},
      "needs algo: one of"),
     ({"markets": {"eq": {"symbols": ["AAPL", "IBM"], "policies": ["cash", "nope"]}}}, r"names \['nope'\]"),
     ({"markets": {"eq": {"symbols": ["AAPL", "IBM"], "policies": ["cash"]}}}, "must include a 'buy_and_hold'")],
)
def test_bad_configs_are_named(change, match) -> None:
    with pytest.raises(ValueError, match=match):
        BenchmarkConfig.from_dict({**SMALL, **change})
