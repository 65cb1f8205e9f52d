"""Dataclass configs from YAML: nested dataclasses, unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent


def dataclass_from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict; an unknown key raises ``ValueError`` naming it.

    :param cls: the dataclass type.
    :param data: mapping of field name to value; nested dataclass fields take nested mappings.
    :param where: the path shown in error messages (e.g. the YAML file and section).
    """
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys for {cls.__name__}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints.get(name, Any), value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return dataclass_from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return dataclass_from_dict(arg, value, where)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def load_yaml_config(cls: type[T], path: str | Path | None, section: str | None = None) -> T:
    """Load dataclass ``cls`` from a YAML file (optionally one top-level section of it).

    :param cls: the dataclass type.
    :param path: YAML file; None gives the defaults.
    :param section: top-level key to read; None reads the whole file.
    """
    if path is None:
        return cls()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    if section is not None:
        if section not in data:
            return cls()
        data, where = data[section], f"{path}:{section}"
    return dataclass_from_dict(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) suitable for JSON/YAML."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
