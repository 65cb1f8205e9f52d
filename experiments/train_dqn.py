"""Train a DQN agent: ``python -m experiments.train_dqn --help``."""

from experiments.agent_cli import main as _main
from experiments.common import cli


def main(argv: list[str] | None = None) -> dict:
    return _main("dqn", argv)


if __name__ == "__main__":
    cli(main)
