"""The single-account fast path of Simulator.step agrees exactly with the batched numpy path."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engine import Costs, Simulator
from sim.synthetic import generate_ohlcv

COST_MODELS = [
    Costs(),
    Costs(commission=0.002, fixed_fee=1.5, slippage={"model": "spread", "spread_bps": 8}, borrow_rate=0.0002),
    Costs(slippage={"model": "volatility", "k": 0.2}),
    Costs(slippage={"model": "volume", "impact": 0.5}),
    Costs.zero(),
]


def assert_paths_agree(costs: Costs, targets: np.ndarray, **options) -> tuple[Simulator, dict[str, int]]:
    """Step a 1-account and a 3-account Simulator on the same targets; every output and every piece of
    state must be equal. Returns the single account and how many changed targets sent no order."""
    prices = generate_ohlcv(400, phi=-0.2, seed=4)
    arrays = [prices[k] for k in ("open", "high", "low", "close", "volume")]
    one = Simulator(*arrays, costs, n_accounts=1, record_trades=True, **options)
    batch = Simulator(*arrays, costs, n_accounts=3, record_trades=True, **options)
    one.reset(0)
    batch.reset(0)
    skipped = {"buy": 0, "sell": 0}
    for target in targets:
        last = one.target[0]
        a = one.step(np.array([target]))
        b = batch.step(np.full(3, target))
        effective = target if one.allow_short else max(target, 0.0)
        if abs(effective - last) > one.min_rebalance and not a.filled[0]:
            skipped["buy" if effective > last else "sell"] += 1
            assert one.target[0] == last  # not sent: the last target is kept
        for field in ("filled", "cost", "prev_equity", "equity"):
            assert getattr(a, field)[0] == getattr(b, field)[1], field
        np.testing.assert_array_equal(a.fill_price[0], b.fill_price[1])
        for state in ("row", "cash", "units", "target", "equity", "peak", "entry_row", "entry_value", "n_orders",
                      "costs_paid", "traded_notional"):
            assert getattr(one, state)[0] == getattr(batch, state)[1], state
        for query in ("exposure", "unrealised_return", "bars_held", "cash_fraction", "drawdown"):
            assert getattr(one, query)()[0] == getattr(batch, query)()[1], query
    for log in ("fill_log", "trade_log"):
        first, second = getattr(one, log)(0), getattr(batch, log)(1)
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    return one, skipped


@pytest.mark.parametrize("costs", COST_MODELS, ids=["default", "spread_fee_borrow", "volatility", "volume", "zero"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize("continuous", [False, True])
def test_single_account_path_matches_batched_path_exactly(costs, fill_at, allow_short, continuous):
    rng = np.random.default_rng(7)
    if continuous:
        targets = np.round(rng.uniform(-1, 1, 398), 2)
    else:
        targets = rng.choice([-1.0, 0.0, 1.0], 398, p=[0.2, 0.5, 0.3])
    one, skipped = assert_paths_agree(costs, targets, fill_at=fill_at, allow_short=allow_short,
                                      min_rebalance=0.05 if continuous else 0.0)
    assert one.n_orders[0] > 10
    assert skipped == {"buy": 0, "sell": 0}  # without a large fixed fee every changed target trades


@pytest.mark.parametrize("fill_at", ["next_open", "close"])
@pytest.mark.parametrize("allow_short", [False, True])
def test_orders_the_fixed_fee_does_not_fit_are_skipped_alike_on_both_paths(fill_at, allow_short):
    """A 50 fee against rebalances of ~50: topping up from 0.9995 to 1.0 leaves no room for the fee (no buy);
    trimming 1.0 to 0.9995 with no cash frees less than the fee (no sell); 0.5 to 0.4997 trades (cash)."""
    rng = np.random.default_rng(3)
    targets = rng.choice([1.0, 0.9995, 0.999, 0.5, 0.4997, 0.0, -0.5], 398)
    costs = Costs(commission=0.001, fixed_fee=50.0, slippage={"model": "volume", "impact": 0.1})
    one, skipped = assert_paths_agree(costs, targets, fill_at=fill_at, allow_short=allow_short)
    assert skipped["buy"] > 5 and skipped["sell"] > 5, skipped
    assert one.n_orders[0] > 50
    assert one.cash[0] >= -1e-9 * one.equity[0] or allow_short


def test_single_env_observations_match_batched_observations_exactly():
    from envs.core import EnvConfig, TradingCore
    from features import DatasetConfig, build_market_data, synthetic_bars

    data = build_market_data({"A": synthetic_bars(300, seed=0), "B": synthetic_bars(300, seed=1)},
                             DatasetConfig(window=6))
    config = EnvConfig(symbol="B", random_start=False, allow_short=True)
    one, batch = TradingCore(data, config, n=1), TradingCore(data, config, n=2)
    rng = np.random.default_rng(0)
    one.start(np.arange(1), rng)
    batch.start(np.arange(2), rng)
    np.testing.assert_array_equal(one.observations()[0], batch.observations()[1])
    for target in rng.choice([-1.0, 0.0, 1.0], 60):
        r1, *_ = one.step(np.array([target]))
        r2, *_ = batch.step(np.full(2, target))
        assert r1[0] == r2[1]
        np.testing.assert_array_equal(one.observations()[0], batch.observations()[1])
