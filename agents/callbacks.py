"""SB3 callbacks: periodic validation with trading metrics in TensorBoard, keeping the best checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from features.market_data import MarketData
from sim.engine import Costs

from .evaluation import buy_and_hold_bar_returns, evaluate_policy
from .saved_agent import AgentPolicy, save_agent


@dataclass(frozen=True)
class CheckpointRule:
    """Which validation checkpoints may be kept, and how the kept one is chosen.

    A checkpoint qualifies when its per-bar validation returns beat cash with a t statistic of at least
    ``min_tstat``, and (rule ``"cash_and_buy_and_hold"``) its per-bar excess over buy-and-hold has a t
    statistic of at least ``min_excess_tstat``: a long-biased policy that rides a bull window without beating
    simply holding does not qualify; rule ``"cash_and_alpha"`` asks the same of its Jensen's alpha (the intercept of
    its per-bar returns regressed on buy-and-hold's): market exposure earns nothing there, timing does. Its score is the
    validation log return less ``turnover_penalty`` per order (both per symbol, see :meth:`score`); it must beat
    ``min_improvement`` (cash scores 0) and every earlier kept checkpoint.

    :param rule: ``"cash"``, ``"cash_and_buy_and_hold"`` or ``"cash_and_alpha"``.
    :param min_improvement: score a checkpoint must beat.
    :param min_tstat: t statistic against cash.
    :param min_excess_tstat: t statistic of the excess over buy-and-hold (rule ``cash_and_buy_and_hold``) or of
        the alpha (rule ``cash_and_alpha``).
    :param turnover_penalty: log return charged per validation order.
    """

    rule: str = "cash"
    min_improvement: float = 0.0
    min_tstat: float = 1.5
    min_excess_tstat: float = 0.0
    turnover_penalty: float = 0.0

    @classmethod
    def of(cls, config: Any) -> "CheckpointRule":
        """The rule of an :class:`agents.config.AgentConfig`."""
        excess = config.min_excess_tstat
        if excess is None:
            excess = min(0.0, config.min_tstat)
        return cls(config.selection_rule, config.min_improvement, config.min_tstat, float(excess),
                   config.turnover_penalty)

    @property
    def needs_buy_and_hold(self) -> bool:
        return self.rule in ("cash_and_buy_and_hold", "cash_and_alpha")

    def describe(self) -> str:
        """One line for summaries, agent.json and reports."""
        parts = [f"t vs cash >= {self.min_tstat:g}"]
        if self.rule == "cash_and_buy_and_hold":
            parts.append(f"t of excess over buy-and-hold >= {self.min_excess_tstat:g}")
        elif self.rule == "cash_and_alpha":
            parts.append(f"t of alpha over buy-and-hold >= {self.min_excess_tstat:g}")
        score = "validation log return" + (f" - {self.turnover_penalty:g} x orders" if self.turnover_penalty else "")
        return f"{self.rule}: {' and '.join(parts)}; best {score} above {self.min_improvement:g}"

    def score(self, metrics: dict[str, Any]) -> float:
        """Validation log return less ``turnover_penalty`` per order, per symbol: ``log_return`` is the mean over
        the split's symbols and ``n_orders`` their sum, so the orders are divided by ``n_symbols`` (1 where the
        metrics do not say); charging the sum would make a 4-symbol dataset pay 4 times per order.

        :param metrics: :func:`agents.evaluation.evaluate_policy`'s metrics.
        """
        orders_per_symbol = float(metrics["n_orders"]) / int(metrics.get("n_symbols") or 1)
        return float(metrics["log_return"]) - self.turnover_penalty * orders_per_symbol

    def qualifies(self, metrics: dict[str, Any]) -> bool:
        if metrics["tstat"] < self.min_tstat:
            return False
        if self.rule == "cash_and_alpha":
            return metrics["alpha_tstat"] >= self.min_excess_tstat
        return not self.needs_buy_and_hold or metrics["excess_tstat"] >= self.min_excess_tstat


class TradingEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, backtest the deterministic policy on the validation split.

    Logs ``eval/log_return``, ``eval/total_return``, ``eval/sharpe``, ``eval/max_drawdown``,
    ``eval/n_trades``, ``eval/n_orders``, ``eval/turnover``, ``eval/costs_paid``, ``eval/exposure``,
    ``eval/tstat``, ``eval/excess_tstat`` (over buy-and-hold), ``eval/score`` and ``eval/best_score``. A
    checkpoint is kept when ``rule`` says it qualifies and its score beats every earlier one (see
    :class:`CheckpointRule`); if none ever does, the saved best agent falls back to cash
    (``fallback="cash"``): doing nothing is the safe outcome.

    :param data: the dataset.
    :param split: evaluation split (validation).
    :param costs: the training env's costs.
    :param env_settings: the agent's env settings.
    :param eval_freq: env steps between evaluations.
    :param best_dir: where the best agent is written.
    :param save_kwargs: passed to :func:`agents.saved_agent.save_agent`.
    :param min_improvement: margin over the cash baseline's log return (0); used when ``rule`` is None.
    :param min_tstat: t statistic of validation returns a checkpoint needs; used when ``rule`` is None.
    :param rule: the checkpoint rule; None: the ``"cash"`` rule with ``min_improvement`` and ``min_tstat``.
    :param wrap_policy: turns the model into the backtester policy (e.g. adding observation normalisation).
    """

    def __init__(self, data: MarketData, split: str, costs: Costs, env_settings: dict[str, Any], eval_freq: int,
                 best_dir: Path, save_kwargs: dict[str, Any], min_improvement: float = 0.0, min_tstat: float = 1.5,
                 verbose: int = 0, *, rule: CheckpointRule | None = None, wrap_policy: Any = None) -> None:
        super().__init__(verbose)
        self.data = data
        self.split = split
        self.costs = costs
        self.env_settings = env_settings
        self.eval_freq = eval_freq
        self.best_dir = Path(best_dir)
        self.save_kwargs = save_kwargs
        self.rule = rule or CheckpointRule("cash", min_improvement, min_tstat)
        self.best_score = self.rule.min_improvement  # the cash baseline scores 0
        self.min_tstat = self.rule.min_tstat
        self.wrap_policy = wrap_policy
        self.best_metrics: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0  # time spent scoring checkpoints (and saving the best), for the summary
        self._next_eval = eval_freq
        self._benchmark = (buy_and_hold_bar_returns(data, split, costs, env_settings)
                           if self.rule.needs_buy_and_hold else None)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self._evaluate()
        finally:
            self.eval_seconds += time.perf_counter() - started

    def _evaluate(self) -> dict[str, Any]:
        policy = self.wrap_policy(self.model) if self.wrap_policy else AgentPolicy(self.model, self.env_settings)
        metrics = evaluate_policy(policy, self.data, self.split, self.costs, self.env_settings,
                                  benchmark_returns=self._benchmark)
        metrics["timesteps"] = int(self.num_timesteps)
        metrics["score"] = self.rule.score(metrics)
        self.history.append(metrics)
        for key in ("tstat", "excess_tstat", "alpha_tstat", "beta", "score", "log_return", "total_return", "sharpe", "max_drawdown",
                    "n_trades", "n_orders", "turnover", "costs_paid", "exposure"):
            if key in metrics:
                self.logger.record(f"eval/{key}", metrics[key])
        if metrics["score"] > self.best_score and self.rule.qualifies(metrics):
            self.best_score = metrics["score"]
            self.best_metrics = metrics
            save_agent(self.best_dir, self.model, validation=metrics, selection_rule=self.rule.describe(),
                       **self.save_kwargs)
        self.logger.record("eval/best_score", self.best_score if self.best_metrics else 0.0)
        self.logger.dump(self.num_timesteps)
        if self.verbose:
            excess = f", excess t {metrics['excess_tstat']:+.2f}" if "excess_tstat" in metrics else ""
            print(f"[eval {self.num_timesteps}] validation log return {metrics['log_return']:+.4f}, "
                  f"t {metrics['tstat']:+.2f}{excess}, {metrics['n_orders']} orders, best {self.best_score:+.4f}")
        return metrics

    def finish(self) -> None:
        """Evaluate the final model; if nothing beat cash, save the cash fallback as the best agent."""
        if not self.history or self.history[-1]["timesteps"] != self.num_timesteps:
            self.evaluate()
        if self.best_metrics is None:
            save_agent(self.best_dir, self.model, fallback="cash", selection_rule=self.rule.describe(),
                       validation={"log_return": 0.0, "note": "no checkpoint met the selection rule on validation",
                                   "checkpoints": [float(h["log_return"]) for h in self.history]},
                       **self.save_kwargs)
