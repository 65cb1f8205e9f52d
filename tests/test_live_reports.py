"""Paper-run reports and parity with the simulator, read from a run's journal after the fact (live/parity.py,
live/report.py, experiments/paper_report.py).

A ``--broker sim`` replay prices every fill as the simulator does, so its parity difference is exactly zero; fills
the fake Alpaca server makes at chosen prices differ from the model by the amount computed here by hand.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import yaml

from live import Journal, PaperConfig
from live.parity import drift_alerts, parity_report
from live.report import WHOLE_RUN, day_period, report_facts, send_summary, summary_line
from sim.engine import Costs

from experiments import paper_report
from experiments.common import run_cli
from live_helpers import fake, hand_journal, make_loop, mean_reversion_replay, server, until  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")]

SYMBOLS = ["SYN", "SYN2"]
SIM_CONFIG = {"risk": {"max_daily_loss": 0.99, "max_orders_per_day": 1000}, "alerts": {"daily_loss": 0.99},
              "costs": {"commission": 0.001, "fixed_fee": 1.0, "slippage": {"model": "volatility", "k": 0.2, "window": 10}}}
SECTIONS = ["## Summary", "## Equity against buy-and-hold", "## Orders", "## Fills", "## Costs",
            "## Parity with the simulator", "## Risk-limit events", "## Alerts", "## Retraining decisions"]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """A ``--broker sim`` replay of a mean-reversion policy on two synthetic symbols (bar-reading slippage and a
    fixed fee, so every part of the model price is used): its folder, config file and bars."""
    config = PaperConfig.from_dict(SIM_CONFIG)
    run_dir = tmp_path_factory.mktemp("runs") / "replay"
    broker, journal = mean_reversion_replay(run_dir, 400, config, tuple(SYMBOLS))
    journal.close()
    config_path = run_dir / "paper.yaml"
    config_path.write_text(yaml.safe_dump(SIM_CONFIG))
    broker.data.save(run_dir.parent / "dataset")  # the bars the volatility model reads, for the entry point's --dataset
    return run_dir, config, {s: broker.history(s) for s in SYMBOLS}, config_path


def test_a_sim_replay_differs_from_the_simulator_by_exactly_zero(sim_run):
    run_dir, config, bars, _ = sim_run
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    parity = parity_report(journal, config.costs.costs(), bars)
    assert len(parity.fills) == len(journal.fills()) > 20
    assert [f.model_price for f in parity.fills] == [f.price for f in parity.fills]  # to the bit
    assert [f.model_commission for f in parity.fills] == [f.commission for f in parity.fills]
    assert parity.equity_difference == 0.0 and parity.price_difference == 0.0 and parity.commission_difference == 0.0
    facts = report_facts(journal, config.costs.costs(), WHOLE_RUN, bars)
    assert facts.simulator.tolist() == facts.equity.tolist()  # the backtest's expectation is the replay, to the bit
    assert set(parity.symbols) == set(SYMBOLS)
    assert all(s.difference == 0.0 and abs(s.excess_bps) < 1e-9 for s in parity.symbols.values())
    assert drift_alerts(parity, 0.0) == []
    journal.close()


def test_fills_at_chosen_prices_on_the_fake_alpaca_differ_by_the_hand_computed_amount(fake, tmp_path):
    fake.price_overrides["AAPL"] = 100.0  # the latest trade: every order's reference price
    fake.fill_prices["AAPL"] = {"buy": 100.2, "sell": 99.7}
    loop = make_loop(fake, tmp_path)
    loop.run(until=until(fake, 8))
    orders = [o for o in fake.order_list() if float(o["filled_qty"]) > 0]
    assert {o["side"] for o in orders} == {"buy", "sell"}
    # model (5 bps, 0.10% commission, Alpaca charges none): a buy at 100.05, a sell at 99.95
    expected = 0.0
    for order in orders:
        qty = float(order["filled_qty"])
        if order["side"] == "buy":
            expected += -(100.2 - 100.05) * qty + 0.001 * qty * 100.05
        else:
            expected += -(99.7 - 99.95) * -qty + 0.001 * qty * 99.95
    parity = parity_report(loop.journal, Costs(commission=0.001, slippage=5.0))
    assert parity.equity_difference == pytest.approx(expected, rel=1e-12)
    assert parity.equity_difference < 0  # paying 20-30 bps against a model of 5
    # the backtest's expectation: the same equity with the simulator's fills, apart from the first fill's bar on
    facts = report_facts(loop.journal, Costs(commission=0.001, slippage=5.0), WHOLE_RUN)
    gap = facts.simulator - facts.equity
    first = min(pd.Timestamp(f.bar_time) for f in parity.fills)
    assert (gap[gap.index < first] == 0.0).all() and len(gap[gap.index < first]) >= 1
    assert gap[first] == pytest.approx(-sum(f.difference for f in parity.fills if pd.Timestamp(f.bar_time) == first),
                                       rel=1e-12) != 0.0  # from the fill's own bar on
    assert gap.iloc[-1] == pytest.approx(-expected, rel=1e-12)
    assert facts.simulator_return > facts.equity_return
    assert "backtest expectation" in summary_line(facts)
    summary = parity.symbols["AAPL"]
    buys = sum(o["side"] == "buy" for o in orders)
    assert summary.count == len(orders)
    assert summary.mean_bps == pytest.approx((20.0 * buys + 30.0 * (len(orders) - buys)) / len(orders), rel=1e-9)
    assert summary.model_mean_bps == pytest.approx(5.0, rel=1e-12)


def test_a_drift_alert_fires_only_when_mean_slippage_exceeds_the_model_by_more_than_the_threshold(tmp_path):
    # slippage 10, 20 and 30 bps against a 5 bps model: mean 20, excess 15 bps
    journal = hand_journal(tmp_path, [("buy", 10.0, 100.0, 100.1), ("sell", 10.0, 100.0, 99.8),
                                      ("buy", 10.0, 100.0, 100.3)])
    parity = parity_report(journal, Costs(commission=0.0, slippage=5.0))
    summary = parity.symbols["SYN"]
    assert (summary.mean_bps, summary.median_bps, summary.excess_bps) == pytest.approx((20.0, 20.0, 15.0))
    assert summary.p90_bps == pytest.approx(28.0)
    fired = drift_alerts(parity, 14.0)
    assert [(a["kind"], a["symbol"]) for a in fired] == [("slippage_drift", "SYN")]
    assert "15.00 bps" in fired[0]["message"]
    assert drift_alerts(parity, 16.0) == []
    with pytest.raises(ValueError, match="threshold_bps"):
        drift_alerts(parity, float("nan"))


def test_the_report_writes_markdown_and_png_with_every_section(sim_run):
    run_dir, _, _, config_path = sim_run
    written = paper_report.main(["--run", str(run_dir), "--all", "--config", str(config_path),
                                 "--dataset", str(run_dir.parent / "dataset")])
    text = written["markdown"].read_text()
    assert written["markdown"] == run_dir / "reports" / "report_all.md"
    assert written["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "![equity](report_all.png)" in text
    assert "## Retraining decisions\n\nnone" in text
    assert "| SYN | " in text and "| SYN2 | " in text and "+0.00 |" in text  # the parity table: no difference
    assert "vs simulator +0.00" in text
    assert not [p for p in (run_dir / "reports").iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_day_report_starts_at_the_previous_close_and_compares_buy_and_hold(sim_run):
    run_dir, config, bars, _ = sim_run
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    day = pd.Timestamp(journal.fills()[0]["bar_time"]).date()
    facts = report_facts(journal, config.costs.costs(), day_period(day), bars)
    marks = journal.equity()
    close = {(m["symbol"], m["bar_time"]): m for m in marks}
    times = sorted({m["bar_time"] for m in marks})
    k = times.index(pd.Timestamp(day, tz="UTC").isoformat())
    start, end = times[k - 1], times[k]
    assert list(facts.equity.index) == [pd.Timestamp(start), pd.Timestamp(end)]
    assert facts.equity.iloc[0] == pytest.approx(sum(close[(s, start)]["equity"] for s in SYMBOLS))
    held = sum(close[(s, start)]["equity"] * close[(s, end)]["close"] / close[(s, start)]["close"] for s in SYMBOLS)
    assert facts.buy_and_hold.iloc[-1] == pytest.approx(held, rel=1e-12)
    assert len(facts.fills) == len(facts.parity.fills) >= 1
    journal.close()


def test_a_period_without_bars_is_one_line_naming_it(sim_run, capsys):
    run_dir, _, _, config_path = sim_run
    code = run_cli(paper_report.main, ["--run", str(run_dir), "--date", "2030-01-02", "--config", str(config_path)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "no bars in the report period 2030-01-02" in err[0]
    assert not (run_dir / "reports" / "report_2030-01-02.md").exists()


def test_a_folder_without_a_journal_is_one_line_and_creates_none(tmp_path, capsys):
    code = run_cli(paper_report.main, ["--run", str(tmp_path)])
    assert code == 2 and "holds no journal.sqlite" in capsys.readouterr().err
    assert not (tmp_path / "journal.sqlite").exists()


def test_send_passes_the_summary_and_drift_alerts_through_the_alert_hooks_once(tmp_path):
    journal = hand_journal(tmp_path, [("buy", 10.0, 100.0, 100.5)])
    posted = []
    config = PaperConfig.from_dict({"alerts": {"webhook_url": "http://127.0.0.1:9/hook"}}).alerts
    facts = report_facts(journal, Costs(commission=0.0, slippage=5.0), WHOLE_RUN, drift_bps=10.0)
    post = lambda url, json, timeout: posted.append(json)  # noqa: E731
    assert send_summary(journal, config, facts, post=post) == [True, True]
    assert [p["kind"] for p in posted] == ["report", "slippage_drift"]
    assert posted[0]["message"].startswith("hand all: equity")
    assert send_summary(journal, config, facts, post=post) == [False, False]  # once per period
    assert len(posted) == 2 and [a["kind"] for a in journal.alerts()] == ["report", "slippage_drift"]
    assert journal.alerts()[0]["at"] == journal.fills()[0]["at"]  # at the journal's last moment, not the wall clock


def test_help_names_the_period_and_send_options(capsys):
    assert run_cli(paper_report.main, ["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--run", "--date", "--all", "--send", "--config", "--drift-bps", "(default: runs)"):
        assert option in out


def test_the_run_records_its_costs_when_it_starts(sim_run) -> None:
    run_dir, config, _, _ = sim_run
    journal = Journal(run_dir / "journal.sqlite", durable=False)
    try:
        assert journal.meta("costs") == dataclasses.asdict(config.costs)
    finally:
        journal.close()


def test_a_config_with_other_costs_than_the_run_recorded_is_a_one_line_error(sim_run, tmp_path, capsys) -> None:
    run_dir, _, _, _ = sim_run
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"costs": {"commission": 0.002}}))
    assert run_cli(paper_report.main, ["--run", str(run_dir), "--all", "--config", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "are not the costs the run recorded when it started" in err
