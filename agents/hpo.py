"""Agent hyperparameter search with Optuna: the score is what the checkpoint rule keeps on validation.

Each trial trains a PPO or DQN agent as :func:`agents.training.train_agent` does (train split; every
``eval_freq`` steps the deterministic policy is backtested on validation and a checkpoint is kept only
if the checkpoint rule accepts it: it beats cash with ``min_tstat``). The trial's value is the rule's
score of the checkpoint kept (a validation log return), 0 when none qualified (the agent would stay
in cash). Test is never touched. After each validation
evaluation the trial reports that score so far, and the median pruner stops trials that trail the
study's others at the same evaluation.

Studies are shared by workers exactly as the supervised ones (``supervised.hpo``): any storage URL,
unique trial numbers, a heartbeat that fails and retries a dead worker's trial, TPE seeded per trial.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback

from configs.loader import config_to_dict, dataclass_from_dict
from features.atomic_io import write_directory_atomic, write_text_atomic
from features.market_data import MarketData
from supervised.hpo import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    HAND_BACK_FILE,
    check_study_settings,
    hand_back_record,
    interrupted_trials_in_one_line,
    open_study,
    prepare_trial_root,
    storage_errors,
    storage_label,
    worker_label,
)

from .callbacks import CheckpointRule, TradingEvalCallback
from .config import AgentConfig
from .training import prepare_training, train_agent

ALGO_ATTR = "algo"
DATASET_ATTR = "dataset_hashes"
CONFIG_FILE = "config.yaml"
#: The hyperparameters each algorithm's search space covers (besides ``net_arch``, the network size).
SEARCHED: dict[str, tuple[str, ...]] = {
    "ppo": ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range", "ent_coef"),
    "dqn": ("learning_rate", "batch_size", "gamma", "train_freq", "target_update_interval", "exploration_fraction",
            "exploration_final_eps"),
}
NET_ARCHS: tuple[str, ...] = ("32x32", "64x64", "128x128", "256x256")
GAMMAS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class AgentHPOConfig:
    """Study settings of an agent search (the ``hpo:`` section of ``configs/ppo_hpo.yaml``).

    :param n_trials: trials to add per run (per worker when several share a study).
    :param seed: TPE seed; trial ``n`` draws from a generator seeded by ``(seed, n)``.
    :param n_startup_trials: random trials before TPE models the space; also the pruner's count of
        completed trials before it prunes.
    :param pruner_warmup_evals: validation evaluations a trial runs before it can be pruned.
    :param heartbeat_interval: seconds between a running trial's heartbeats (0: none); a trial silent
        for ``grace_period`` is failed by the next worker that starts a trial.
    :param grace_period: seconds without heartbeat before a trial counts as dead (None: 2 intervals).
    :param max_retry: times a dead worker's trial is queued again with the same parameters.
    :param connect_timeout: seconds to wait for a PostgreSQL storage to accept and answer a connection (>= 2).
    :param statement_timeout: seconds one statement on a PostgreSQL storage may run (0: no limit).
    """

    n_trials: int = 20
    seed: int = 0
    n_startup_trials: int = 5
    pruner_warmup_evals: int = 2
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 1
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: int = DEFAULT_STATEMENT_TIMEOUT

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials={self.n_trials} must be >= 1")
        if self.pruner_warmup_evals < 0:
            raise ValueError(f"pruner_warmup_evals={self.pruner_warmup_evals} must be >= 0")
        check_study_settings(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "hpo config") -> "AgentHPOConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, dict(data or {}), where)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def suggest_agent_config(trial: Any, base: AgentConfig) -> AgentConfig:
    """Sample an agent config from the search space of ``base.algo`` (everything else stays ``base``'s).

    Both: ``net_arch`` (policy/value or Q network size), ``learning_rate`` (log scale), ``gamma``,
    ``batch_size``. PPO: ``n_steps`` per env per rollout, ``n_epochs``, ``gae_lambda``, ``clip_range``,
    ``ent_coef`` (log scale). DQN: ``train_freq``, ``target_update_interval``, ``exploration_fraction``,
    ``exploration_final_eps``.

    :param trial: an ``optuna.Trial``.
    :param base: the defaults (budget, env, extractor, checkpoint rule).
    """
    net_arch = tuple(int(v) for v in trial.suggest_categorical("net_arch", NET_ARCHS).split("x"))
    gamma = trial.suggest_categorical("gamma", GAMMAS)
    if base.algo == "ppo":
        ppo = dataclasses.replace(
            base.ppo,
            learning_rate=trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
            n_steps=trial.suggest_categorical("n_steps", (64, 128, 256, 512)),
            batch_size=trial.suggest_categorical("batch_size", (256, 512, 1024, 2048)),
            n_epochs=trial.suggest_categorical("n_epochs", (4, 10)),
            gamma=gamma,
            gae_lambda=trial.suggest_categorical("gae_lambda", (0.9, 0.95, 0.98)),
            clip_range=trial.suggest_categorical("clip_range", (0.1, 0.2, 0.3)),
            ent_coef=trial.suggest_float("ent_coef", 1e-4, 5e-2, log=True),
        )
        return dataclasses.replace(base, net_arch=net_arch, ppo=ppo)
    dqn = dataclasses.replace(
        base.dqn,
        learning_rate=trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        batch_size=trial.suggest_categorical("batch_size", (64, 128, 256)),
        gamma=gamma,
        train_freq=trial.suggest_categorical("train_freq", (1, 4, 8, 16)),
        target_update_interval=trial.suggest_categorical("target_update_interval", (250, 1000, 2000, 5000)),
        exploration_fraction=trial.suggest_float("exploration_fraction", 0.05, 0.5),
        exploration_final_eps=trial.suggest_float("exploration_final_eps", 0.01, 0.1, log=True),
    )
    return dataclasses.replace(base, net_arch=net_arch, dqn=dqn)


class _PruningEvalCallback(TradingEvalCallback):
    """The checkpoint rule's validation evaluation, reporting its score so far to an Optuna trial.

    The score after evaluation ``k`` is the checkpoint rule's score (a validation log return) of the
    checkpoint kept so far, 0 while none beats cash: what the trial's value would be if training stopped
    there. From evaluation ``warmup + 1`` on, a pruner verdict stops training.
    """

    def __init__(self, trial: Any, warmup_evals: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trial = trial
        self.warmup_evals = warmup_evals
        self.pruned_at: int | None = None

    @property
    def score(self) -> float:
        """The checkpoint rule's score of the checkpoint kept so far; 0 (cash) while none is kept."""
        return float(self.best_score) if self.best_metrics is not None else 0.0

    def evaluate(self) -> dict[str, Any]:
        metrics = super().evaluate()
        step = len(self.history) - 1
        self.trial.report(self.score, step)
        if self.pruned_at is None and step >= self.warmup_evals and self.trial.should_prune():
            self.pruned_at = int(self.num_timesteps)
        return metrics

    def _on_step(self) -> bool:
        super()._on_step()
        return self.pruned_at is None  # False stops model.learn


def train_trial(config: AgentConfig, data: MarketData, run_dir: str | Path, trial: Any, *, warmup_evals: int = 2,
                progress: bool = False) -> dict[str, Any]:
    """Train like :func:`agents.training.train_agent`, reporting each validation evaluation to ``trial``.

    Writes ``run_dir/best`` (the checkpoint kept, or the cash fallback) and TensorBoard logs under
    ``run_dir/tb``. A pruned trial stops at the evaluation the pruner rejects and raises
    ``optuna.TrialPruned`` (its logs are written).

    :param config: the trial's agent config.
    :param data: the dataset (train split to learn, ``config.eval_split`` to score; never test).
    :param run_dir: output directory.
    :param trial: the ``optuna.Trial``.
    :param warmup_evals: evaluations before a pruner verdict counts.
    :param progress: show a progress bar.
    :return: the trial's summary: ``score`` (its value: the rule's score of the kept checkpoint, 0 for the cash
        fallback), ``fallback``, the kept checkpoint's validation metrics, every evaluation's log return.
    """
    import optuna

    run_dir = Path(run_dir)
    setup = prepare_training(config, data, run_dir)
    env, model = setup.env, setup.model
    evaluator = _PruningEvalCallback(trial, warmup_evals, setup.data, config.eval_split, config.env.costs(),
                                     setup.env_settings, min(config.eval_freq, config.total_timesteps),
                                     run_dir / "best", setup.save_kwargs, rule=CheckpointRule.of(config))
    callbacks = [evaluator] + ([ProgressBarCallback()] if progress else [])
    try:
        model.learn(total_timesteps=config.total_timesteps, callback=CallbackList(callbacks), tb_log_name=config.algo)
    finally:
        env.close()
    if evaluator.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after {evaluator.pruned_at} steps (validation score {evaluator.score:+.4f})")
    evaluator.finish()
    best = evaluator.best_metrics
    return {
        "score": evaluator.score,
        "timesteps": int(model.num_timesteps),
        "fallback": None if best is not None else "cash",
        "best_validation": {k: v for k, v in best.items() if k != "per_symbol"} if best else None,
        "evaluations": [float(h["log_return"]) for h in evaluator.history],
    }


def run_agent_study(
    data: MarketData,
    base: AgentConfig,
    *,
    storage: str,
    study_name: str | None = None,
    hpo: AgentHPOConfig | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = False,
    overwrite: bool = False,
) -> Any:
    """Create or resume an agent study and add ``hpo.n_trials`` trials; returns the ``optuna.Study``.

    Trial ``n`` writes ``runs_dir/hpo/<study>/trial_<n>/`` (``best/`` agent, ``tb/`` logs,
    ``summary.json``), built aside and moved into place when it ends (completed or pruned). Trial folders
    the study does not know are an error unless ``overwrite``. A study records its algorithm and the
    dataset's hashes; a worker with another algorithm or dataset is refused.

    :param data: the dataset.
    :param base: the agent defaults (algorithm, per-trial budget, env, checkpoint rule).
    :param storage: an Optuna storage URL.
    :param study_name: the study; None gives ``agent_<algo>``.
    :param hpo: study settings.
    :param runs_dir: root of the trial folders.
    :param progress: show a progress bar per trial.
    :param overwrite: replace trial folders the study does not know instead of refusing to start.
    :raises supervised.hpo.StorageError: the storage cannot be opened, or a statement on it timed out.
    """
    import optuna

    hpo = hpo or AgentHPOConfig()
    study_name = study_name or f"agent_{base.algo}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=hpo.n_startup_trials, n_warmup_steps=hpo.pruner_warmup_evals)
    study = open_study(storage, study_name, pruner=pruner, seed=hpo.seed, n_startup_trials=hpo.n_startup_trials,
                       heartbeat_interval=hpo.heartbeat_interval, grace_period=hpo.grace_period,
                       max_retry=hpo.max_retry, connect_timeout=hpo.connect_timeout,
                       statement_timeout=hpo.statement_timeout)
    with storage_errors(storage, hpo.connect_timeout, hpo.statement_timeout):
        recorded = study.user_attrs.get(ALGO_ATTR)
        if recorded is not None and recorded != base.algo:
            raise ValueError(f"study {study_name!r} searches {recorded!r} agents; got --algo {base.algo!r} "
                             f"(use another study name)")
        hashes = dict(data.hashes)
        known_hashes = study.user_attrs.get(DATASET_ATTR)
        if known_hashes is not None and known_hashes != hashes:
            raise ValueError(f"study {study_name!r} was searched on another dataset (hashes {known_hashes}, this one "
                             f"{hashes}) — give every worker the same dataset, or use another study name")
        if recorded is None:
            study.set_user_attr(ALGO_ATTR, base.algo)
        if known_hashes is None:
            study.set_user_attr(DATASET_ATTR, hashes)
        trial_root = prepare_trial_root(study, study_name, storage, runs_dir, overwrite)
        worker = worker_label()

        def objective(trial: optuna.Trial) -> float:
            config = suggest_agent_config(trial, base)
            run_dir = trial_root / f"trial_{trial.number}"
            trial.set_user_attr("run_dir", str(run_dir))
            trial.set_user_attr("worker", worker)
            trial.set_user_attr("agent_config", config.to_dict())
            outcome: dict[str, Any] = {}

            def fill(directory: Path) -> None:
                try:
                    summary = train_trial(config, data, directory, trial, warmup_evals=hpo.pruner_warmup_evals,
                                          progress=progress)
                except optuna.TrialPruned as pruned:  # a pruned trial's curves are kept too
                    outcome["pruned"] = pruned
                    return
                (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
                outcome["summary"] = summary

            write_directory_atomic(run_dir, fill)
            if "pruned" in outcome:
                raise outcome["pruned"]
            summary = outcome["summary"]
            trial.set_user_attr("fallback", summary["fallback"])
            trial.set_user_attr("timesteps", summary["timesteps"])
            if summary["best_validation"]:
                best = summary["best_validation"]
                for key in ("tstat", "n_orders", "sharpe", "timesteps"):
                    trial.set_user_attr(f"validation_{key}", best[key])
            return summary["score"]

        with interrupted_trials_in_one_line():
            study.optimize(objective, n_trials=hpo.n_trials)
        return study


def hand_back_agent(
    study: Any,
    trial: Any,
    data: MarketData,
    run_dir: str | Path,
    *,
    storage: str,
    dataset_section: Mapping[str, Any] | None = None,
    dataset_note: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Save ``trial``'s agent as ``run_dir/best`` with ``config.yaml`` (for ``train_ppo --config``) and ``hpo.json``.

    The agent is copied from the trial's folder when this machine has it; otherwise (the trial ran on
    another worker's machine) it is retrained from the trial's config with the same budget and seed.

    :param study: the study.
    :param trial: the trial (usually the study's best).
    :param data: the dataset the study searched on (for a retrain).
    :param run_dir: the (new, empty) run folder.
    :param storage: the storage URL (recorded with its password masked).
    :param dataset_section: the ``dataset:`` section the study's data was built from (None: omitted).
    :param dataset_note: a comment for ``config.yaml`` on the data (e.g. the ``--dataset`` to pass).
    :param progress: show a progress bar when retraining.
    :return: ``hpo.json``'s record.
    """
    settings = trial.user_attrs.get("agent_config")
    if settings is None:
        raise ValueError(f"trial #{trial.number} of study {study.study_name!r} records no agent config "
                         f"(added by hand?) — nothing to hand back")
    config = AgentConfig.from_dict(settings, f"trial {trial.number} agent_config")
    run_dir = Path(run_dir)
    source = Path(trial.user_attrs.get("run_dir", "")) / "best"
    if (source / "agent.json").exists():
        shutil.copytree(source, run_dir / "best")
        how = f"copied from {source}"
    else:
        train_agent(config, data, run_dir, progress=progress)
        how = "retrained from the trial's config (same budget and seed): its folder is not on this machine"
    meta = json.loads((run_dir / "best" / "agent.json").read_text())
    validation = meta.get("validation") or {}
    header = [f"Best trial #{trial.number} of Optuna study {study.study_name!r} ({storage_label(storage)}):",
              f"validation score {trial.value:+.4f} (the checkpoint rule's score of the checkpoint kept; 0 = stayed in cash).",
              f"Train it again: python -m experiments.train_{config.algo} --config <this file> (--timesteps N for"
              f" a longer run)."]
    if dataset_note:
        header.append(dataset_note)
    document: dict[str, Any] = {}
    if dataset_section is not None:
        document["dataset"] = dict(dataset_section)
    document["agent"] = config.to_dict()
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(document, sort_keys=False)
    write_text_atomic(run_dir / CONFIG_FILE, text)
    record = hand_back_record(study, trial, storage, handed_back=how, algo=config.algo,
                              fallback=meta.get("fallback"), validation_log_return=validation.get("log_return"))
    write_text_atomic(run_dir / HAND_BACK_FILE, json.dumps(record, indent=2, default=str) + "\n")
    return record


__all__ = ["AgentHPOConfig", "SEARCHED", "hand_back_agent", "run_agent_study", "suggest_agent_config", "train_trial"]
