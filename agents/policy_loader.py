"""Turn a ``--policy`` argument into a policy object: a baseline name, an RL agent or a supervised bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.market_data import MarketData

from .baselines import BASELINES, make_baseline

RL_AGENT_FILE = "agent.json"
SUPERVISED_BUNDLE_FILE = "bundle.json"


def load_policy(spec: str, data: MarketData, *, seed: int = 0, allow_short: bool = False) -> Any:
    """A policy for :func:`envs.backtest` from a name or a path.

    :param spec: a baseline name (``cash``, ``buy_and_hold``, ``random``, ``sma_crossover``), a saved RL
        agent directory (holding ``agent.json``), or a supervised bundle directory (``bundle.json``).
    :param data: the dataset the backtest runs on; saved policies are checked against it.
    :param seed: seed of stochastic baselines.
    :param allow_short: action space of baselines.
    """
    if spec in BASELINES:
        return make_baseline(spec, data, seed=seed, allow_short=allow_short)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--policy {spec!r} is neither a baseline ({', '.join(BASELINES)}) nor an existing path"
        )
    if path.is_file():
        path = path.parent
    if (path / RL_AGENT_FILE).exists():
        from .saved_agent import load_agent

        return load_agent(path, data)
    bundle = path / SUPERVISED_BUNDLE_FILE
    if not bundle.exists() and (path / "model" / SUPERVISED_BUNDLE_FILE).exists():
        path = path / "model"
    if (path / SUPERVISED_BUNDLE_FILE).exists():
        from supervised.bundle import load_model

        from .supervised_policy import SupervisedThresholdPolicy

        model = load_model(path)
        try:
            model.preprocessing.check(data)  # timeframe and symbols; the rest is rebuilt by the backtester
        except ValueError as error:
            raise ValueError(f"model {path} cannot run on this data: {error}") from None
        return SupervisedThresholdPolicy(model)
    raise ValueError(
        f"{path} holds neither an RL agent ({RL_AGENT_FILE}) nor a supervised bundle ({SUPERVISED_BUNDLE_FILE})"
    )
