"""Typed config sections: ``build_section`` turns one section of the Hydra tree into its dataclass, refusing
unknown or missing keys and values of the wrong type with a ``ConfigError`` that names the key and the fix."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config that names an unknown key or group, or holds a value the code cannot use."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _coerce(value: Any, hint: Any) -> Any:
    """YAML lists to tuples where the dataclass wants a tuple (e.g. ProjectorConfig.scales)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return value
        if len(args) == 1:
            return _coerce(value, args[0])
        tuples = [a for a in args if typing.get_origin(a) is tuple]  # a count or a list (Cell.seeds)
        return _coerce(value, tuples[0]) if tuples and isinstance(value, (list, tuple)) else value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def check_type(value: Any, hint: Any, key: str) -> None:
    """Refuse a value that does not fit its field's type, naming the key, the value and what is allowed:
    whole numbers for int fields, finite numbers for float fields (NaN and inf train on garbage), true or
    false for bool fields; None only where the field is optional."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and type(None) in typing.get_args(hint):
            return
        if len(args) == 1:
            check_type(value, args[0], key)
            return
        errors = []
        for arg in args:  # one of several (e.g. a count or a list): the first it fits
            try:
                return check_type(value, arg, key)
            except ConfigError as err:
                errors.append(str(err).split("; ", 1)[-1])
        raise ConfigError(f"{key}={value!r} fits none of its types; {' or '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is not a list; set {key}=[{value}] (a list, even of one value)")
        element = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        for item in value:
            check_type(item, element, key)
        return
    allowed = {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string"}
    if hint not in allowed:
        return
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ConfigError(f"{key}={value!r} is not {allowed[hint]}; set {key}=<{allowed[hint]}>")


def to_plain(node: Any) -> Any:
    """A resolved plain copy of a config node (dicts and lists), or the value itself."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, dict) else node


def build_section(cls, node: Any, section: str):
    """``cls(**node)`` with errors that name the section, the key and the valid keys."""
    node = to_plain(node)
    if not isinstance(node, dict):
        raise ConfigError(f"config section '{section}' must be a mapping of {cls.__name__} fields, got {node!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(node) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)} for {cls.__name__}; "
            f"valid keys of '{section}': {', '.join(sorted(types_))}"
        )
    required = [
        f.name for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in node]
    if missing:
        raise ConfigError(f"config section '{section}' lacks required key(s): {', '.join(missing)}")
    kwargs = {k: _coerce(v, types_[k]) for k, v in node.items()}
    for key, value in kwargs.items():
        check_type(value, types_[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config section '{section}': {err}") from err
