"""Backtest throughput side by side: ``backtest()`` of the SMA crossover against backtesting.py and vectorbt.

Run ``python -m benchmarks.bench_backtest`` (``--rounds`` interleaved rounds, default 7; ``--seconds``
per contender per round, default 0.3). Every contender runs the same strategy on the same bars: long while
SMA(10) > SMA(50) of the close, flat otherwise, filled at the next bar's open where the library allows,
0.10% commission and 5 bps slippage per side, on the default dataset's first symbol's train split. The
rows are timed in interleaved rounds and each keeps its best round, so a busy machine slows all alike;
``vs backtesting.py`` is the ratio within this run. Peers are benchmark-only extras
(``pip install -e ".[bench]"``); a missing one prints "not installed".

- ``ours, fast path``: ``envs.backtest`` with ``SMACrossoverPolicy`` (its ``act_windows`` computes every
  action in one call; the simulator steps only the order bars). Metrics (Sharpe, drawdown, trade log...)
  included. The SMAs are dataset features, computed once when the dataset is built (not timed).
- ``ours, event path``: the same policy through ``act(observation)`` bar by bar (the equity is identical).
- ``backtesting.py``: ``Backtest(..., commission=0.001, spread=0.001).run()`` (stats included; SMAs
  computed inside ``Strategy.init``).
- ``vectorbt``: ``Portfolio.from_signals`` on the close with fees and slippage (warm: numba compiled by an
  untimed first call), plus total return, Sharpe and max drawdown.

A second table times the supervised threshold policy (an LSTM classifier of the default size, untrained:
the weights do not change the cost; entry at the median probability so it trades) on the same bars:
``act_path`` (every window's probability in batched forward passes, then the entry/exit rule, then the
simulator only where the target changes) against the event path (one forward pass per bar).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from typing import Callable

import numpy as np
import pandas as pd

from agents.baselines import make_baseline
from envs import backtest, default_market_data
from sim import Costs


class EventPath:
    """A policy without its fast-path method (``act_windows``, ``act_path``): the backtester asks it bar by bar."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.name = getattr(policy, "name", type(policy).__name__)

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation: np.ndarray) -> int:
        return self.policy.act(observation)


def bars_frame(data, symbol: str, split: str) -> tuple[pd.DataFrame, int]:
    """OHLCV of ``symbol``'s ``split`` with 50 warm-up bars before it, and the number of split bars."""
    lo, hi = data.split_range(split, symbol)
    start = max(lo - 50, int(data.offsets[data.symbol_index(symbol)]))
    index = pd.to_datetime(data.timestamps[start:hi], utc=True).tz_localize(None)
    frame = pd.DataFrame({"Open": data.open[start:hi], "High": data.high[start:hi], "Low": data.low[start:hi],
                          "Close": data.close[start:hi], "Volume": data.volume[start:hi]}, index=index)
    return frame, hi - lo


def backtesting_py(frame: pd.DataFrame) -> Callable[[], None] | None:
    try:
        from backtesting import Backtest, Strategy
        from backtesting.lib import crossover
    except ImportError:
        return None

    def sma(values, n):
        return pd.Series(values).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 50)

        def next(self):
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()

    bt = Backtest(frame, SmaCross, cash=100_000, commission=0.001, spread=0.001, finalize_trades=True)

    def run() -> None:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            warnings.simplefilter("ignore")
            bt.run()

    return run


def vectorbt_run(frame: pd.DataFrame) -> Callable[[], None] | None:
    try:
        import vectorbt as vbt
    except ImportError:
        return None
    close = frame["Close"]

    def run() -> None:
        fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
        long = fast > slow
        entries, exits = long & ~long.shift(1, fill_value=False), ~long & long.shift(1, fill_value=False)
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, slippage=0.0005, init_cash=100_000,
                                        freq="1D")
        pf.total_return(), pf.sharpe_ratio(), pf.max_drawdown()

    run()  # compile (numba) before timing
    return run


def interleaved(contenders: dict[str, Callable[[], None]], rounds: int, seconds: float) -> dict[str, float]:
    """Best calls/s of each contender over ``rounds`` rounds that take turns (one warm-up call each)."""
    best = {name: 0.0 for name in contenders}
    for run in contenders.values():
        run()
    for _ in range(rounds):
        for name, run in contenders.items():
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                run()
                calls += 1
            best[name] = max(best[name], calls / elapsed)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each row keeps its best")
    parser.add_argument("--seconds", type=float, default=0.3, help="timed seconds per contender per round")
    parser.add_argument("--split", default="train", help="split of the first symbol to backtest")
    args = parser.parse_args(argv)

    data = default_market_data()
    symbol = data.symbols[0]
    policy = make_baseline("sma_crossover", data)
    costs = Costs(commission=0.001, slippage=5.0)
    fast = backtest(policy, data, args.split, costs, symbol=symbol)
    event = backtest(EventPath(policy), data, args.split, costs, symbol=symbol)
    same = np.array_equal(fast.equity, event.equity)
    frame, bars = bars_frame(data, symbol, args.split)

    contenders: dict[str, Callable[[], None]] = {
        "ours, fast path (act_windows)": lambda: backtest(policy, data, args.split, costs, symbol=symbol),
        "ours, event path (act per bar)": lambda: backtest(EventPath(policy), data, args.split, costs, symbol=symbol),
    }
    missing = []
    for name, make in (("backtesting.py", backtesting_py), ("vectorbt from_signals (warm)", vectorbt_run)):
        run = make(frame)
        if run is None:
            missing.append(name)
        else:
            contenders[name] = run
    rates = interleaved(contenders, args.rounds, args.seconds)
    reference = rates.get("backtesting.py")
    print(f"SMA(10/50) crossover, {symbol} {args.split}: {bars} bars, costs {costs.describe()}; best of "
          f"{args.rounds} interleaved rounds; fast path equity == event path: {same} "
          f"({fast.metrics['n_orders']} orders)")
    width = max(len(name) for name in list(contenders) + missing)
    print(f"{'contender'.ljust(width)}  {'bars/s':>11}  {'ms/run':>7}  vs backtesting.py")
    for name, calls in rates.items():
        ratio = f"{calls / reference:.2f}x" if reference else "-"
        print(f"{name.ljust(width)}  {calls * bars:>11,.0f}  {1000 / calls:>7.2f}  {ratio}")
    for name in missing:
        print(f"{name.ljust(width)}  {'not installed':>11}")
    print()
    threshold_table(data, symbol, args.split, costs, args.rounds, args.seconds)


def threshold_table(data, symbol: str, split: str, costs: Costs, rounds: int, seconds: float) -> None:
    """The supervised threshold policy: fast path (``act_path``) against the event path, same bars."""
    import tempfile

    import torch

    from agents.supervised_policy import SupervisedThresholdPolicy
    from features.preprocessing import Preprocessing
    from supervised.bundle import load_model, save_bundle
    from supervised.models import ModelConfig, build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = ModelConfig(kind="lstm", window=data.window, n_features=data.n_features, n_assets=data.n_assets)
    with tempfile.TemporaryDirectory() as folder:
        save_bundle(f"{folder}/m", build_model(config), config, preprocessing=Preprocessing.of(data),
                    label=data.label, threshold=0.5, dataset_hashes={})
        model = load_model(f"{folder}/m")
    lo, hi = data.split_range(split, symbol)
    rows = np.arange(lo + data.window, hi)
    median = float(np.median(model.predict_proba(data.windows(rows), data.row_asset_ids[rows])))
    policy = SupervisedThresholdPolicy(model, entry_threshold=median, exit_threshold=median - 0.01)
    fast = backtest(policy, data, split, costs, symbol=symbol)
    event = backtest(EventPath(policy), data, split, costs, symbol=symbol)
    same = np.array_equal(fast.equity, event.equity)
    contenders = {
        "threshold policy, fast path (act_path)": lambda: backtest(policy, data, split, costs, symbol=symbol),
        "threshold policy, event path (act per bar)": lambda: backtest(EventPath(policy), data, split, costs,
                                                                        symbol=symbol),
    }
    rates = interleaved(contenders, rounds, seconds)
    bars = len(fast.equity) - 1
    reference = rates["threshold policy, event path (act per bar)"]
    print(f"supervised threshold policy (LSTM, {sum(p.numel() for p in model.classifier.parameters()):,} "
          f"parameters, 1 torch thread), {symbol} {split}: {bars} bars; fast path equity == event path: {same} "
          f"({fast.metrics['n_orders']} orders)")
    width = max(len(name) for name in contenders)
    print(f"{'contender'.ljust(width)}  {'bars/s':>11}  {'ms/run':>7}  vs event path")
    for name, calls in rates.items():
        print(f"{name.ljust(width)}  {calls * bars:>11,.0f}  {1000 / calls:>7.2f}  {calls / reference:.2f}x")


if __name__ == "__main__":
    main()
