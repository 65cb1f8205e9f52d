"""Train a PPO agent: ``python -m experiments.train_ppo --help``."""

from experiments.agent_cli import main as _main
from experiments.common import cli


def main(argv: list[str] | None = None) -> dict:
    return _main("ppo", argv)


if __name__ == "__main__":
    cli(main)
