"""Search a supervised model's hyperparameters with Optuna, then hand back the best model.

    python -m experiments.hpo --model gru --trials 20 --storage sqlite:///runs/hpo.db
    python -m experiments.hpo --model gru --trials 10 --storage sqlite:///runs/hpo.db   # adds 10 more
    tensorboard --logdir runs/hpo

Several machines (or processes) share one study through PostgreSQL: start the same command on each,
with the same --storage and --study-name; trial numbers stay unique and the pruner sees every
worker's trials (pip install -e '.[postgres]' installs the driver):

    python -m experiments.hpo --model gru --trials 10 --storage postgresql://USER:PASSWORD@HOST/DB

A PostgreSQL server that does not answer within --connect-timeout seconds (a statement that runs past
--statement-timeout) ends the run with one line naming the host and the timeout; the server is tried
once before the dataset is prepared.

Each trial's TensorBoard logs go to runs/hpo/<study>/trial_<n>/, written aside and moved into place when
the trial ends; trial folders the study does not know (from a deleted study) are refused unless
--overwrite. A worker killed mid-trial leaves that trial to be marked failed (and run once more with the
same parameters) by the next worker that starts a trial after --heartbeat x 2 seconds.

When the trials are done, the best trial's settings are retrained with the full budget (train.epochs of
the config, early stopping on validation F1) into runs/<study>_best/ (a train_supervised run: model/,
metrics.json, TensorBoard events, hpo.json), and the commands to use it are printed. A later run whose
best trial is the same leaves it as it is; several workers finishing together write it once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from configs.loader import CONFIG_DIR
from experiments.common import (
    RunExistsError,
    UsageError,
    cli,
    existing_file,
    make_parser,
    resolve_dataset_path,
    staged_run_directory,
)
from supervised.experiment import BUNDLE_DIR, load_supervised_config, prepare_data
from supervised.hpo import (
    best_trial,
    check_storage,
    describe_best,
    read_hand_back,
    retrain_trial,
    run_study,
    storage_errors,
)
from supervised.models import MODEL_KINDS

DEFAULT_CONFIG = CONFIG_DIR / "supervised.yaml"
HAND_BACK_WAIT_S = 3600.0  # how long a worker waits for another one writing the same hand-back


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser("python -m experiments.hpo", __doc__)
    add = parser.add_argument
    add("--model", required=True, choices=MODEL_KINDS, help="architecture whose search space to explore")
    add("--trials", type=int, default=None, help="trials this worker adds (default: hpo.n_trials of the config)")
    add("--storage", default="sqlite:///runs/hpo.db",
        help="Optuna storage URL (sqlite:///... on one machine, postgresql://... shared by several)")
    add_storage_timeout_arguments(parser)
    add("--study-name", default=None, help="study to create or resume (default: sup_<model>)")
    add("--config", default=str(DEFAULT_CONFIG), help="YAML config (dataset/train/models/evaluation/hpo sections)")
    add("--dataset", default=None, help="saved dataset directory (default: build the config's dataset)")
    add("--runs-dir", default="runs", help="trial logs go under <runs-dir>/hpo/<study>/trial_<n>/")
    add("--epochs", type=int, default=None, help="epochs per trial (default: hpo.epochs, else train.epochs)")
    add("--seed", type=int, default=None, help="sampler and training seed (default: hpo.seed / train.seed)")
    add("--heartbeat", type=int, default=None,
        help="seconds between a running trial's heartbeats; a trial silent for twice that is failed and retried "
             "(0: off; default: hpo.heartbeat_interval of the config)")
    add("--best-name", default=None, help="run folder of the handed-back model (default: <study>_best)")
    add("--no-best", action="store_true", help="only add trials; hand back no model (e.g. on helper workers)")
    add("--overwrite", action="store_true",
        help="replace trial folders the study does not know (each once its new trial ends), and a --best-name "
             "folder that is not this study's hand-back, instead of refusing")
    add("--progress", action="store_true", help="show tqdm bars inside each trial")
    return parser.parse_args(argv)


def add_storage_timeout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--connect-timeout`` and ``--statement-timeout`` (shared with ``experiments.hpo_agent``).

    :param parser: the entry point's parser.
    """
    parser.add_argument("--connect-timeout", type=int, default=None,
                        help="seconds to wait for a PostgreSQL storage to connect and answer, >= 2 "
                             "(default: hpo.connect_timeout of the config, else 10)")
    parser.add_argument("--statement-timeout", type=int, default=None,
                        help="seconds one statement on a PostgreSQL storage may run, 0: no limit "
                             "(default: hpo.statement_timeout of the config, else 120)")


def storage_timeout_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The hpo config changes that ``--connect-timeout``/``--statement-timeout`` ask for (unset: none)."""
    given = {"connect_timeout": args.connect_timeout, "statement_timeout": args.statement_timeout}
    return {k: v for k, v in given.items() if v is not None}


def main(argv: Sequence[str] | None = None) -> Any:
    """Run from command-line arguments; returns the ``optuna.Study``."""
    args = parse_args(argv)
    config = load_supervised_config(existing_file(args.config, "--config"))
    given = {"n_trials": args.trials, "epochs": args.epochs, "seed": args.seed, "heartbeat_interval": args.heartbeat}
    hpo = dataclasses.replace(config.hpo, **{k: v for k, v in given.items() if v is not None},
                              **storage_timeout_changes(args))
    check_storage(args.storage, hpo.connect_timeout, hpo.statement_timeout)  # before the dataset is prepared
    with storage_errors(args.storage, hpo.connect_timeout, hpo.statement_timeout):
        return _search(args, config, hpo)


def _search(args: argparse.Namespace, config: Any, hpo: Any) -> Any:
    """Prepare the data, add the trials and hand back the best model (the body of :func:`main`).

    :param args: the parsed arguments.
    :param config: the supervised config.
    :param hpo: the study settings, with the command line's changes.
    """
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
    if args.no_best:
        return study

    def retrain(path: Path, trial: Any) -> dict[str, Any]:
        print(f"retraining trial #{trial.number} with the full budget ({train.epochs} epochs) ...", flush=True)
        return retrain_trial(study, trial, data, path, storage=args.storage, full_train=train,
                             evaluation=config.evaluation, progress=args.progress)

    handed = hand_back(study, args.runs_dir, args.best_name, retrain, same={"epochs": train.epochs},
                       overwrite=args.overwrite)
    if handed is None:
        print("no completed trial: no model to hand back")
        return study
    folder, record, fresh = handed
    how = (f"retrained with the full budget ({record['epochs']} epochs): validation F1 "
           f"{record['validation_f1']:.4f}; the trial's {record['trial_value']:.4f}")
    print(f"best model: {folder / BUNDLE_DIR} [trial #{record['trial']} {how}]"
          + ("" if fresh else " (already handed back)"))
    print(f"use it:\n  python -m experiments.train_ppo --pretrained {folder / BUNDLE_DIR}\n"
          f"  python -m experiments.backtest --policy {folder / BUNDLE_DIR}")
    return study


class _AlreadyHandedBack(Exception):
    """Inside the staging block: the folder already holds this trial's hand-back; publish nothing."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__("already handed back")
        self.record = record


class _NoCompletedTrial(Exception):
    """Inside the staging block: the study has no completed trial; publish nothing."""


def hand_back(
    study: Any,
    runs_dir: str | Path,
    name: str | None,
    write: Callable[[Path, Any], dict[str, Any]],
    *,
    same: dict[str, Any] | None = None,
    overwrite: bool = False,
    wait_s: float = HAND_BACK_WAIT_S,
) -> tuple[Path, dict[str, Any], bool] | None:
    """Write the study's best trial as run folder ``runs_dir/<name>`` (built aside, swapped in whole).

    Under the folder's lock the best trial is read again, so of several workers finishing together the
    last to write hands back the study's final best; a worker that finds the folder locked waits. A
    folder that already records this study, trial and ``same`` is left as it is. A folder of that name
    that is not a hand-back of this study is refused unless ``overwrite``.

    :param study: the study.
    :param runs_dir: the parent of run folders.
    :param name: the folder's name (None: ``<study>_best``).
    :param write: ``write(path, trial)`` fills the temporary folder ``path`` and returns its ``hpo.json`` record.
    :param same: record entries that must also match for an existing hand-back to count as this one.
    :param overwrite: replace a folder of that name that is not this study's hand-back.
    :param wait_s: seconds to wait for another worker writing the same folder.
    :return: (folder, record, whether it was written now), or None without a completed trial.
    """
    name = name or f"{study.study_name}_best"
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            with staged_run_directory(runs_dir, name, overwrite=True, flag="--best-name") as run:
                trial = best_trial(study)
                if trial is None:
                    raise _NoCompletedTrial
                record = read_hand_back(run.final)
                if run.final.exists() and not overwrite and (record is None or record.get("study") != study.study_name):
                    raise UsageError(f"run folder {run.final} exists and is not a hand-back of study "
                                     f"{study.study_name!r}", "pass --best-name NAME, or --overwrite to replace it")
                wanted = {"study": study.study_name, "trial": trial.number, **(same or {})}
                if record is not None and all(record.get(k) == v for k, v in wanted.items()):
                    raise _AlreadyHandedBack(record)
                record = write(run.path, trial)
            return run.final, record, True
        except _AlreadyHandedBack as done:
            return Path(runs_dir) / name, done.record, False
        except _NoCompletedTrial:
            return None
        except RunExistsError as locked:  # another worker is writing it: wait, then look again
            if time.monotonic() > deadline:
                raise
            if not announced:
                print(f"waiting: {locked.what}", file=sys.stderr, flush=True)
                announced = True
            time.sleep(1.0)


if __name__ == "__main__":
    cli(main)
