"""Issue 24's options in the benchmark: thresholds chosen for money, sized positions, risk overlays, ensembles
of supervised members and the per-fold agent selector, on a tiny benchmark (serial, one epoch)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from configs.loader import ConfigError
from evaluation.benchmark import job_waves, plan, run_benchmark
from evaluation.config import BenchmarkConfig, PolicySpec, policy_settings
from evaluation.executor import SerialExecutor
from evaluation.jobs import JobCache
from evaluation.runner import run_job

MLP = {"kind": "supervised", "model": "mlp", "model_settings": {"hidden_sizes": [8]}}
OPTIONS = {
    "markets": {"eq": {"symbols": ["AAPL", "IBM"], "start": "2008-01-01", "window": 8}},
    "folds": {"n_folds": 2, "test_share": 0.3},
    "seeds": 1,
    "policies": {
        "cash": {}, "buy_and_hold": {},
        "mlp": MLP,
        "mlp_small": {**MLP, "model_settings": {"hidden_sizes": [4]}},
        "mlp_money": {**MLP, "thresholds": "net_log_return", "min_holding": [0, 2]},
        "mlp_kelly": {**MLP, "sizing": "kelly"},
        "mlp_vol_target": {**MLP, "sizing": "vol_target", "sizing_options": {"target_volatility": 0.005}},
        "mlp_hmm": {**MLP, "overlay": {"kind": "hmm"}},
        # a moving average longer than the data is never defined: risk off on every bar
        "held_never": {"kind": "buy_and_hold", "overlay": {"kind": "index_trend", "window": 100_000,
                                                           "index_symbol": "IBM"}},
        "ensemble": {"kind": "ensemble", "members": ["mlp", "mlp_small"], "weights": "inverse_loss"},
        "stacked": {"kind": "ensemble", "members": ["mlp", "mlp_small"], "weights": "stacking",
                    "thresholds": "t_stat"},
        # the best member listed last, and one tied with it (the ensemble trades as its first member here)
        "selector": {"kind": "agent_selector", "members": ["mlp_money", "ensemble", "mlp"]},
    },
    "budgets": {"supervised": {"epochs": 1}},
    "costs": {"commissions": [0.0, 0.001], "slippages_bps": [0.0, 5.0], "break_even_scales": [0.0, 1.0]},
    "statistics": {"bootstrap_resamples": 50},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config = BenchmarkConfig.from_dict(OPTIONS)
    run_dir = tmp_path_factory.mktemp("options") / "run"
    report = run_benchmark(config, run_dir, executor=SerialExecutor(), progress=False)
    _, jobs = plan(config)
    cache = JobCache(run_dir / "jobs")
    return config, run_dir, report, jobs, cache


def _job(jobs, policy: str, fold: int = 0):
    return next(j for j in jobs if j.policy == policy and j.fold == fold)


def _orders(result) -> float:
    return sum(m["n_orders"] for level in result.meta["scores"].values() for m in level["per_symbol"].values())


def test_a_money_threshold_choice_is_recorded_and_named_in_its_selection(finished) -> None:
    _, _, report, jobs, cache = finished
    for fold in (0, 1):
        meta = cache.load(_job(jobs, "mlp_money", fold).key).meta
        choice = meta["threshold_choice"]
        assert choice["objective"] == "net_log_return" and choice["split"] == "validation"
        assert {row["min_holding"] for row in choice["table"]} == {0, 2}  # the grid the config gave
        assert choice["costs"].startswith("commission 0.1000%")  # the base costs
        assert "by validation net_log_return after costs" in meta["selection"]
        if not choice["stay_in_cash"]:
            assert f"entry {choice['entry_threshold']:g}" in meta["selection"]
    assert any("net_log_return" in s for s in report["markets"]["eq"]["policies"]["mlp_money"]["selection"])
    f1 = cache.load(_job(jobs, "mlp").key).meta["threshold_choice"]
    assert f1["objective"] == "f1" and f1["sizing"] == "all_in" and f1["min_holding"] == 0


def test_sized_policies_record_their_sizing_and_hold_fractions_of_equity(finished) -> None:
    _, _, _, jobs, cache = finished
    kelly = cache.load(_job(jobs, "mlp_kelly").key).meta["threshold_choice"]
    assert kelly["sizing"] == "kelly" and kelly["calibrator"]["method"] == "isotonic"  # calibrated on validation
    sized = cache.load(_job(jobs, "mlp_vol_target").key)
    assert sized.meta["threshold_choice"]["sizing_options"] == {"target_volatility": 0.005}
    positions = np.concatenate([v for k, v in sized.arrays.items() if k.endswith("|position")])
    assert ((positions > 0.01) & (positions < 0.99)).any()  # a vol-target size, not all in


def test_an_overlay_that_is_always_risk_off_gives_no_orders(finished) -> None:
    _, _, report, jobs, cache = finished
    for fold in (0, 1):
        result = cache.load(_job(jobs, "held_never", fold).key)
        assert result.meta["overlay"]["risk_on_test_share"] == 0.0
        assert _orders(result) == 0
    assert report["markets"]["eq"]["policies"]["buy_and_hold"]["pooled"]["n_orders"] > 0


def test_an_overlay_is_fitted_on_train_rows_and_recorded(finished) -> None:
    _, _, _, jobs, cache = finished
    meta = cache.load(_job(jobs, "mlp_hmm").key).meta
    assert meta["overlay"]["config"]["kind"] == "hmm"
    assert set(meta["overlay"]["fitted"]) == {"AAPL", "IBM"}  # each traded symbol's own closes
    assert "overlay HMM" in meta["selection"] and "fitted on train rows" in meta["selection"]


def test_the_ensemble_depends_on_its_members_of_the_same_fold_and_seed(finished) -> None:
    _, _, _, jobs, cache = finished
    waves = job_waves(jobs)
    for fold in (0, 1):
        job = _job(jobs, "ensemble", fold)
        members = (_job(jobs, "mlp", fold).key, _job(jobs, "mlp_small", fold).key)
        assert job.depends_on == members and job.spec["depends_on"] == list(members)
        assert waves[job.key] == 1 and waves[_job(jobs, "selector", fold).key] == 2
        record = cache.load(job.key).meta["ensemble"]
        assert record["members"] == ["mlp", "mlp_small"] and record["weighting"] == "inverse_loss"
        assert sum(record["weights"]) == pytest.approx(1.0) and len(record["validation_log_loss"]) == 2
    stacked = cache.load(_job(jobs, "stacked").key).meta
    assert len(stacked["ensemble"]["stacking"]["coef"]) == 2 and stacked["threshold_choice"]["objective"] == "t_stat"


def test_a_resumed_run_reruns_only_the_missing_ensemble_on_its_cached_members(finished) -> None:
    config, run_dir, _, jobs, cache = finished
    ensembles = [j for j in jobs if j.policy == "ensemble"]
    before = {j.key: cache.load(j.key).meta for j in ensembles}
    for job in ensembles:
        shutil.rmtree(cache.path(job.key))
    report = run_benchmark(config, run_dir, executor=SerialExecutor(), progress=False)
    assert report["run"]["ran"] == len(ensembles)  # the members (and the selector over them) are reused
    for job in ensembles:
        after = cache.load(job.key).meta
        assert after["ensemble"] == before[job.key]["ensemble"] and after["scores"] == before[job.key]["scores"]


def test_the_selector_trades_each_fold_with_the_member_of_best_validation_sharpe(finished) -> None:
    _, _, report, jobs, cache = finished
    members = ["mlp_money", "ensemble", "mlp"]
    lines = report["markets"]["eq"]["policies"]["selector"]["selection"]
    for fold in (0, 1):
        sharpes = {m: cache.load(_job(jobs, m, fold).key).meta["validation_sharpe"] for m in members}
        assert all(np.isfinite(v) for v in sharpes.values())
        best = max(members, key=lambda m: (sharpes[m], -members.index(m)))  # ties: the first listed
        expected = best if sharpes[best] > 0 else None
        selector = cache.load(_job(jobs, "selector", fold).key)
        assert selector.meta["selected"] == expected
        assert selector.meta["validation_sharpes"] == sharpes
        assert any(line.startswith(f"fold {fold}: {expected or 'cash'}") for line in lines)
        if expected is not None:
            chosen = cache.load(_job(jobs, expected, fold).key)
            assert selector.arrays.keys() == chosen.arrays.keys()
            for name, values in chosen.arrays.items():
                np.testing.assert_array_equal(selector.arrays[name], values)


def test_members_of_different_datasets_are_one_line_error(finished) -> None:
    """Bundles of two folds have scalers fitted on different train rows: not one dataset."""
    _, _, _, jobs, cache = finished
    job = _job(jobs, "ensemble", 0)
    inputs = (cache.load(_job(jobs, "mlp", 0).key), cache.load(_job(jobs, "mlp_small", 1).key))
    with pytest.raises(ValueError, match="policies.ensemble: .*different datasets") as error:
        run_job(dataclasses.replace(job, inputs=inputs))
    assert "\n" not in str(error.value)


def test_a_stay_in_cash_choice_gives_no_orders(tmp_path) -> None:
    """At 20% per side nothing beats cash on validation: the choice is cash, said so, with 0 orders."""
    config = BenchmarkConfig.from_dict({
        **OPTIONS, "policies": {"cash": {}, "buy_and_hold": {}, "mlp_money": OPTIONS["policies"]["mlp_money"]},
        "costs": {"commission": 0.2, "commissions": [0.2], "slippages_bps": [5.0], "break_even_scales": [1.0]},
    })
    run_benchmark(config, tmp_path / "run", executor=SerialExecutor(), progress=False)
    cache = JobCache(tmp_path / "run" / "jobs")
    jobs = [j for j in plan(config)[1] if j.policy == "mlp_money"]
    assert len(jobs) == 2
    for job in jobs:
        result = cache.load(job.key)
        assert result.meta["threshold_choice"]["stay_in_cash"] is True
        assert result.meta["selection"].startswith("by validation net_log_return after costs: stay in cash")
        assert _orders(result) == 0 and result.meta["validation_sharpe"] == 0.0


def test_a_min_hold_above_the_label_horizon_is_refused_before_any_job(tmp_path) -> None:
    config = BenchmarkConfig.from_dict(_with({"long": {**MLP, "min_holding": 9}}))  # the labels' horizon is 8
    with pytest.raises(ValueError, match=r"policies\.long\.min_holding=9 exceeds the label horizon of market 'eq'"):
        run_benchmark(config, tmp_path / "run", executor=SerialExecutor(), progress=False)
    assert not (tmp_path / "run").exists()


def test_policies_without_options_keep_their_settings_and_job_keys() -> None:
    settings = policy_settings(PolicySpec("s", "supervised", model="mlp"))
    assert set(settings) == {"kind", "model", "pretrained", "init_from_classifier", "agent", "model_settings"}
    money = policy_settings(PolicySpec("m", "supervised", model="mlp", thresholds="t_stat", min_holding=(1, 2)))
    assert money["thresholds"] == "t_stat" and money["min_holding"] == [1, 2]


def _with(policies: dict, markets: dict | None = None) -> dict:
    base = {"cash": {}, "buy_and_hold": {}, "mlp": MLP}
    return {**OPTIONS, "policies": {**base, **policies}, **({"markets": markets} if markets else {})}


@pytest.mark.parametrize(("config", "match"), [
    (_with({"bad": {"kind": "ppo", "sizing": "kelly"}}), r"policies\.bad: thresholds/sizing.* not 'ppo'"),
    (_with({"bad": {**MLP, "thresholds": "money"}}), r"policies\.bad\.thresholds='money' is not known"),
    (_with({"bad": {**MLP, "sizing": "half"}}), r"policies\.bad\.sizing='half' is not known"),
    (_with({"bad": {**MLP, "sizing": "vol_target"}}), r"policies\.bad: sizing 'vol_target' needs .*target_volatility"),
    (_with({"bad": {**MLP, "sizing": "kelly", "sizing_options": {"target_volatility": 0.01}}}),
     r"policies\.bad\.sizing_options: \['target_volatility'\] do not apply to sizing 'kelly'"),
    (_with({"bad": {**MLP, "sizing": "kelly", "sizing_options": {"kelly_fraction": -1}}}),
     r"policies\.bad\.sizing_options\.kelly_fraction=-1 must be a number > 0"),
    (_with({"bad": {**MLP, "min_holding": [0, 2]}}), r"policies\.bad\.min_holding=\[0, 2\]: a list is the grid"),
    (_with({"bad": {**MLP, "min_holding": -1}}), r"policies\.bad\.min_holding=-1 must be whole numbers"),
    (_with({"bad": {"kind": "cash", "overlay": {"kind": "hmm"}}}), r"policies\.bad\.overlay: .* not kind 'cash'"),
    (_with({"bad": {"kind": "allocation", "method": "equal_weight", "overlay": {"kind": "hmm"}}}),
     r"policies\.bad\.overlay: .* not kind 'allocation'"),
    (_with({"bad": {"kind": "buy_and_hold", "overlay": {"kind": "moon"}}}), r"policies\.bad\.overlay: .*'moon'"),
    (_with({"bad": {"kind": "buy_and_hold", "overlay": {"kind": "hmm", "windows": 3}}}),
     r"policies\.bad\.overlay: unknown key\(s\) \['windows'\]"),
    (_with({"bad": {"kind": "buy_and_hold", "overlay": {"kind": "volatility", "quantile": 2}}}),
     r"policies\.bad\.overlay: OverlayConfig\.quantile=2"),
    (_with({"bad": {"kind": "buy_and_hold", "overlay": {"kind": "index_trend", "index_symbol": "SPY"}}}),
     r"policies\.bad\.overlay\.index_symbol='SPY' is not a symbol of market 'eq'"),
    (_with({"bad": {"kind": "ensemble", "weights": "equal"}}), r"policies\.bad: kind 'ensemble' needs members"),
    (_with({"bad": {"kind": "ensemble", "members": ["mlp"]}}), r"policies\.bad: kind 'ensemble' needs weights"),
    (_with({"bad": {"kind": "ensemble", "members": ["mlp", "cash"], "weights": "equal"}}),
     r"policies\.bad\.members: 'cash' \(cash\) must name a policy of kind supervised"),
    (_with({"bad": {"kind": "agent_selector", "members": ["mlp", "nope"]}}),
     r"policies\.bad\.members: 'nope' \(not a policy of this benchmark\)"),
    (_with({"bad": {"kind": "agent_selector", "members": ["mlp"], "weights": "equal"}}),
     r"policies\.bad: weights apply to kind 'ensemble' only"),
    (_with({"bad": {**MLP, "members": ["mlp"]}}), r"policies\.bad: members/weights apply to kinds ensemble"),
    (_with({"bad": {"kind": "ensemble", "members": ["mlp"], "weights": "equal"}},
           {"eq": {"symbols": ["AAPL"], "policies": ["cash", "buy_and_hold", "bad"]}}),
     r"markets\.eq\.policies has 'bad', whose members include \['mlp'\]"),
])
def test_a_bad_option_is_a_one_line_error_naming_the_policy(config: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        BenchmarkConfig.from_dict(config)
    assert "\n" not in str(error.value)
