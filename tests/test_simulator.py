"""sim.Simulator proven against the books: equity rebuilt from the fill log, trades against fills, and
every cost model against a round trip worked out by hand on made-up prices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import Costs, Simulator, generate_ohlcv
from sim.costs import (
    FixedBpsSlippage,
    SpreadSlippage,
    VolatilityScaledSlippage,
    VolumeScaledSlippage,
    make_slippage,
)

INITIAL = 100_000.0


def simulator(prices: dict[str, np.ndarray], costs: Costs, **options) -> Simulator:
    return Simulator(prices["open"], prices["high"], prices["low"], prices["close"], prices["volume"], costs,
                     initial_cash=INITIAL, **options)


def hand_prices(open_, close, volume=None) -> dict[str, np.ndarray]:
    """OHLCV arrays from explicit opens and closes (highs/lows bracket them)."""
    open_, close = np.asarray(open_, dtype=np.float64), np.asarray(close, dtype=np.float64)
    volume = np.full(len(close), 1_000.0) if volume is None else np.asarray(volume, dtype=np.float64)
    return {"open": open_, "close": close, "high": np.maximum(open_, close) + 1.0,
            "low": np.minimum(open_, close) - 1.0, "volume": volume}


def run(sim: Simulator, targets, start: int = 0) -> np.ndarray:
    """Step one account through ``targets`` from ``start``; equity after each step."""
    sim.reset(start)
    equity = np.empty(len(targets))
    for k, target in enumerate(targets):
        equity[k] = sim.step(np.array([float(target)])).equity[0]
    return equity


def random_targets(n: int, seed: int) -> np.ndarray:
    """Runs of targets: longs, shorts, partial sizes, flat; flips straight from long to short included."""
    rng = np.random.default_rng(seed)
    levels = np.array([-1.0, -0.4, 0.0, 0.3, 0.7, 1.0])
    targets = np.repeat(rng.choice(levels, size=n), rng.integers(1, 6, size=n))[:n]
    targets[-1] = 0.0  # flat at the end, so every trade is closed
    return targets


# ----- equity from the fill log ----------------------------------------------------------------
COSTS_ON = dict(commission=0.001, fixed_fee=1.5, slippage=5.0, borrow_rate=2e-4)


@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_equity_recomputed_from_fill_log(fill_at: str) -> None:
    prices = generate_ohlcv(400, sigma=0.02, overnight_fraction=0.4, seed=3)
    costs = Costs(**COSTS_ON)
    sim = simulator(prices, costs, allow_short=True, fill_at=fill_at, record_trades=True)
    targets = random_targets(350, seed=7)
    start = 20
    equity = run(sim, targets, start)
    fills = sim.fill_log()
    assert len(fills["row"]) > 50, "the action sequence should trade often"

    fill_index = {int(row): i for i, row in enumerate(fills["row"])}
    assert len(fill_index) == len(fills["row"]), "at most one fill per bar"
    shift = 1 if fill_at == "next_open" else 0
    close, borrow_rate = prices["close"], COSTS_ON["borrow_rate"]
    cash, units, last_target = INITIAL, 0.0, 0.0
    rebuilt = np.empty(len(targets))
    for k, target in enumerate(targets):
        fill_row = start + k + shift
        reference = prices["open"][fill_row] if fill_at == "next_open" else close[fill_row]
        if target != last_target:
            # the order: target exposure of the equity at the reference price
            assert fill_row in fill_index, f"step {k}: target changed {last_target} -> {target} but nothing filled"
            i = fill_index.pop(fill_row)
            u, fp, ref = fills["units"][i], fills["fill_price"][i], fills["reference_price"][i]
            assert ref == reference
            equity_at_fill = cash + units * reference
            expected_units = target * equity_at_fill / reference - units
            if target > 0 and expected_units > 0:  # a buy: the units, their slippage and commission fit
                rate = 5e-4 + 0.001 * (1 + 5e-4)  # cost per unit of notional: slippage + commission
                expected_units = (target * (equity_at_fill + units * reference * rate - 1.5)
                                  / (reference * (1 + target * rate)) - units)
            assert u == pytest.approx(expected_units, rel=1e-12, abs=1e-9)
            assert fp == pytest.approx(reference * (1 + np.sign(u) * 5e-4), rel=1e-15)
            assert fills["commission"][i] == pytest.approx(0.001 * abs(u) * fp + 1.5, rel=1e-15)
            assert fills["slippage"][i] == pytest.approx(abs(u) * reference * 5e-4, rel=1e-15)
            cash -= u * fp + fills["commission"][i]
            units += u
            last_target = target
        mark = start + k + 1
        cash -= borrow_rate * max(-units, 0.0) * close[mark]
        rebuilt[k] = cash + units * close[mark]
    assert not fill_index, "fills the targets do not explain"
    np.testing.assert_allclose(equity, rebuilt, rtol=1e-9, atol=0)
    assert units == 0.0 and sim.units[0] == 0.0

    trades = sim.trade_log()
    assert equity[-1] == pytest.approx(INITIAL + trades["net_pnl"].sum(), rel=1e-9)
    assert trades["costs"].sum() == pytest.approx(sim.costs_paid[0], rel=1e-9)
    assert sim.costs_paid[0] == pytest.approx(INITIAL - equity[-1] + (-fills["units"] * fills["reference_price"]).sum(),
                                              rel=1e-9)


def expected_trades(fills: dict[str, np.ndarray], borrow_by_row: dict[int, float]) -> list[dict]:
    """Round trips rebuilt from the fills: a trade is a run of one nonzero sign; a flip closes one and
    opens the next, its costs split by units."""
    trades: list[dict] = []
    current = None
    units = 0.0
    for row, u, ref, fp, commission, slippage in zip(*(fills[k] for k in (
            "row", "units", "reference_price", "fill_price", "commission", "slippage"))):
        row = int(row)
        before, after = units, units + u
        parts = [(u, 1.0)]
        if before != 0.0 and (after == 0.0 or np.sign(after) != np.sign(before)):
            parts = [(-before, abs(before) / abs(u)), (after, abs(after) / abs(u))]
        for part_units, share in parts:
            if part_units == 0.0:
                continue
            if current is None:
                current = {"entry_row": row, "sign": np.sign(part_units), "gross": 0.0, "costs": 0.0, "units": 0.0,
                           "in_units": 0.0, "in_value": 0.0}
            if np.sign(part_units) == current["sign"]:
                current["in_units"] += abs(part_units)
                current["in_value"] += abs(part_units) * fp
            current["gross"] -= part_units * ref
            current["costs"] += (commission + slippage) * share
            current["units"] += part_units
            if current["units"] == 0.0:
                current["exit_row"] = row
                trades.append(current)
                current = None
        units = after
    # borrow is charged at each close while short; it belongs to the trade open at that close
    for trade in trades:
        if trade["sign"] < 0:
            trade["costs"] += sum(v for r, v in borrow_by_row.items() if trade["entry_row"] <= r <= trade["exit_row"])
    return trades


def test_trade_log_matches_fills() -> None:
    prices = generate_ohlcv(300, sigma=0.015, overnight_fraction=0.3, seed=11)
    sim = simulator(prices, Costs(**COSTS_ON), allow_short=True, record_trades=True)
    targets = random_targets(280, seed=5)
    start = 10
    sim.reset(start)
    borrow_by_row: dict[int, float] = {}
    for target in targets:
        sim.step(np.array([target]))
        row = int(sim.row[0])
        borrow_by_row[row] = COSTS_ON["borrow_rate"] * max(-sim.units[0], 0.0) * prices["close"][row]
    fills, trades = sim.fill_log(), sim.trade_log()
    expected = expected_trades(fills, borrow_by_row)

    assert len(trades["net_pnl"]) == len(expected) > 10
    np.testing.assert_array_equal(trades["entry_row"], [t["entry_row"] for t in expected])
    np.testing.assert_array_equal(trades["exit_row"], [t["exit_row"] for t in expected])
    np.testing.assert_array_equal(np.sign(trades["size"]), [t["sign"] for t in expected])
    np.testing.assert_allclose(trades["gross_pnl"], [t["gross"] for t in expected], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(trades["costs"], [t["costs"] for t in expected], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(trades["entry_price"], [t["in_value"] / t["in_units"] for t in expected], rtol=1e-12)
    np.testing.assert_allclose(trades["net_pnl"], trades["gross_pnl"] - trades["costs"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(trades["bars_held"], trades["exit_row"] - trades["entry_row"])
    assert (trades["costs"] > 0).all()

    # a flip (long straight to short or back) is two trades sharing the flipping fill's row
    flips = [i for i in range(1, len(expected)) if expected[i]["entry_row"] == expected[i - 1]["exit_row"]]
    assert flips, "the action sequence should contain flips"
    for i in flips:
        assert np.sign(trades["size"][i]) == -np.sign(trades["size"][i - 1])
    assert sim.equity[0] == pytest.approx(INITIAL + trades["net_pnl"].sum(), rel=1e-9)


def test_flip_splits_costs_by_units() -> None:
    prices = hand_prices(open_=[100.0] * 6, close=[100.0] * 6)
    sim = simulator(prices, Costs(commission=0.001, slippage=0.0), allow_short=True, record_trades=True)
    run(sim, [1.0, -1.0, 0.0])
    trades, fills = sim.trade_log(), sim.fill_log()
    n = INITIAL / (100.0 * 1.001)  # the long's units and their commission fit in equity
    np.testing.assert_array_equal(trades["entry_row"], [1, 2])
    np.testing.assert_array_equal(trades["exit_row"], [2, 3])
    np.testing.assert_allclose(trades["size"], [n, -fills["units"][2]], rtol=1e-12)
    # the flip sells n + |short| units; the long trade pays commission on its n of them
    flip_commission = fills["commission"][1]
    long_share = n / abs(fills["units"][1])
    assert trades["costs"][0] == pytest.approx(0.001 * n * 100 + flip_commission * long_share, rel=1e-12)
    assert trades["costs"][1] == pytest.approx(flip_commission * (1 - long_share) + fills["commission"][2], rel=1e-12)


# ----- costs, by hand ----------------------------------------------------------------------------
def test_zero_costs_flipping_on_constant_prices_costs_nothing() -> None:
    prices = hand_prices(open_=[50.0] * 40, close=[50.0] * 40)
    sim = simulator(prices, Costs.zero(), allow_short=True, record_trades=True)
    targets = [1, -1, 0, 1, 0.5, -0.25, -1, 1, 0, 1] * 3 + [0]
    equity = run(sim, targets)
    np.testing.assert_allclose(equity, INITIAL, rtol=1e-12, atol=0)
    assert sim.costs_paid[0] == 0.0
    orders = sum(before != after for before, after in zip([0] + targets, targets))
    assert len(sim.fill_log()["row"]) == sim.n_orders[0] == orders
    assert np.abs(sim.trade_log()["net_pnl"]).max() < 1e-6


# open, close and volume of a 12-bar market; the round trip is decided at rows 5 and 8
OPENS = [100.0, 101.0, 99.5, 102.0, 103.0, 101.5, 104.0, 105.5, 103.0, 106.0, 107.0, 106.5]
CLOSES = [100.5, 100.0, 101.0, 102.5, 102.0, 103.5, 105.0, 104.0, 106.5, 105.5, 108.0, 107.0]
VOLUMES = [900.0, 1100.0, 1000.0, 1300.0, 800.0, 1200.0, 950.0, 1050.0, 1000.0, 1150.0, 990.0, 1010.0]


def hand_volatility(fill_row: int, window: int) -> float:
    closes = np.asarray(CLOSES)
    returns = [math.log(closes[r] / closes[r - 1]) for r in range(fill_row - window, fill_row)]
    return float(np.std(returns, ddof=1))


def hand_adv(fill_row: int, window: int) -> float:
    return sum(CLOSES[r] * VOLUMES[r] for r in range(fill_row - window, fill_row)) / window


@pytest.mark.parametrize("model", ["fixed", "spread", "volatility", "volume"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_round_trip_costs_what_the_cost_model_says(model: str, fill_at: str) -> None:
    specs = {"fixed": 5.0, "spread": {"model": "spread", "spread_bps": 8.0},
             "volatility": {"model": "volatility", "k": 0.2, "window": 3, "base_bps": 1.0},
             "volume": {"model": "volume", "impact": 0.5, "window": 3, "base_bps": 2.0}}
    costs = Costs(commission=0.001, fixed_fee=2.0, slippage=specs[model])
    sim = simulator(hand_prices(OPENS, CLOSES, VOLUMES), costs, fill_at=fill_at)
    sim.reset(5)
    targets = [1.0, 1.0, 1.0, 0.0, 0.0]
    equity, cost, fill_price = [], [], []
    for target in targets:
        result = sim.step(np.array([target]))
        equity.append(result.equity[0])
        cost.append(result.cost[0])
        fill_price.append(result.fill_price[0])

    buy_row, sell_row = (6, 9) if fill_at == "next_open" else (5, 8)
    prices = OPENS if fill_at == "next_open" else CLOSES
    buy_ref, sell_ref = prices[buy_row], prices[sell_row]

    def fraction(row: int, notional: float) -> float:
        if model == "fixed":
            return 5e-4
        if model == "spread":
            return 0.5 * 8e-4
        if model == "volatility":
            return 1e-4 + 0.2 * hand_volatility(row, 3)
        return 2e-4 + 0.5 * math.sqrt(notional / hand_adv(row, 3))

    # the buy is sized so that units * fill price + commission + fee = equity, with the slippage fraction
    # of the naive all-in order (INITIAL of notional); the fill pays the fraction of what it trades
    sizing_fraction = fraction(buy_row, INITIAL)
    k = sizing_fraction + 0.001 * (1 + sizing_fraction)
    units = (INITIAL - 2.0) / (buy_ref * (1 + k))
    buy_fraction = fraction(buy_row, units * buy_ref)
    sell_fraction = fraction(sell_row, units * sell_ref)
    buy_price = buy_ref * (1 + buy_fraction)
    sell_price = sell_ref * (1 - sell_fraction)
    buy_cost = units * buy_ref * buy_fraction + 0.001 * units * buy_price + 2.0
    sell_cost = units * sell_ref * sell_fraction + 0.001 * units * sell_price + 2.0
    cash_after_buy = INITIAL - units * buy_price - (0.001 * units * buy_price + 2.0)
    final = cash_after_buy + units * sell_price - (0.001 * units * sell_price + 2.0)
    if model == "volume":  # sized on the larger naive order's fraction: the difference is left in cash
        assert buy_fraction < sizing_fraction and cash_after_buy > 0
        assert cash_after_buy == pytest.approx(units * buy_ref * 1.001 * (sizing_fraction - buy_fraction), rel=1e-9)
    else:
        assert cash_after_buy == pytest.approx(0.0, abs=1e-9 * INITIAL)
    assert sim.cash[0] == pytest.approx(final, rel=1e-12)

    assert fill_price[0] == pytest.approx(buy_price, rel=1e-14)
    assert fill_price[3] == pytest.approx(sell_price, rel=1e-14)
    assert np.isnan(fill_price[1]) and np.isnan(fill_price[2]) and np.isnan(fill_price[4])
    assert cost == pytest.approx([buy_cost, 0.0, 0.0, sell_cost, 0.0], rel=1e-12)
    # while long, equity is cash plus units at the close
    for k, mark in enumerate((6, 7, 8)):
        assert equity[k] == pytest.approx(cash_after_buy + units * CLOSES[mark], rel=1e-12)
    assert equity[-1] == pytest.approx(final, rel=1e-12)
    assert final == pytest.approx(INITIAL + units * (sell_ref - buy_ref) - buy_cost - sell_cost, rel=1e-12)
    assert sim.costs_paid[0] == pytest.approx(buy_cost + sell_cost, rel=1e-12)


def test_fixed_fee_alone_costs_the_fee_per_order() -> None:
    prices = hand_prices(open_=[20.0] * 10, close=[20.0] * 10)
    sim = simulator(prices, Costs(commission=0.0, fixed_fee=7.5, slippage=0.0))
    equity = run(sim, [1, 1, 0, 0, 1, 0, 0])
    assert equity[-1] == pytest.approx(INITIAL - 4 * 7.5, rel=1e-14)
    assert sim.n_orders[0] == 4


def test_borrow_is_charged_on_short_notional_at_each_close() -> None:
    close = [100.0, 100.0, 98.0, 97.0, 99.0, 99.0, 99.0]
    prices = hand_prices(open_=[100.0, 100.0, 99.0, 98.0, 99.0, 99.0, 99.0], close=close)  # short 100, cover 99
    sim = simulator(prices, Costs(commission=0.0, slippage=0.0, borrow_rate=1e-3), allow_short=True)
    equity = run(sim, [-1, -1, -1, 0, 0])
    units = INITIAL / 100.0
    borrow = 1e-3 * units * (close[1] + close[2] + close[3])  # marks while short: rows 1, 2, 3
    assert equity[-1] == pytest.approx(INITIAL + units * (100.0 - 99.0) - borrow, rel=1e-13)


# ----- fill timing ---------------------------------------------------------------------------------
def test_next_open_fill_uses_the_next_bar_open() -> None:
    prices = generate_ohlcv(30, overnight_fraction=0.5, seed=2)
    sim = simulator(prices, Costs(commission=0.0, slippage=5.0))
    sim.reset(10)
    result = sim.step(np.array([1.0]))
    assert sim.row[0] == 11
    assert result.fill_price[0] == pytest.approx(prices["open"][11] * 1.0005, rel=1e-15)
    assert prices["open"][11] != prices["close"][10]


def test_close_fill_uses_the_decision_bar_close() -> None:
    prices = generate_ohlcv(30, overnight_fraction=0.5, seed=2)
    sim = simulator(prices, Costs(commission=0.0, slippage=5.0), fill_at="close")
    sim.reset(10)
    result = sim.step(np.array([1.0]))
    assert sim.row[0] == 11
    assert result.fill_price[0] == pytest.approx(prices["close"][10] * 1.0005, rel=1e-15)


def test_no_order_when_the_target_is_unchanged_or_within_min_rebalance() -> None:
    prices = generate_ohlcv(30, seed=4)
    sim = simulator(prices, Costs(), min_rebalance=0.05)
    sim.reset(0)
    assert sim.step(np.array([0.5])).filled[0]
    assert not sim.step(np.array([0.5])).filled[0]
    assert not sim.step(np.array([0.54])).filled[0]
    assert sim.step(np.array([0.6])).filled[0]
    assert sim.n_orders[0] == 2


# ----- position state -----------------------------------------------------------------------------
def test_long_only_simulator_treats_negative_targets_as_flat() -> None:
    prices = generate_ohlcv(30, seed=4)
    sim = simulator(prices, Costs())
    sim.reset(0)
    result = sim.step(np.array([-1.0]))
    assert not result.filled[0] and sim.units[0] == 0.0
    sim.step(np.array([1.0]))
    sim.step(np.array([-0.5]))
    assert sim.units[0] == 0.0


def test_unrealised_return_uses_the_cost_basis_when_scaling_in_and_out() -> None:
    opens = [100.0, 100.0, 110.0, 120.0, 120.0, 120.0]
    closes = [100.0, 100.0, 110.0, 120.0, 120.0, 120.0]
    sim = simulator(hand_prices(opens, closes), Costs.zero())
    sim.reset(0)
    sim.step(np.array([0.5]))  # buys 500 at 100
    assert sim.unrealised_return()[0] == pytest.approx(0.0, abs=1e-15)
    sim.step(np.array([1.0]))  # equity 105,000 at 110: adds 454.5 units at 110
    units_added = 105_000 / 110 - 500
    basis = 500 * 100 + units_added * 110
    assert sim.entry_value[0] == pytest.approx(basis, rel=1e-13)
    assert sim.unrealised_return()[0] == pytest.approx(sim.units[0] * 110 / basis - 1, rel=1e-12)
    sim.step(np.array([0.5]))  # sells half at 120: the average cost of the rest is unchanged
    assert sim.unrealised_return()[0] == pytest.approx(120 / (basis / (500 + units_added)) - 1, rel=1e-12)
    assert sim.bars_held()[0] == 2


def test_one_cost_model_shared_by_two_simulators_prices_each_market() -> None:
    calm, wild = generate_ohlcv(200, sigma=0.005, seed=1), generate_ohlcv(200, sigma=0.05, seed=2)
    shared = Costs(slippage={"model": "volatility", "k": 0.5})
    first = simulator(calm, shared)
    simulator(wild, shared)  # prepares the shared model on another market
    alone = simulator(calm, Costs(slippage={"model": "volatility", "k": 0.5}))
    run(first, [1.0, 0.0], start=100)
    run(alone, [1.0, 0.0], start=100)
    assert first.costs_paid[0] == pytest.approx(alone.costs_paid[0], rel=1e-14)


def test_accounts_are_independent() -> None:
    prices = generate_ohlcv(200, seed=9)
    batch = simulator(prices, Costs(**COSTS_ON), n_accounts=3, allow_short=True)
    batch.reset(np.array([10, 50, 90]))
    targets = np.stack([random_targets(100, seed) for seed in (1, 2, 3)], axis=1)
    batch_equity = np.array([batch.step(t).equity.copy() for t in targets])
    for a, start in enumerate((10, 50, 90)):
        single = simulator(prices, Costs(**COSTS_ON), allow_short=True)
        np.testing.assert_allclose(batch_equity[:, a], run(single, targets[:, a], start), rtol=1e-12)


# ----- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Costs(commission=-0.001), "commission"),
        (lambda: Costs(fixed_fee=float("nan")), "fixed_fee"),
        (lambda: Costs(borrow_rate=-1.0), "borrow_rate"),
        (lambda: Costs(slippage=-1.0), "slippage"),
        (lambda: Costs(slippage="magic"), "magic"),
        (lambda: Costs(slippage={"model": "volume", "bogus": 1}), "bogus"),
        (lambda: Simulator(*[np.ones(5)] * 5, fill_at="noon"), "fill_at"),
        (lambda: Simulator(*[np.ones(5)] * 5, initial_cash=0.0), "initial_cash"),
    ],
)
def test_bad_settings_raise_naming_the_parameter(make, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make()


def test_make_slippage_accepts_every_spelling() -> None:
    assert isinstance(make_slippage(3.0), FixedBpsSlippage) and make_slippage(3.0).bps == 3.0
    assert isinstance(make_slippage(None), FixedBpsSlippage) and make_slippage(None).bps == 0.0
    assert isinstance(make_slippage("spread"), SpreadSlippage)
    assert isinstance(make_slippage({"model": "volatility", "k": 0.3}), VolatilityScaledSlippage)
    assert isinstance(make_slippage({"model": "volume"}), VolumeScaledSlippage)
    model = VolumeScaledSlippage(impact=0.2)
    assert make_slippage(model) is model


def test_the_last_fill_and_the_fill_count_read_the_fill_log_without_copying_it():
    close = np.array([10.0, 10.5, 11.0, 10.8, 11.3, 11.1])
    sim = Simulator(close, close * 1.01, close * 0.99, close, np.full(6, 1e6), Costs(), n_accounts=1,
                    record_trades=True)
    sim.reset(0)
    assert sim.fill_count() == 0
    with pytest.raises(IndexError):
        sim.last_fill()
    for target in (1.0, 0.5, 0.5, 0.0):
        sim.step(np.array([target]))
        log = sim.fill_log()
        assert sim.fill_count() == len(log["row"])
        if len(log["row"]):
            assert sim.last_fill() == {name: float(values[-1]) for name, values in log.items()}
    assert sim.fill_count() == 3  # the second 0.5 sends nothing
    sim.reset(0)
    assert sim.fill_count() == 0
