"""Order sizing (sim.engine, "Sizing"): a buy's units, slippage and commission fit in equity.

A plain-loop reference does the books by hand (decide a target at the close, fill at the next open or
this close with slippage and commission, mark to the close) and computes every slippage fraction from
the prices itself; the Simulator (one account and a batch), the env and the backtester must agree with
it for every slippage model, with and without a fixed fee. Then the invariants: with long targets in
[0, 1] cash never goes below 0, and buying a target of 1.0 never gives an exposure above 1.0.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from envs import TradingEnv, backtest
from features import DatasetConfig, build_market_data, synthetic_bars
from sim import Costs, Simulator, generate_ohlcv

INITIAL = 100_000.0
COMMISSION = 0.001
MODELS = {
    "fixed": 5.0,
    "spread": {"model": "spread", "spread_bps": 8.0},
    "volatility": {"model": "volatility", "k": 0.2, "window": 10, "base_bps": 1.0},
    "volume": {"model": "volume", "impact": 0.3, "window": 10, "base_bps": 2.0},
}


def hand_fraction(spec, prices: dict[str, np.ndarray], row: int, notional: float) -> float:
    """The slippage fraction of an order of ``notional`` filled at ``row``, from the prices by hand."""
    if not isinstance(spec, dict):
        return spec * 1e-4
    if spec["model"] == "spread":
        return 0.5 * spec["spread_bps"] * 1e-4
    window, close = spec["window"], prices["close"]
    assert row > window, "the reference needs a full window before the fill"
    if spec["model"] == "volatility":
        returns = [math.log(close[r] / close[r - 1]) for r in range(row - window, row)]
        return spec["base_bps"] * 1e-4 + spec["k"] * statistics.stdev(returns)
    adv = statistics.fmean(close[r] * prices["volume"][r] for r in range(row - window, row))
    return spec["base_bps"] * 1e-4 + spec["impact"] * math.sqrt(notional / adv)


def reference(prices: dict[str, np.ndarray], targets, start: int, spec, fee: float, *, fill_at: str = "next_open",
              allow_short: bool = False) -> dict[str, np.ndarray]:
    """Equity, cash and units after each step, by hand, one bar at a time."""
    open_, close = prices["open"], prices["close"]
    cash, units, last = INITIAL, 0.0, 0.0
    out = {"equity": [], "cash": [], "units": []}
    for k, target in enumerate(targets):
        row = start + k  # the decision bar, closed
        target = float(target) if allow_short else max(float(target), 0.0)
        fill_row = row + 1 if fill_at == "next_open" else row
        ref = open_[fill_row] if fill_at == "next_open" else close[row]
        equity = cash + units * ref
        if target != last and equity > 0:
            new_units = target * equity / ref  # hold target x equity in the asset
            is_buy = target > 0 and new_units > units
            if is_buy:
                # a buy: the position is worth target x (equity - this order's costs) at ref. The costs are
                # linear in the units bought (slippage fraction taken at the naive order), so the balance
                # below is linear in the new units: solve it from two evaluations
                s = hand_fraction(spec, prices, fill_row, (new_units - units) * ref)

                def imbalance(u: float) -> float:
                    bought = u - units
                    cost = bought * ref * s + COMMISSION * bought * ref * (1 + s) + fee
                    return u * ref - target * (equity - cost)

                lo_, hi_ = units, new_units
                new_units = lo_ - imbalance(lo_) * (hi_ - lo_) / (imbalance(hi_) - imbalance(lo_))
            delta = new_units - units
            fraction = hand_fraction(spec, prices, fill_row, abs(delta) * ref)
            fill = ref * (1 + fraction) if delta > 0 else ref * (1 - fraction)
            cash_after = cash - delta * fill - (COMMISSION * abs(delta) * fill + fee)
            # no order when the fee leaves no room for a buy, or a sell would take cash below 0
            fee_does_not_fit = (is_buy and delta <= 0) or (delta < 0 <= new_units and cash_after < min(cash, 0.0))
            if not fee_does_not_fit:
                last = target
                if delta != 0:
                    cash, units = cash_after, new_units
        out["equity"].append(cash + units * close[row + 1])
        out["cash"].append(cash)
        out["units"].append(units)
    return {key: np.asarray(value) for key, value in out.items()}


def random_targets(n: int, seed: int, *, low: float = 0.0, step: float = 1 / 64) -> np.ndarray:
    """Runs of random targets in [low, 1] on a grid (exact in float32, for the env's Box actions)."""
    rng = np.random.default_rng(seed)
    levels = np.round(rng.uniform(low, 1.0, n) / step) * step
    levels[rng.random(n) < 0.2] = 1.0
    levels[rng.random(n) < 0.15] = 0.0
    return np.repeat(levels, rng.integers(1, 5, n))[:n]


def make_simulator(prices, spec, fee: float, n: int = 1, **options) -> Simulator:
    costs = Costs(commission=COMMISSION, fixed_fee=fee, slippage=spec)
    return Simulator(*(prices[k] for k in ("open", "high", "low", "close", "volume")), costs, n_accounts=n,
                     initial_cash=INITIAL, **options)


@pytest.fixture(scope="module")
def prices() -> dict[str, np.ndarray]:
    return generate_ohlcv(600, sigma=0.02, overnight_fraction=0.3, seed=12)


# ----- the Simulator against the reference ---------------------------------------------------
@pytest.mark.parametrize("fee", [0.0, 25.0])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_simulator_matches_the_reference(prices, model: str, fee: float, fill_at: str) -> None:
    spec = MODELS[model]
    targets = random_targets(400, seed=1)
    expected = reference(prices, targets, 50, spec, fee, fill_at=fill_at)
    sim = make_simulator(prices, spec, fee, fill_at=fill_at)
    sim.reset(50)
    equity, cash = [], []
    for target in targets:
        equity.append(sim.step(np.array([target])).equity[0])
        cash.append(sim.cash[0])
    np.testing.assert_allclose(equity, expected["equity"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(cash, expected["cash"], rtol=1e-9, atol=1e-9 * INITIAL)
    assert sim.units[0] == pytest.approx(expected["units"][-1], rel=1e-9, abs=1e-12)
    assert sim.n_orders[0] > 60


@pytest.mark.parametrize("fee", [0.0, 25.0])
@pytest.mark.parametrize("model", list(MODELS))
def test_batched_simulator_matches_the_reference(prices, model: str, fee: float) -> None:
    spec, starts = MODELS[model], np.array([30, 90, 150, 210])
    targets = np.stack([random_targets(350, seed) for seed in range(len(starts))], axis=1)
    targets[:, 3] = random_targets(350, 9, low=-1.0)  # shorts, covers and flips too
    sim = make_simulator(prices, spec, fee, n=len(starts), allow_short=True)
    sim.reset(starts)
    equity = np.array([sim.step(t).equity.copy() for t in targets])
    for a, start in enumerate(starts):
        expected = reference(prices, targets[:, a], int(start), spec, fee, allow_short=True)
        np.testing.assert_allclose(equity[:, a], expected["equity"], rtol=1e-9, atol=0, err_msg=f"account {a}")
        assert sim.units[a] == pytest.approx(expected["units"][-1], rel=1e-9, abs=1e-12)


def test_a_fee_too_large_for_the_order_sends_nothing(prices) -> None:
    """On flat prices with a fee of 100: trimming a fully invested account (no cash) by 0.0005 frees
    less than the fee and is not sent; with cash, the same trim is. Topping up by 0.0003 leaves no room
    for the fee: no buy. Orders not sent keep the last target. The reference agrees."""
    targets = [1.0, 1.0, 0.9995, 0.9995, 0.5, 0.6, 0.6003, 0.61, 0.6095, 0.0]
    fee = 100.0
    flat = {key: np.full(20, 100.0) for key in ("open", "high", "low", "close")}
    flat["volume"] = np.full(20, 1e6)
    sim = make_simulator(flat, 5.0, fee)
    sim.reset(0)
    filled, kept = [], []
    for t in targets:
        filled.append(bool(sim.step(np.array([t])).filled[0]))
        kept.append(float(sim.target[0]))
        assert sim.cash[0] >= 0
    assert filled == [True, False, False, False, True, True, False, True, True, True]
    assert kept == [1.0, 1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.61, 0.6095, 0.0]
    assert sim.cash[0] >= 0
    expected = reference(flat, targets, 0, 5.0, fee)
    assert sim.equity[0] == pytest.approx(expected["equity"][-1], rel=1e-9)
    # from flat, an account whose equity is under the fee buys nothing
    broke = make_simulator(prices, 5.0, 2 * INITIAL)
    broke.reset(100)
    assert not broke.step(np.array([1.0])).filled[0] and broke.target[0] == 0.0 and broke.cash[0] == INITIAL


# ----- the env and the backtester against the reference ---------------------------------------
@pytest.fixture(scope="module")
def market():
    return build_market_data({"SYN": synthetic_bars(500, seed=3, overnight_fraction=0.3)}, DatasetConfig(window=8))


class Replay:
    name = "replay"

    def __init__(self, actions) -> None:
        self.actions, self.k = list(actions), 0

    def reset(self) -> None:
        self.k = 0

    def act(self, observation: np.ndarray):
        action = self.actions[min(self.k, len(self.actions) - 1)]
        self.k += 1
        return action


def market_prices(market) -> dict[str, np.ndarray]:
    return {"open": market.open, "close": market.close, "volume": market.volume}


@pytest.mark.parametrize("fee", [0.0, 25.0])
@pytest.mark.parametrize("model", list(MODELS))
def test_env_matches_the_reference(market, model: str, fee: float) -> None:
    spec = MODELS[model]
    env = TradingEnv(market, symbol="SYN", split="train", action_mode="continuous", random_start=False,
                     min_equity=0.0, commission=COMMISSION, fixed_fee=fee, slippage=spec)
    _, info = env.reset(seed=0)
    start, n_steps = info["row"], int(env.core.sym_end[0] - 1 - info["row"])
    targets = random_targets(n_steps, seed=4)
    expected = reference(market_prices(market), targets, start, spec, fee)
    equity, rewards = [info["equity"]], []
    for target in targets:
        _, reward, terminated, truncated, info = env.step(np.array([target], dtype=np.float32))
        equity.append(info["equity"])
        rewards.append(reward)
    assert truncated and not terminated
    np.testing.assert_allclose(equity[1:], expected["equity"], rtol=1e-9, atol=0)
    assert sum(rewards) == pytest.approx(math.log(equity[-1] / INITIAL), rel=1e-9, abs=1e-12)
    assert sum(rewards) == pytest.approx(math.log(expected["equity"][-1] / INITIAL), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("fee", [0.0, 25.0])
@pytest.mark.parametrize("model", list(MODELS))
def test_backtest_matches_the_reference(market, model: str, fee: float) -> None:
    spec = MODELS[model]
    lo, hi = market.split_range("validation", "SYN")
    targets = random_targets(hi - 1 - lo, seed=5)
    costs = Costs(commission=COMMISSION, fixed_fee=fee, slippage=spec)
    result = backtest(Replay([np.array([t], np.float32) for t in targets]), market, "validation", costs,
                      symbol="SYN", action_mode="continuous")
    start = int(np.searchsorted(market.timestamps.view("datetime64[ns]"), result.timestamps[0]))
    expected = reference(market_prices(market), targets[: len(result.equity) - 1], start, spec, fee)
    assert result.equity[0] == INITIAL
    np.testing.assert_allclose(result.equity[1:], expected["equity"], rtol=1e-9, atol=0)
    assert result.rewards.sum() == pytest.approx(math.log(result.equity[-1] / INITIAL), rel=1e-9, abs=1e-12)


# ----- invariants ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fee", [0.0, 25.0])
@pytest.mark.parametrize("model", [*MODELS, "volume_heavy"])
@pytest.mark.parametrize("fill_at", ["next_open", "close"])
def test_long_targets_never_make_cash_negative(model: str, fee: float, fill_at: str) -> None:
    """Cash >= 0 after every step and exposure <= 1 after every buy of 1.0, for targets in [0, 1], with
    a batch of accounts (batched path) and one account (single-account path)."""
    spec = {"model": "volume", "impact": 2.0, "window": 5} if model == "volume_heavy" else MODELS[model]
    prices = generate_ohlcv(800, sigma=0.03, overnight_fraction=0.5, seed=21)
    prices["volume"] = prices["volume"] / 10  # orders of ~1% of a bar's dollar volume
    targets = np.stack([random_targets(700, seed, step=1e-3) for seed in range(8)], axis=1)
    targets[:, 0] = np.where(np.arange(700) % 2, 1.0, 0.0)  # all in, all out
    targets[:, 1] = np.where(np.arange(700) % 3, 1.0, 0.3)  # top up to 1.0 from a partial long
    batch, one = make_simulator(prices, spec, fee, n=8, fill_at=fill_at), make_simulator(prices, spec, fee,
                                                                                        fill_at=fill_at)
    batch.reset(20)
    one.reset(20)
    buys_of_one = 0
    for step_targets in targets:
        result = batch.step(step_targets)
        single = one.step(step_targets[:1])
        for sim, res, t in ((batch, result, step_targets), (one, single, step_targets[:1])):
            assert (sim.cash >= 0).all(), f"cash {sim.cash.min()} at row {sim.row[0]}"
            bought_all = res.filled & (t == 1.0)
            exposure = sim.exposure()
            assert (exposure[bought_all] <= 1.0).all()
            assert (exposure <= 1.0).all()  # cash >= 0: the position is never worth more than the equity
            buys_of_one += int(bought_all.sum())
    assert buys_of_one > 300  # (the heavy impact model eats most of the equity: later buys are skipped)
    if not model.startswith("volume") and fee == 0.0:
        # the exact rule: all in leaves no cash (up to the FIT haircut)
        all_in = make_simulator(prices, spec, 0.0, fill_at=fill_at)
        all_in.reset(20)
        all_in.step(np.array([1.0]))
        assert 0.0 <= all_in.cash[0] <= 1e-13 * all_in.equity[0]


@pytest.mark.parametrize("model", list(MODELS))
def test_target_sets_exposure_after_costs_at_the_reference_price(prices, model: str) -> None:
    """Right after a buy, the position at the reference price is target x the equity left after the
    costs, and the rest is cash: cash = (1 - t) x (equity - costs)."""
    spec = MODELS[model]
    for target in (0.25, 0.6, 1.0):
        sim = make_simulator(prices, spec, 10.0, record_trades=True)
        sim.reset(200)
        res = sim.step(np.array([target]))
        ref = sim.fill_log()["reference_price"][0]
        value, cost = sim.units[0] * ref, res.cost[0]
        left = INITIAL - cost  # the equity at ref after the fill
        assert sim.cash[0] + value == pytest.approx(left, rel=1e-12)
        if model == "volume":  # sized on the naive order's (larger) fraction: a little under the target
            assert target * left * (1 - 1e-3) < value < target * left
        else:
            assert value == pytest.approx(target * left, rel=1e-12)
            assert sim.cash[0] == pytest.approx((1 - target) * left, rel=1e-9, abs=1e-9 * INITIAL)
