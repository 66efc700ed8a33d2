"""Reading and writing configs: YAML in/out, dotted ``key=value`` overrides, dict <-> dataclass.

``load_config("configs/demo.yaml", ["optim.lr=3e-4", "train.epochs=5"])`` returns a validated
:class:`Config`. Every value has a type (from the dataclass annotations); overrides are parsed as
YAML scalars and checked against it. An unknown key raises :class:`ConfigError` naming the key and
the closest valid keys.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from deam_mamba.config.schema import Config
from deam_mamba.core.errors import ConfigError
from deam_mamba.core.io import atomic_write_text

# --- dict <-> dataclass -------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML-safe) of a config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = config_to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, Path):
            v = str(v)
        out[f.name] = v
    return out


def config_from_dict(data: dict[str, Any] | None, cls: type = Config, prefix: str = "") -> Any:
    """Build ``cls`` from a (partial) nested dict; missing keys take defaults, unknown keys fail."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            _unknown(prefix + key, [prefix + k for k in fields])
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = config_from_dict(data[name], tp, prefix + name + ".")
        else:
            kwargs[name] = _coerce(data[name], tp, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config section {prefix.rstrip('.') or '<root>'}: {exc}") from exc


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against its annotation (int, float, str, bool, None, dict, list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} does not fit {_tname(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if tp is Any:
        return value
    if origin in (dict,) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return list(value) if (origin or tp) is list else tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot use {value!r} for a value of type {_tname(tp)}")


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _unknown(key: str, valid: list[str]) -> None:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"
    raise ConfigError(f"unknown config key {key!r}{hint}")


def _all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


# --- overrides and files ------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``["a.b=value", ...]`` to a nested dict (values parsed as YAML scalars).

    Keys must exist in :class:`Config` (free-form dicts such as ``model.kwargs`` accept new
    sub-keys: ``model.kwargs.depths=[1,1,2,1]``). Returns a new dict.
    """
    data = copy.deepcopy(data)
    valid = _all_keys()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        if isinstance(value, str) and _looks_float(value):
            value = float(value)  # YAML 1.1 reads "3e-4" as a string
        parts = key.split(".")
        free = next((k for k in valid if key.startswith(k + ".") and _is_free_dict(k)), None)
        if key not in valid and free is None:
            _unknown(key, valid)
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return data


def _looks_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return any(c in s.lower() for c in "e.") and s.strip().lower() not in ("nan", "inf", "-inf")


def _is_free_dict(key: str) -> bool:
    cls: Any = Config
    for p in key.split("."):
        cls = typing.get_type_hints(cls)[p]
    return cls is dict or typing.get_origin(cls) is dict


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (see configs/*.yaml)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = _fix_yaml_floats(data)
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def _fix_yaml_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _fix_yaml_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_yaml_floats(v) for v in obj]
    if isinstance(obj, str) and _looks_float(obj):
        return float(obj)
    return obj


def dump_config(cfg: Config) -> str:
    """YAML text of the resolved config (round-trips through :func:`config_from_dict`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``dump_config(cfg)`` atomically."""
    atomic_write_text(path, dump_config(cfg))
