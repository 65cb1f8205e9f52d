"""Train a DQN agent: ``python -m experiments.train_dqn --help``."""

from experiments.agent_cli import main as _main


def main(argv: list[str] | None = None) -> dict:
    return _main("dqn", argv)


if __name__ == "__main__":
    main()
