"""Train one supervised classifier and write runs/<name>/ (TensorBoard events, model/ bundle, metrics.json).

    python -m experiments.train_supervised --model lstm --run-name sup_lstm
    tensorboard --logdir runs

The run is written to a temporary folder beside runs/<name> and moved into place when complete; an
existing run is kept unless --overwrite (then replaced only once the new run is complete).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Sequence

from configs.loader import CONFIG_DIR
from experiments.common import cli, existing_file, make_parser, resolve_dataset_path, staged_run_directory
from supervised.evaluation import format_metrics_table
from supervised.experiment import METRICS_FILE, load_supervised_config, prepare_data, run_supervised
from supervised.models import MODEL_KINDS

DEFAULT_CONFIG = CONFIG_DIR / "supervised.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser("python -m experiments.train_supervised", __doc__)
    add = parser.add_argument
    add("--model", required=True, choices=MODEL_KINDS, help="architecture to train")
    add("--config", default=str(DEFAULT_CONFIG), help="YAML config (dataset/train/models/evaluation/hpo sections)")
    add("--dataset", default=None, help="saved dataset directory (default: build the config's dataset)")
    add("--run-name", default=None, help="output directory under --runs-dir (default: sup_<model>_<YYYYmmdd-HHMMSS>)")
    add("--runs-dir", default="runs", help="root directory of all runs")
    add("--epochs", type=int, default=None, help="override train.epochs (default: the config's)")
    add("--seed", type=int, default=None, help="override train.seed (default: the config's)")
    add("--overwrite", action="store_true", help="replace an existing run of that name once the new one is complete")
    add("--no-progress", action="store_true", help="hide the tqdm progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run from command-line arguments; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    config = load_supervised_config(existing_file(args.config, "--config"))
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    train_config = dataclasses.replace(config.train, **overrides)
    dataset = resolve_dataset_path(args.dataset) if args.dataset is not None else None
    with staged_run_directory(args.runs_dir, args.run_name, args.overwrite, prefix=f"sup_{args.model}") as run:
        data = prepare_data(config, dataset)
        print(data.summary())
        metrics = run_supervised(
            data,
            config.model(args.model),
            train_config,
            run.path,
            evaluation=config.evaluation,
            progress=not args.no_progress,
        )
        metrics["run_dir"] = str(run.final)  # where it ends up, not the temporary folder
        (run.path / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    training = metrics["training"]
    print(
        f"\n{args.model}: best epoch {training['best_epoch']}/{training['epochs_run']}, "
        f"{training['n_parameters']} parameters, trained in {training['train_seconds']:.1f}s"
    )
    print(format_metrics_table(metrics))
    print(f"\nwrote {run.final}/ (metrics.json, model/, TensorBoard events)")
    return metrics


if __name__ == "__main__":
    cli(main)
