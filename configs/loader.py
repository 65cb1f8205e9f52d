"""Dataclass configs from YAML: nested dataclasses, unknown keys and sections rejected by name, values
checked against the fields' type hints (``lr: 1e-3`` is a float, ``total_timesteps: 2e5`` an int)."""

from __future__ import annotations

import dataclasses
import datetime
import math
import numbers
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent

#: Every top-level section of the YAML files in ``configs/`` (``ppo.yaml``/``dqn.yaml``: agent, dataset;
#: ``supervised.yaml``: dataset, train, models, evaluation, hpo). A loader that is not told the sections
#: of its file accepts these; anything else (``datset:``, ``agnet:``) is an error.
KNOWN_SECTIONS: frozenset[str] = frozenset({"agent", "dataset", "train", "models", "evaluation", "hpo"})


class ConfigError(ValueError):
    """A config file or mapping that does not fit its dataclass (the message names file, key and value)."""


def dataclass_from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict; an unknown key or a value of the wrong type raises
    :class:`ConfigError` (a ``ValueError``) naming it.

    :param cls: the dataclass type.
    :param data: mapping of field name to value; nested dataclass fields take nested mappings.
    :param where: the path shown in error messages (e.g. the YAML file and section).
    """
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys for {cls.__name__}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints.get(name, Any), value, f"{where}.{name}")
    return cls(**kwargs)


class _Mismatch(Exception):
    """``value`` does not fit ``hint`` (turned into a :class:`ConfigError` at the outermost call)."""


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` converted to ``hint``, or :class:`ConfigError` naming ``where``, the type and the value.

    Accepted conversions: an int or a numeric string (``"1e-3"``, YAML's reading of ``1e-3``) for a
    float; an integral float or numeric string (``2e5``, ``"2e5"``) for an int; a list for a tuple; a
    YAML date for a str. Bools are neither ints nor floats, and ints are not bools. ``Any`` is untouched.
    """
    try:
        return _convert(hint, value, where)
    except _Mismatch:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_describe(value)}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return dataclass_from_dict(hint, value, where)  # nested errors name their own key
        raise _Mismatch
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, where)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {_describe(value)}")
    if origin is tuple:
        return _convert_tuple(args, value, where)
    if origin in (list, typing.List, set, frozenset):  # noqa: UP006
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return origin(items) if origin in (set, frozenset) else items
    if origin in (dict, typing.Dict) or hint is dict:  # noqa: UP006
        if value is None:  # an empty YAML mapping (``lstm:`` with nothing under it)
            return {}
        if not isinstance(value, dict):
            raise _Mismatch
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return {_coerce(key_hint, k, f"{where}"): _coerce(value_hint, v, f"{where}.{k}") for k, v in value.items()}
    if hint is tuple:
        return _convert_tuple((), value, where)
    if hint is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        return _to_int(value)
    if hint is float:
        return _to_float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (datetime.date, datetime.datetime)):  # YAML reads 2005-01-01 as a date
            return value.isoformat()
        raise _Mismatch
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value  # a hint this loader does not know: leave the value to the dataclass


def _convert_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _Mismatch
    # A value that already has one of the types wins (``float | str`` keeps the string "1e-3").
    for arg in args:
        if _exact(arg, value):
            return _convert(arg, value, where)
    nested: ConfigError | None = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where)
        except _Mismatch:
            continue
        except ConfigError as error:  # e.g. a mapping with an unknown key for a dataclass member
            nested = nested or error
    if nested is not None:
        raise nested
    raise _Mismatch


def _exact(hint: Any, value: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, hint) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return isinstance(value, (hint, dict))
    origin = typing.get_origin(hint)
    if origin is tuple or hint is tuple:
        return isinstance(value, (list, tuple))
    if origin in (dict, list) or hint in (dict, list):
        return isinstance(value, origin or hint)
    return isinstance(hint, type) and isinstance(value, hint)


def _convert_tuple(args: tuple[Any, ...], value: Any, where: str) -> tuple[Any, ...]:
    if isinstance(value, str) and args and args[-1] is Ellipsis and args[0] is str:
        return (value,)  # ``symbols: AAPL`` means one symbol
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{where}: expected {_type_name(tuple[args])}, got {_describe(value)}")
    return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
    number = _to_float(value)  # 2e5, "2e5", 200000.0 -> 200000; 2.5 is not an int
    if not math.isfinite(number) or number != int(number):
        raise _Mismatch
    return int(number)


def _type_name(hint: Any) -> str:
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "any value"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return text + " or null" if type(None) in args else text
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return "a list of " + ", ".join(_type_name(a) for a in args)
    if origin in (list, set, frozenset):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping ({hint.__name__})"
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def read_yaml_mapping(path: str | Path, sections: Iterable[str] | None = None) -> dict[str, Any]:
    """The top-level mapping of YAML file ``path``; its keys must be among ``sections`` (when given).

    An empty file is ``{}``; a file that does not parse, or whose top level is not a mapping, or that
    has a section not in ``sections`` raises :class:`ConfigError` naming the file.

    :param path: the YAML file.
    :param sections: the valid top-level sections; None accepts any.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"config file {path} is a directory, not a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"{path}: not valid YAML ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {_describe(data)}")
    if sections is not None:
        valid = sorted(set(sections))
        unknown = sorted((k for k in data if k not in valid), key=str)
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; valid sections: {valid}")
    return data


def check_config_sections(path: str | Path, sections: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless every top-level section of YAML ``path`` is in ``sections``.

    :param path: the YAML file.
    :param sections: the sections the entry point reads.
    """
    read_yaml_mapping(path, sections)


def load_yaml_config(
    cls: type[T], path: str | Path | None, section: str | None = None, sections: Iterable[str] | None = None
) -> T:
    """Load dataclass ``cls`` from a YAML file (optionally one top-level section of it).

    :param cls: the dataclass type.
    :param path: YAML file; None gives the defaults.
    :param section: top-level key to read; None reads the whole file (its sections are then the
        dataclass's fields, and an unknown one is an error).
    :param sections: valid top-level sections of the file; None: :data:`KNOWN_SECTIONS` when
        ``section`` is given, the dataclass's fields otherwise. A section of the file outside them
        is an error listing the valid ones (a misspelt ``datset:`` is never silently ignored).
    """
    if path is None:
        return cls()
    if sections is None:
        sections = KNOWN_SECTIONS if section is not None else [f.name for f in dataclasses.fields(cls)]
    sections = set(sections)
    if section is not None:
        sections.add(section)
    data = read_yaml_mapping(path, sections)
    where = str(path)
    if section is not None:
        if section not in data:
            return cls()
        data, where = data[section], f"{path}:{section}"
        if data is None:
            return cls()
    try:
        return dataclass_from_dict(cls, data, where)
    except ConfigError:
        raise
    except ValueError as error:  # a value a dataclass's own checks refuse (``gamma: 1.5``): name the file too
        raise ConfigError(f"{where}: {' '.join(str(error).split())}") from error


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
