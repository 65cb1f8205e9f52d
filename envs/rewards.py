"""Reward functions, selectable by name, vectorised over accounts.

- ``log_return`` (default): ``log(equity_t / equity_{t-1})``, net of every cost charged this step.
  Summed over an episode it equals ``log(final_equity / initial_equity)``.
- ``drawdown_penalty``: the log return minus ``drawdown_penalty`` times the increase of the drawdown
  (fraction below the running equity peak) this step.
- ``differential_sharpe``: Moody & Saffell's differential Sharpe ratio of the simple return, with
  moving moments of rate ``dsr_eta``; 0 until the variance estimate is positive.
"""

from __future__ import annotations

import numpy as np

REWARDS: tuple[str, ...] = ("log_return", "drawdown_penalty", "differential_sharpe")


class Reward:
    """Base reward: log return of equity. ``reset(accounts)`` clears per-account state."""

    def __init__(self, n: int) -> None:
        self.n = n

    def reset(self, accounts: np.ndarray | slice) -> None:
        """Clear the state of ``accounts`` at the start of an episode."""

    def __call__(self, prev_equity: np.ndarray, equity: np.ndarray, drawdown: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(equity, 1e-12) / prev_equity)


class DrawdownPenaltyReward(Reward):
    def __init__(self, n: int, penalty: float) -> None:
        super().__init__(n)
        self.penalty = penalty
        self.last_drawdown = np.zeros(n)

    def reset(self, accounts) -> None:
        self.last_drawdown[accounts] = 0.0

    def __call__(self, prev_equity, equity, drawdown):
        increase = np.maximum(drawdown - self.last_drawdown, 0.0)
        self.last_drawdown[:] = drawdown
        return super().__call__(prev_equity, equity, drawdown) - self.penalty * increase


class DifferentialSharpeReward(Reward):
    def __init__(self, n: int, eta: float) -> None:
        super().__init__(n)
        self.eta = eta
        self.a = np.zeros(n)
        self.b = np.zeros(n)

    def reset(self, accounts) -> None:
        self.a[accounts] = 0.0
        self.b[accounts] = 0.0

    def __call__(self, prev_equity, equity, drawdown):
        r = equity / prev_equity - 1.0
        da, db = r - self.a, r * r - self.b
        variance = self.b - self.a * self.a
        denom = np.power(np.maximum(variance, 0.0), 1.5)
        reward = np.divide(self.b * da - 0.5 * self.a * db, denom, out=np.zeros(self.n), where=denom > 1e-18)
        self.a += self.eta * da
        self.b += self.eta * db
        return reward


def make_reward(name: str, n: int, *, drawdown_penalty: float = 1.0, dsr_eta: float = 0.01) -> Reward:
    """The reward function called ``name`` for ``n`` accounts.

    :param name: one of ``log_return``, ``drawdown_penalty``, ``differential_sharpe``.
    :param n: number of accounts.
    :param drawdown_penalty: weight of the drawdown increase (``drawdown_penalty`` reward).
    :param dsr_eta: adaptation rate of the moving moments (``differential_sharpe`` reward).
    """
    if name == "log_return":
        return Reward(n)
    if name == "drawdown_penalty":
        if drawdown_penalty < 0:
            raise ValueError(f"drawdown_penalty={drawdown_penalty} must be >= 0")
        return DrawdownPenaltyReward(n, drawdown_penalty)
    if name == "differential_sharpe":
        if not 0 < dsr_eta < 1:
            raise ValueError(f"dsr_eta={dsr_eta} must be in (0, 1)")
        return DifferentialSharpeReward(n, dsr_eta)
    raise ValueError(f"reward={name!r} is not known; expected one of {list(REWARDS)}")
