"""SB3 callbacks: periodic validation with trading metrics in TensorBoard, keeping the best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from features.market_data import MarketData
from sim.engine import Costs

from .evaluation import evaluate_policy
from .saved_agent import AgentPolicy, save_agent


class TradingEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, backtest the deterministic policy on the validation split.

    Logs ``eval/log_return``, ``eval/total_return``, ``eval/sharpe``, ``eval/max_drawdown``,
    ``eval/n_trades``, ``eval/n_orders``, ``eval/turnover``, ``eval/costs_paid``, ``eval/exposure`` and
    ``eval/tstat`` and ``eval/best_log_return``. A checkpoint is kept only if its mean validation log
    return beats the cash baseline (0) by more than ``min_improvement`` and every earlier checkpoint, and
    its per-bar returns beat cash with a t statistic of at least ``min_tstat`` (a lucky run of a policy
    with no edge does not count); if none ever does, the saved best agent falls back to cash
    (``fallback="cash"``): doing nothing is the safe outcome.

    :param data: the dataset.
    :param split: evaluation split (validation).
    :param costs: the training env's costs.
    :param env_settings: the agent's env settings.
    :param eval_freq: env steps between evaluations.
    :param best_dir: where the best agent is written.
    :param save_kwargs: passed to :func:`agents.saved_agent.save_agent`.
    :param min_improvement: margin over the cash baseline's log return (0).
    :param min_tstat: t statistic of validation returns a checkpoint needs.
    """

    def __init__(self, data: MarketData, split: str, costs: Costs, env_settings: dict[str, Any], eval_freq: int,
                 best_dir: Path, save_kwargs: dict[str, Any], min_improvement: float = 0.0, min_tstat: float = 1.5, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.data = data
        self.split = split
        self.costs = costs
        self.env_settings = env_settings
        self.eval_freq = eval_freq
        self.best_dir = Path(best_dir)
        self.save_kwargs = save_kwargs
        self.best_score = min_improvement  # the cash baseline's log return is 0
        self.min_tstat = min_tstat
        self.best_metrics: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self._next_eval = eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, Any]:
        policy = AgentPolicy(self.model, self.env_settings)
        metrics = evaluate_policy(policy, self.data, self.split, self.costs, self.env_settings)
        metrics["timesteps"] = int(self.num_timesteps)
        self.history.append(metrics)
        for key in ("tstat", "log_return", "total_return", "sharpe", "max_drawdown", "n_trades", "n_orders", "turnover",
                    "costs_paid", "exposure"):
            self.logger.record(f"eval/{key}", metrics[key])
        if metrics["log_return"] > self.best_score and metrics["tstat"] >= self.min_tstat:
            self.best_score = metrics["log_return"]
            self.best_metrics = metrics
            save_agent(self.best_dir, self.model, validation=metrics, **self.save_kwargs)
        self.logger.record("eval/best_log_return", self.best_score if self.best_metrics else 0.0)
        self.logger.dump(self.num_timesteps)
        if self.verbose:
            print(f"[eval {self.num_timesteps}] validation log return {metrics['log_return']:+.4f}, "
                  f"t {metrics['tstat']:+.2f}, {metrics['n_orders']} orders, best {self.best_score:+.4f}")
        return metrics

    def finish(self) -> None:
        """Evaluate the final model; if nothing beat cash, save the cash fallback as the best agent."""
        if not self.history or self.history[-1]["timesteps"] != self.num_timesteps:
            self.evaluate()
        if self.best_metrics is None:
            save_agent(self.best_dir, self.model, fallback="cash",
                       validation={"log_return": 0.0, "note": "no checkpoint beat the cash baseline on validation",
                                   "checkpoints": [float(h["log_return"]) for h in self.history]},
                       **self.save_kwargs)

