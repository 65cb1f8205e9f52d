"""configs.loader: misspelt sections are errors, values are checked against the type hints, and the
numbers YAML reads as strings (``1e-3``, ``2e5``) are numbers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.config import AgentConfig
from configs.loader import CONFIG_DIR, ConfigError, dataclass_from_dict, load_yaml_config
from features.dataset import DatasetConfig
from supervised.experiment import load_supervised_config

AGENT_CONFIG_SECTIONS = ("agent", "dataset")  # what train_ppo/train_dqn pass for configs/ppo.yaml, dqn.yaml


def load_agent_config(path: Path) -> AgentConfig:
    return load_yaml_config(AgentConfig, path, "agent", sections=AGENT_CONFIG_SECTIONS)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@dataclasses.dataclass
class Inner:
    k: int = 1


@dataclasses.dataclass
class Sample:
    n: int = 0
    x: float = 0.0
    flag: bool = False
    name: str = "a"
    maybe: int | None = None
    sizes: tuple[int, ...] = (1,)
    pair: tuple[int, str] = (1, "a")
    anything: Any = None
    table: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner = dataclasses.field(default_factory=Inner)
    either: Inner | str = "s"


@pytest.mark.parametrize("text, section", [("datset: {}\nagent: {}\n", "datset"), ("agnet: {}\n", "agnet")])
def test_a_misspelt_section_is_an_error_listing_the_valid_ones(tmp_path, text, section) -> None:
    path = write(tmp_path, text)
    expected = re.escape(f"unknown section(s) ['{section}']; valid sections: ['agent', 'dataset']")
    with pytest.raises(ConfigError, match=expected):
        load_agent_config(path)
    with pytest.raises(ConfigError, match=expected):
        load_yaml_config(DatasetConfig, path, "dataset", sections=AGENT_CONFIG_SECTIONS)
    with pytest.raises(ConfigError, match=re.escape(f"['{section}']")):  # the library readers too
        DatasetConfig.from_yaml(path)
    with pytest.raises(ConfigError, match=re.escape(f"['{section}']")):
        AgentConfig.from_yaml(path)


def test_a_misspelt_supervised_section_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "datset: {window: 8}\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=re.escape(
            "unknown section(s) ['datset']; valid sections: ['dataset', 'evaluation', 'hpo', 'models', 'train']")):
        load_supervised_config(path)


def test_a_top_level_that_is_not_a_mapping_names_the_file(tmp_path) -> None:
    path = write(tmp_path, "- agent\n- dataset\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: the top level must be a mapping")):
        load_agent_config(path)
    path.write_text("agent: [\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML")):
        load_supervised_config(path)


def test_every_shipped_config_loads() -> None:
    for name in ("ppo", "dqn"):
        assert load_agent_config(CONFIG_DIR / f"{name}.yaml").algo == name
        load_yaml_config(DatasetConfig, CONFIG_DIR / f"{name}.yaml", "dataset", sections=AGENT_CONFIG_SECTIONS)
    assert load_supervised_config(CONFIG_DIR / "supervised.yaml").train.lr == pytest.approx(1e-3)
    for path in CONFIG_DIR.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_exponent_notation_reads_as_numbers(tmp_path) -> None:
    path = write(tmp_path, "agent:\n  total_timesteps: 2e5\n  ppo: {learning_rate: 1e-3}\n")
    assert yaml.safe_load(path.read_text())["agent"]["total_timesteps"] == "2e5"  # what YAML 1.1 gives
    config = load_agent_config(path)
    assert config.total_timesteps == 200000 and type(config.total_timesteps) is int
    assert config.ppo.learning_rate == 1e-3 and type(config.ppo.learning_rate) is float
    supervised = load_supervised_config(write(tmp_path, "train: {lr: 1e-3, epochs: 4.0, min_lr: 1}\n"))
    assert supervised.train.lr == 1e-3 and isinstance(supervised.train.lr, float)
    assert supervised.train.epochs == 4 and type(supervised.train.epochs) is int
    assert supervised.train.min_lr == 1.0 and type(supervised.train.min_lr) is float


def test_a_string_for_an_int_names_key_type_and_value(tmp_path) -> None:
    path = write(tmp_path, "agent:\n  n_envs: many\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:agent.n_envs: expected int, got str 'many'")):
        load_agent_config(path)


@pytest.mark.parametrize("data, message", [
    ({"n": "2.5e0"}, "Sample.n: expected int, got str '2.5e0'"),
    ({"n": 2.5}, "Sample.n: expected int, got float 2.5"),
    ({"n": True}, "Sample.n: expected int, got bool True"),
    ({"x": [1.0]}, "Sample.x: expected float, got list [1.0]"),
    ({"x": "fast"}, "Sample.x: expected float, got str 'fast'"),
    ({"flag": "yes"}, "Sample.flag: expected bool, got str 'yes'"),
    ({"flag": 1}, "Sample.flag: expected bool, got int 1"),
    ({"name": 3}, "Sample.name: expected str, got int 3"),
    ({"name": None}, "Sample.name: expected str, got NoneType None"),
    ({"maybe": "x"}, "Sample.maybe: expected int or null, got str 'x'"),
    ({"sizes": 3}, "Sample.sizes: expected a list of int, got int 3"),
    ({"sizes": [1, "b"]}, "Sample.sizes[1]: expected int, got str 'b'"),
    ({"pair": [1, 2, 3]}, "Sample.pair: expected a list of int, str, got list [1, 2, 3]"),
    ({"table": {"a": "b"}}, "Sample.table.a: expected float, got str 'b'"),
    ({"inner": 5}, "Sample.inner: expected a mapping (Inner), got int 5"),
    ({"inner": {"k": "z"}}, "Sample.inner.k: expected int, got str 'z'"),
    ({"inner": {"j": 1}}, "Sample.inner: unknown key(s) ['j']"),
    ({"either": 4}, "Sample.either: expected a mapping (Inner) or str, got int 4"),
])
def test_wrong_types_are_errors(data, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        dataclass_from_dict(Sample, data, "Sample")


def test_accepted_conversions() -> None:
    sample = dataclass_from_dict(Sample, {
        "n": "2e5", "x": "1e-3", "flag": False, "maybe": None, "sizes": [1, 2.0, "3"], "pair": [4, "b"],
        "anything": {"k": [1, "x"]}, "table": {"a": 1}, "inner": {"k": 2e0}, "either": {"k": 3},
    }, "Sample")
    assert sample.n == 200000 and sample.x == 1e-3 and sample.sizes == (1, 2, 3) and sample.pair == (4, "b")
    assert sample.anything == {"k": [1, "x"]}  # Any is untouched
    assert sample.table == {"a": 1.0} and sample.inner == Inner(2) and sample.either == Inner(3)
    assert dataclass_from_dict(Sample, {"either": "text"}, "Sample").either == "text"


def test_yaml_dates_and_single_symbols_are_accepted(tmp_path) -> None:
    config = load_yaml_config(DatasetConfig, write(tmp_path, "dataset: {start: 2005-01-03, symbols: IBM}\n"), "dataset")
    assert config.start == "2005-01-03" and config.symbols == ("IBM",)


def test_any_fields_keep_their_value() -> None:
    config = AgentConfig.from_dict({"env": {"slippage": {"model": "spread", "spread_bps": 10}}})
    assert config.env.slippage == {"model": "spread", "spread_bps": 10}


def test_an_empty_model_section_means_the_defaults(tmp_path) -> None:
    config = load_supervised_config(write(tmp_path, "models:\n  lstm:\n"))
    assert config.model("lstm").hidden_size == load_supervised_config(None).model("lstm").hidden_size
