"""The diagnosis: PSI, KS, calibration and trade economics give known answers; ``experiments.diagnose`` writes its
report for a saved bundle, names a bad --policy in one line and shows its defaults in --help."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from agents.policy_loader import load_policy
from envs.backtest import backtest
from evaluation.diagnosis import (
    BREAK_EVEN_SCALES,
    PSI_EPSILON,
    bin_proportions,
    calibration,
    diagnose,
    expected_calibration_error,
    ks,
    psi,
    psi_cuts,
    trade_economics,
)
from experiments import diagnose as diagnose_cli
from experiments.common import run_cli
from features import DatasetConfig, LabelConfig, build_market_data, synthetic_bars
from features.preprocessing import Preprocessing
from sim.engine import Costs
from sim.trade_log import TRADE_FIELDS
from supervised.bundle import save_bundle
from supervised.models import ModelConfig
from supervised.trainer import TrainConfig, train_classifier

# ----------------------------------------------------------------------------------------------------
# PSI and KS


def test_psi_of_identical_samples_is_zero() -> None:
    sample = np.random.default_rng(0).normal(size=2_000)
    assert psi(sample, sample) == 0.0
    assert psi(sample, sample.copy(), bins=4) == 0.0


def test_psi_on_two_given_bins_equals_the_formula() -> None:
    expected = [0.0] * 6 + [1.0] * 4  # shares 0.6, 0.4 on either side of the cut 0.5
    actual = [0.0] * 3 + [1.0] * 7  # 0.3, 0.7
    formula = (0.3 - 0.6) * math.log(0.3 / 0.6) + (0.7 - 0.4) * math.log(0.7 / 0.4)
    assert psi(expected, actual, bins=[0.5]) == pytest.approx(formula, rel=1e-12)
    assert formula == pytest.approx(0.3 * math.log(3.5), rel=1e-12)


def test_psi_on_four_train_quantile_bins_equals_the_formula() -> None:
    expected = np.arange(8.0)  # quartile cuts 1.75, 3.5, 5.25: bins {0,1} {2,3} {4,5} {6,7}, 0.25 each
    actual = [0.0, 0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 6.0]  # 0.5, 0.125, 0.125, 0.25
    e, a = np.full(4, 0.25), np.array([0.5, 0.125, 0.125, 0.25])
    assert psi(expected, actual, bins=4) == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)
    assert psi(expected, actual, bins=4) == pytest.approx(0.5 * math.log(2.0), rel=1e-12)


def test_psi_gives_an_empty_bin_the_documented_epsilon() -> None:
    half, full = [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]  # full's first bin is empty
    formula = (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert psi(half, full, bins=[0.5]) == pytest.approx(formula, rel=1e-12)
    assert psi(full, half, bins=[0.5]) == pytest.approx(formula, rel=1e-12)  # empty in the expected sample


def test_a_value_on_a_cut_falls_in_the_bin_above_it() -> None:
    assert bin_proportions([0.0, 1.0, 2.0, 3.0], [1.0]).tolist() == [0.25, 0.75]
    assert bin_proportions([0.0, 1.0, 2.0, 3.0], psi_cuts([0.0, 1.0, 2.0, 3.0], bins=2)).tolist() == [0.5, 0.5]


def test_psi_of_a_shifted_normal_is_a_major_shift() -> None:
    rng = np.random.default_rng(1)
    train, shifted = rng.normal(0.0, 1.0, 5_000), rng.normal(1.0, 1.0, 5_000)
    assert psi(train, shifted) > 0.25
    assert psi(train, rng.normal(0.0, 1.0, 5_000)) < 0.02  # the same law: noise only


def test_psi_and_ks_refuse_non_finite_values_naming_the_sample() -> None:
    with pytest.raises(ValueError, match="actual holds 1 non-finite value"):
        psi([0.0, 1.0, 2.0], [0.0, np.nan])
    with pytest.raises(ValueError, match="expected is empty"):
        ks([], [1.0])


def test_ks_equals_scipy_and_is_zero_on_identical_samples() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=200)
    reference = ks_2samp(a, b)
    assert ks(a, b) == {"statistic": float(reference.statistic), "pvalue": float(reference.pvalue)}
    assert ks(a, a.copy())["statistic"] == 0.0


# ----------------------------------------------------------------------------------------------------
# Calibration


def test_a_perfectly_calibrated_predictor_has_a_small_ece_and_the_expected_brier() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 1.0, 200_000)
    y = (rng.uniform(size=p.size) < p).astype(float)  # drawn with the predicted probability
    report = calibration(y, p, threshold=0.5)
    assert report["ece"] < 0.02
    assert report["brier"] == pytest.approx(float(np.mean(p * (1 - p))), abs=0.003)
    curve = report["curve"]
    assert np.allclose(curve["fraction_positive"], curve["mean_predicted"], atol=0.02)


def test_a_constant_09_predictor_on_a_10_percent_base_rate_has_ece_08() -> None:
    y = np.zeros(1_000)
    y[:100] = 1.0
    p = np.full(1_000, 0.9)
    assert expected_calibration_error(y, p) == pytest.approx(0.8, abs=1e-12)
    report = calibration(y, p, threshold=0.5)
    assert report["ece"] == pytest.approx(0.8, abs=1e-12)
    assert report["brier"] == pytest.approx(0.1 * 0.1**2 + 0.9 * 0.9**2, abs=1e-12)
    assert (report["precision"], report["recall"]) == (pytest.approx(0.1), 1.0)
    assert report["f1"] == pytest.approx(2 * 0.1 / 1.1)


def test_calibration_precision_recall_f1_at_the_threshold() -> None:
    y = np.array([1, 1, 0, 0, 1, 0], dtype=float)
    p = np.array([0.9, 0.6, 0.7, 0.2, 0.3, 0.1])
    report = calibration(y, p, threshold=0.5)  # predicted 1 at 0.9, 0.6, 0.7: tp 2, fp 1, fn 1
    assert (report["precision"], report["recall"], report["f1"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3),
                                                                      pytest.approx(2 / 3))
    assert report["predicted_positive_rate"] == 0.5


def test_calibration_refuses_labels_that_are_not_0_or_1() -> None:
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        calibration([0.0, 0.5], [0.1, 0.2])


# ----------------------------------------------------------------------------------------------------
# Trade economics


def trade_log(rows: list[dict]) -> dict[str, np.ndarray]:
    return {name: np.array([row.get(name, 0.0) for row in rows], dtype=float) for name in TRADE_FIELDS}


HAND_TRADES = trade_log([
    # notional 1000: gross move +3%, costs 4
    {"size": 10, "entry_price": 100, "exit_price": 103, "gross_pnl": 30, "costs": 4, "net_pnl": 26, "bars_held": 3},
    # notional 1000: gross move +0.3%, below a 0.4% round trip
    {"size": 5, "entry_price": 200, "exit_price": 200.6, "gross_pnl": 3, "costs": 4, "net_pnl": -1, "bars_held": 1},
    # a short, notional 500: gross move -2%
    {"size": -10, "entry_price": 50, "exit_price": 51, "gross_pnl": -10, "costs": 2, "net_pnl": -12, "bars_held": 10},
])


def test_trade_economics_of_a_hand_built_log() -> None:
    report = trade_economics(HAND_TRADES, cost_per_side=0.002)
    assert report["n_trades"] == 3 and report["round_trip_cost"] == 0.004
    assert report["share_not_covering_round_trip"] == pytest.approx(2 / 3)
    assert report["share_net_negative"] == pytest.approx(2 / 3)
    assert (report["gross_pnl"], report["costs"], report["net_pnl"]) == (23.0, 10.0, 13.0)
    assert report["mean_gross_move"] == pytest.approx((0.03 + 0.003 - 0.02) / 3)
    assert report["mean_cost"] == pytest.approx((0.004 + 0.004 + 0.004) / 3)
    assert report["costs_over_gross"] == pytest.approx(10 / 23)
    assert report["bars_held"]["q50"] == 3.0 and report["bars_held"]["mean"] == pytest.approx(14 / 3)
    # net P&L 23 - 10 * (c / 0.002) is 0 at c = 0.002 * 23 / 10
    assert report["break_even_cost_per_side"] == pytest.approx(0.0046, rel=1e-12)
    assert report["break_even_note"] == "46.0 bps per side"


def test_trade_economics_break_even_when_the_trades_lose_after_costs() -> None:
    losing = trade_log([{"size": 1, "entry_price": 100, "gross_pnl": 1, "costs": 4, "net_pnl": -3, "bars_held": 2}])
    assert trade_economics(losing, 0.002)["break_even_cost_per_side"] == pytest.approx(0.0005, rel=1e-12)
    gross_loss = trade_log([{"size": 1, "entry_price": 100, "gross_pnl": -1, "costs": 1, "net_pnl": -2, "bars_held": 2}])
    report = trade_economics(gross_loss, 0.002)
    assert report["break_even_cost_per_side"] is None and "negative even at zero cost" in report["break_even_note"]


def test_trade_economics_of_no_trade_and_of_a_bad_log() -> None:
    assert trade_economics(trade_log([]), 0.001)["break_even_note"] == "n/a (no closed trade)"
    broken = dict(HAND_TRADES)
    del broken["costs"]
    with pytest.raises(ValueError, match=r"trade log lacks column\(s\) \['costs'\]"):
        trade_economics(broken, 0.001)
    broken = {**HAND_TRADES, "gross_pnl": np.array([1.0, np.nan, 2.0])}
    with pytest.raises(ValueError, match="'gross_pnl' is not finite at trade 1"):
        trade_economics(broken, 0.001)


# ----------------------------------------------------------------------------------------------------
# diagnose() and the command line on a tiny bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny dataset and a supervised bundle trained on it for one epoch (about 2 s)."""
    folder = tmp_path_factory.mktemp("diagnose")
    bars = {"SYN": synthetic_bars(600, seed=0), "SYN2": synthetic_bars(600, seed=1)}
    data = build_market_data(bars, DatasetConfig(window=8, labels=LabelConfig(profit=0.02, stop=0.02, horizon=4)))
    data.save(folder / "dataset")
    trained = train_classifier(data, ModelConfig(kind="mlp", hidden_size=16),
                               TrainConfig(epochs=1, batch_size=128, num_threads=1, seed=0), progress=False)
    save_bundle(folder / "sup" / "model", trained.classifier, trained.model_config,
                preprocessing=Preprocessing.of(data), label=data.label, threshold=0.3, dataset_hashes=data.hashes)
    return folder, data


def test_diagnose_a_bundle_reports_shift_calibration_and_economics(tiny) -> None:
    folder, data = tiny
    result = diagnose(str(folder / "sup" / "model"), data)
    policy = load_policy(str(folder / "sup" / "model"), data)
    assert result.kind == "supervised" and result.score_kind == "probability"
    assert len(result.shift) == len(data.feature_names)
    largest = [max(row["psi_validation"], row["psi_test"]) for row in result.shift]
    assert largest == sorted(largest, reverse=True)
    for split in ("train", "validation", "test"):
        rows = data.sample_indices(split)
        assert result.base_rates[split] == {"n": len(rows), "positive_rate": pytest.approx(float(data.labels[rows].mean()))}
        assert result.calibration[split]["n"] == len(rows) and result.calibration[split]["threshold"] == 0.3
        economics = result.economics[split]
        assert economics["net_pnl"] == pytest.approx(economics["gross_pnl"] - economics["costs"])
        assert economics["cost_per_side"] == pytest.approx(0.0015)  # the backtester's 0.10% + 5 bps
        plain = [backtest(policy, data, split, Costs(), symbol=s) for s in data.symbols]  # at the base costs
        assert economics["log_return"] == pytest.approx(np.mean([np.log(r.equity[-1] / r.equity[0]) for r in plain]))
        assert economics["n_trades"] == sum(len(r.trades["size"]) for r in plain)
        assert economics["costs_paid"] == pytest.approx(sum(r.metrics["costs_paid"] for r in plain))
        assert economics["annual_turnover"] == pytest.approx(np.mean([r.metrics["annual_turnover"] for r in plain]))
        assert economics["annual_cost_drag"] == pytest.approx(economics["annual_turnover"] * 0.0015)
        sweep = economics["cost_sweep"]
        assert sweep["cost_per_side_bps"] == pytest.approx([15.0 * k for k in BREAK_EVEN_SCALES])
        assert sweep["log_return"][BREAK_EVEN_SCALES.index(1.0)] == economics["log_return"]
        if economics["break_even_bps_per_side"] is not None:  # the sweep's net log return crosses 0 there
            assert np.interp(economics["break_even_bps_per_side"], sweep["cost_per_side_bps"],
                             sweep["log_return"]) == pytest.approx(0.0, abs=1e-12)
    assert any(result.economics[s]["break_even_bps_per_side"] is not None for s in result.economics)
    assert result.scores["train"]["psi_vs_train"] == 0.0
    json.dumps(result.to_json(), allow_nan=False)


def test_diagnose_a_baseline_reports_its_exposure(tiny) -> None:
    _, data = tiny
    result = diagnose("buy_and_hold", data)
    assert result.kind == "baseline" and result.score_kind == "exposure" and result.calibration is None
    assert result.scores["test"]["share_long"] == 1.0  # held all along
    assert result.economics["test"]["n_trades"] == 0  # never closed: no round trip


def test_the_cli_writes_the_report_of_a_bundle(tiny, tmp_path) -> None:
    folder, _ = tiny
    out = tmp_path / "report"
    result = diagnose_cli.main(["--policy", str(folder / "sup"), "--dataset", str(folder / "dataset"),
                                "--out", str(out), "--no-progress", "--commission", "0.0005"])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["calibration.png", "diagnosis.json", "diagnosis.md", "economics.png", "scores.png", "shift.png"]
    saved = json.loads((out / "diagnosis.json").read_text())
    assert saved["policy"].endswith("model") and saved["kind"] == "supervised"
    assert saved["costs"]["cost_per_side"] == pytest.approx(0.0005 + 0.0005)  # --commission, default slippage
    assert saved["calibration"]["test"]["ece"] == pytest.approx(result.calibration["test"]["ece"])
    text = (out / "diagnosis.md").read_text()
    for heading in ("## 1. Distribution shift", "## 2. Calibration", "## 3. Where the money goes"):
        assert heading in text
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in names if name.endswith(".png"))
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left


def test_the_cli_diagnoses_a_saved_agent_at_its_training_costs(tiny, tmp_path) -> None:
    from agents.config import AgentConfig
    from agents.training import train_agent

    folder, data = tiny
    config = AgentConfig.from_dict({"total_timesteps": 256, "n_envs": 2, "eval_freq": 256,
                                    "ppo": {"n_steps": 128, "batch_size": 128}, "min_tstat": -1e9,
                                    "min_improvement": -1e9,
                                    "env": {"episode_length": 64, "commission": 0.0005, "slippage": 2.0}})
    train_agent(config, data, tmp_path / "rl", progress=False)
    result = diagnose_cli.main(["--policy", str(tmp_path / "rl"), "--dataset", str(folder / "dataset"),
                                "--out", str(tmp_path / "report"), "--no-progress"])
    assert result.kind == "agent" and result.score_kind == "exposure" and result.calibration is None
    assert result.costs["cost_per_side"] == pytest.approx(0.0005 + 0.0002) and "agent.json" in result.costs["source"]
    shares = [result.scores["test"][k] for k in ("share_short", "share_part_short", "share_flat", "share_part_long",
                                                 "share_long")]
    assert sum(shares) == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "diagnosis.json", "diagnosis.md", "economics.png", "scores.png", "shift.png"]


def test_an_agents_own_training_costs_are_the_default_and_flags_override_them(tmp_path) -> None:
    agent = tmp_path / "best"
    agent.mkdir()
    env = {"commission": 0.0002, "slippage": 3.0, "fixed_fee": 1.0, "borrow_rate": 0.0001}
    (agent / "agent.json").write_text(json.dumps({"config": {"env": env}}))
    costs, source = diagnose_cli.resolve_costs(str(agent), None, None, None)
    assert (costs.commission, costs.slippage.bps, costs.fixed_fee, costs.borrow_rate) == (0.0002, 3.0, 1.0, 0.0001)
    assert "agent.json" in source
    costs, source = diagnose_cli.resolve_costs(str(agent), 0.001, None, None)
    assert (costs.commission, costs.slippage.bps) == (0.001, 3.0) and source.startswith("the command line, else")
    costs, source = diagnose_cli.resolve_costs(str(tmp_path), None, None, None)  # a bundle records none
    assert (costs.commission, costs.slippage.bps, costs.fixed_fee) == (0.001, 5.0, 0.0)
    (agent / "agent.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"agent.json: cannot read the agent's costs at config.env"):
        diagnose_cli.resolve_costs(str(agent), None, None, None)


def test_a_bad_policy_path_is_one_line_naming_it(tmp_path, capsys) -> None:
    missing = tmp_path / "no_such_run"
    assert run_cli(diagnose_cli.main, ["--policy", str(missing), "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert not (tmp_path / "out").exists()


def test_help_shows_the_defaults(capsys) -> None:
    assert run_cli(diagnose_cli.main, ["--help"]) == 0
    out = capsys.readouterr().out
    for default in ("(default: runs)", "(default: 10)", "(default: 0)", "0.001", "fixed 5 bps", "--debug"):
        assert default in out
