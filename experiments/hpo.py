"""Search a supervised model's hyperparameters with Optuna (resumable; any storage URL).

    python -m experiments.hpo --model gru --trials 20 --storage sqlite:///runs/hpo.db
    python -m experiments.hpo --model gru --trials 10 --storage sqlite:///runs/hpo.db   # adds 10 more
    tensorboard --logdir runs/hpo

Each trial's TensorBoard logs go to runs/hpo/<study>/trial_<n>/, written aside and moved into place when
the trial ends; trial folders the study does not know (from a deleted study) are refused unless
--overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence

from configs.loader import CONFIG_DIR
from experiments.common import cli, existing_file, make_parser, resolve_dataset_path
from supervised.experiment import load_supervised_config, prepare_data
from supervised.hpo import describe_best, run_study
from supervised.models import MODEL_KINDS

DEFAULT_CONFIG = CONFIG_DIR / "supervised.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser("python -m experiments.hpo", __doc__)
    add = parser.add_argument
    add("--model", required=True, choices=MODEL_KINDS, help="architecture whose search space to explore")
    add("--trials", type=int, default=None, help="trials to add (default: hpo.n_trials of the config)")
    add("--storage", default="sqlite:///runs/hpo.db", help="Optuna storage URL (sqlite:///..., postgresql://...)")
    add("--study-name", default=None, help="study to create or resume (default: sup_<model>)")
    add("--config", default=str(DEFAULT_CONFIG), help="YAML config (dataset/train/models/evaluation/hpo sections)")
    add("--dataset", default=None, help="saved dataset directory (default: build the config's dataset)")
    add("--runs-dir", default="runs", help="TensorBoard logs go under <runs-dir>/hpo/<study>/trial_<n>/")
    add("--epochs", type=int, default=None, help="epochs per trial (default: hpo.epochs, else train.epochs)")
    add("--seed", type=int, default=None, help="sampler and training seed (default: hpo.seed / train.seed)")
    add("--overwrite", action="store_true",
        help="replace trial folders the study does not know (each once its new trial ends) instead of refusing")
    add("--progress", action="store_true", help="show tqdm bars inside each trial")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Any:
    """Run from command-line arguments; returns the ``optuna.Study``."""
    args = parse_args(argv)
    config = load_supervised_config(existing_file(args.config, "--config"))
    given = {"n_trials": args.trials, "epochs": args.epochs, "seed": args.seed}
    hpo_changes = {k: v for k, v in given.items() if v is not None}
    hpo = dataclasses.replace(config.hpo, **hpo_changes)
    train = config.train if args.seed is None else dataclasses.replace(config.train, seed=args.seed)
    dataset = resolve_dataset_path(args.dataset) if args.dataset is not None else None
    data = prepare_data(config, dataset)
    print(data.summary())
    study = run_study(
        data,
        config.model(args.model),
        storage=args.storage,
        study_name=args.study_name,
        base_train=train,
        hpo=hpo,
        runs_dir=args.runs_dir,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    print(describe_best(study))
    return study


if __name__ == "__main__":
    cli(main)
