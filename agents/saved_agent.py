"""A trained agent on disk (SB3 zip + ``agent.json``) and as a backtester policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from features.atomic_io import write_directory_atomic
from features.market_data import MarketData

AGENT_ZIP = "agent.zip"
AGENT_JSON = "agent.json"


class AgentPolicy:
    """An SB3 model as a backtester policy: ``act(obs)`` is the model's deterministic action.

    With ``fallback="cash"`` (no checkpoint beat the cash baseline on validation) it stays flat.

    :param model: a stable-baselines3 model (PPO or DQN).
    :param env_settings: the env settings the model was trained with (action_mode, allow_short, window).
    :param fallback: None, or ``"cash"``.
    :param name: label in reports.
    """

    def __init__(self, model: Any, env_settings: dict[str, Any], fallback: str | None = None,
                 name: str = "agent") -> None:
        self.model = model
        self.env_settings = dict(env_settings)
        self.fallback = fallback
        self.name = name if fallback is None else f"{name} (cash fallback)"
        self._flat = 1 if env_settings.get("allow_short") else 0
        self._continuous = env_settings.get("action_mode") == "continuous"

    def reset(self) -> None:
        """Stateless: nothing to clear."""

    def act(self, observation: np.ndarray) -> Any:
        if self.fallback == "cash":
            return np.zeros(1, dtype=np.float32) if self._continuous else self._flat
        action, _ = self.model.predict(observation, deterministic=True)
        return action if self._continuous else int(action)


def agent_env_settings(env_config: Any, window: int) -> dict[str, Any]:
    """The env settings a saved agent needs to act: action mode, shorting, window, fill timing."""
    return {"action_mode": env_config.action_mode, "allow_short": env_config.allow_short,
            "window": window, "fill_at": env_config.fill_at}


def save_agent(path: str | Path, model: Any, *, algo: str, env_settings: dict[str, Any], data: MarketData,
               config: dict[str, Any], fallback: str | None = None, validation: dict[str, Any] | None = None) -> Path:
    """Write ``agent.zip`` and ``agent.json`` (dataset manifest it expects, env settings, scores) atomically.

    :param path: directory to write.
    :param model: the SB3 model.
    :param algo: ``"ppo"`` or ``"dqn"``.
    :param env_settings: from :func:`agent_env_settings`.
    :param data: the dataset the agent was trained on (its feature names, window and hashes are recorded).
    :param config: the agent config as a dict.
    :param fallback: ``"cash"`` when no checkpoint beat cash on validation.
    :param validation: validation metrics of this checkpoint.
    """
    meta = {
        "algo": algo,
        "env_settings": env_settings,
        "fallback": fallback,
        "dataset": {"feature_names": data.feature_names, "window": data.window, "symbols": data.symbols,
                    "asset_map": data.asset_map, "hashes": data.hashes, "config": data.config},
        "config": config,
        "validation": validation or {},
    }

    def fill(directory: Path) -> None:
        model.save(directory / AGENT_ZIP)
        (directory / AGENT_JSON).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    return write_directory_atomic(path, fill)


def load_agent(path: str | Path, data: MarketData | None = None) -> AgentPolicy:
    """Load a saved agent as a policy; with ``data``, check it observes what the agent expects.

    :param path: directory written by :func:`save_agent`.
    :param data: the dataset to run on; feature names, window and asset ids must match.
    """
    path = Path(path)
    meta_path = path / AGENT_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a saved agent: {meta_path} is missing")
    meta = json.loads(meta_path.read_text())
    if data is not None:
        check_agent_data(meta, data, path)
    zip_path = path / AGENT_ZIP
    if not zip_path.exists():
        raise FileNotFoundError(f"saved agent {path} is incomplete: {zip_path} is missing")
    from stable_baselines3 import DQN, PPO

    algo = {"ppo": PPO, "dqn": DQN}.get(meta["algo"])
    if algo is None:
        raise ValueError(f"{meta_path}: algo {meta['algo']!r} is not known (expected ppo or dqn)")
    model = algo.load(zip_path, device="cpu")
    return AgentPolicy(model, meta["env_settings"], meta.get("fallback"), name=f"{meta['algo']}:{path.name}")


def check_agent_data(meta: dict[str, Any], data: MarketData, where: Path | str) -> None:
    """Raise ``ValueError`` saying what differs between the agent's dataset and ``data``."""
    expected = meta["dataset"]
    if expected["feature_names"] != data.feature_names:
        missing = [f for f in expected["feature_names"] if f not in data.feature_names]
        extra = [f for f in data.feature_names if f not in expected["feature_names"]]
        raise ValueError(
            f"agent {where} was trained on {len(expected['feature_names'])} features that differ from the "
            f"dataset's {len(data.feature_names)}: missing {missing}, unexpected {extra} (or a different order)"
        )
    for symbol, asset_id in data.asset_map.items():
        known = expected["asset_map"].get(symbol)
        if known is not None and known != asset_id:
            raise ValueError(f"agent {where}: symbol {symbol} has asset id {asset_id} here but {known} in training")
