"""A position changed outside the run (a user closing it in Alpaca's dashboard) is reconciled with its cash: the
next cycle alerts, the sleeve takes the broker's position and the cash that came with it, the run's equity is the
broker's (cash + positions at market), and the change is never counted as a loss - the run does not halt."""

from __future__ import annotations

import pytest

from live_helpers import fake, make_loop, paper_config, server, until  # noqa: F401  (server and fake are fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(60)]
PAIR = ("AAPL", "MSFT")
TIGHT = paper_config(risk={"max_daily_loss": 0.05}, alerts={"daily_loss": 0.02})  # an invented loss would halt



def hold_while_open(loop, fake, symbols, limit=80):
    """Cycle (sleeping as the loop would) until every one of ``symbols`` is held while the market is open."""
    loop.start()
    for _ in range(limit):
        report = loop.cycle()
        sleeves = loop.journal.sleeves()
        if fake.is_open() and all(sleeves[s].units > 0 for s in symbols) and not loop.journal.orders(pending_only=True):
            return
        assert not loop.stopped
        loop.broker.sleep(max((loop.next_wake(report) - report.at).total_seconds(), 0.0))
    raise AssertionError(f"{symbols} never all held while the market was open")


def broker_equity(fake):
    return float(fake.wire_account()["equity"])


def journal_cash(loop):
    return sum(s.cash for s in loop.journal.sleeves().values()) + float(loop.journal.meta("cash_offset", 0.0))


def losses(loop):
    return [a["message"] for a in loop.journal.alerts() if a["kind"] in ("daily_loss", "halted")]


def test_a_position_closed_outside_the_run_is_alerted_adopted_with_its_cash_and_is_no_loss(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=TIGHT)
    hold_while_open(loop, fake, ["AAPL"])
    held = loop.journal.sleeves()["AAPL"].units
    cash_before = fake.cash
    fake.advance(60)
    fake.trade_outside("AAPL")  # the user closes the position in the dashboard
    proceeds = fake.cash - cash_before
    assert proceeds > 0 and "AAPL" not in fake.positions
    report = loop.cycle()
    assert report.status == "alert" and not loop.stopped
    alerts = [a["message"] for a in loop.journal.alerts() if a["kind"] == "reconciliation"]
    assert len(alerts) == 1 and "changed outside this run" in alerts[0] and "not counted as profit or loss" in alerts[0]
    sleeve = loop.journal.sleeves()["AAPL"]
    assert sleeve.units == 0.0
    assert journal_cash(loop) == pytest.approx(fake.cash, abs=1e-6)  # the proceeds are the sleeve's cash now
    assert loop.journal.meta("equity_now")["equity"] == pytest.approx(broker_equity(fake), abs=1e-6)
    assert losses(loop) == [] and loop.journal.meta("halted") is None
    moved = [r for r in loop.journal.reconciliations() if r["field"] == "day_start"]
    assert len(moved) == 1  # the baseline moved by the change at market: its proceeds less the shares' value
    assert moved[0]["broker"] - moved[0]["journal"] == pytest.approx(proceeds - held * fake.price("AAPL"), abs=1e-6)
    assert loop.journal.last_target("AAPL") == 0.0  # the sleeve is flat: its last target is flat too
    decided = len(loop.journal.decisions())
    result = loop.run(until=until(fake, 3))  # and the run goes on deciding
    assert not result.startswith("halted") and losses(loop) == [] and len(loop.journal.decisions()) > decided
    assert journal_cash(loop) == pytest.approx(fake.cash, abs=1e-6)
    # a later decision to be long buys again (the simulator compares the new target with the adopted flat one)
    longs = [d for d in loop.journal.decisions()[decided:] if d["risk_target"] > 0]
    buys = [o for o in loop.journal.orders() if o["side"] == "buy" and o["created_at"] > moved[0]["at"]]
    assert longs and buys


def test_shares_bought_outside_the_run_are_adopted_with_what_they_cost(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=TIGHT)
    hold_while_open(loop, fake, ["AAPL"])
    held = loop.journal.sleeves()["AAPL"].units
    fake.advance(60)
    fake.trade_outside("AAPL", -round(held / 2, 6))  # half sold by hand
    loop.cycle()
    sleeve = loop.journal.sleeves()["AAPL"]
    value = sleeve.units * fake.price("AAPL")
    assert loop.journal.last_target("AAPL") == pytest.approx(value / (sleeve.cash + value), rel=1e-6)
    fake.advance(60)
    fake.trade_outside("AAPL", 10.0)  # then ten bought by hand
    loop.cycle()
    assert loop.journal.sleeves()["AAPL"].units == pytest.approx(fake.positions["AAPL"]["qty"], abs=1e-9)
    assert journal_cash(loop) == pytest.approx(fake.cash, abs=1e-6)
    assert loop.journal.meta("equity_now")["equity"] == pytest.approx(broker_equity(fake), abs=1e-6)
    assert len([a for a in loop.journal.alerts() if "changed outside this run" in a["message"]]) == 2
    assert losses(loop) == [] and not loop.stopped


@pytest.mark.parametrize("server", [PAIR], indirect=True)
def test_two_positions_closed_outside_at_once_each_get_their_own_proceeds(fake, tmp_path):
    loop = make_loop(fake, tmp_path, symbols=PAIR, config=TIGHT)
    hold_while_open(loop, fake, list(PAIR))
    before = loop.journal.sleeves()
    fake.advance(60)
    proceeds = {}
    for symbol in PAIR:
        cash = fake.cash
        fake.trade_outside(symbol)
        proceeds[symbol] = fake.cash - cash
    loop.cycle()
    after = loop.journal.sleeves()
    for symbol in PAIR:
        assert after[symbol].units == 0.0
        assert after[symbol].cash - before[symbol].cash == pytest.approx(proceeds[symbol], abs=1e-6)
    assert loop.journal.meta("equity_now")["equity"] == pytest.approx(broker_equity(fake), abs=1e-6)
    assert losses(loop) == [] and not loop.stopped


def test_without_adopting_a_difference_is_alerted_and_the_journal_kept(fake, tmp_path):
    loop = make_loop(fake, tmp_path, config=paper_config(risk={"adopt_broker_positions": False}))
    hold_while_open(loop, fake, ["AAPL"])
    held = loop.journal.sleeves()["AAPL"].units
    fake.advance(60)
    fake.trade_outside("AAPL")
    loop.cycle()
    assert loop.journal.sleeves()["AAPL"].units == held
    messages = [a["message"] for a in loop.journal.alerts() if a["kind"] == "reconciliation"]
    assert any("kept the journal's" in m for m in messages) and any("broker cash" in m for m in messages)
