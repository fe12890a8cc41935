"""Dataclass configs from commented YAML, with overlays and ``key=value`` overrides.

A YAML file may start with ``base: other.yaml`` (a path relative to the file, or a list of them):
the base is loaded first and this file's keys are deep-merged over it, so a variant is a small
overlay. Overrides from the command line use dotted keys, ``model.decoder.channels=256``, and are
parsed as YAML scalars. Any unknown key is an error that lists the known ones.

The dataclass defaults are the bottom layer: nested sections and mapping fields (``lambdas``) given
in a file or override are merged over their defaults, never replace them wholesale. Values are
checked against the field annotations, so ``steps: many`` fails at load time, not mid-training.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from voiceconv.errors import ConfigError

T = TypeVar("T")


def deep_merge(base: dict, overlay: dict) -> dict:
    """Return ``base`` with ``overlay`` merged in; nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Load a YAML config, resolving ``base:`` overlays recursively (bases first, this file on top)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ConfigError(f"{path}: circular 'base:' chain ({chain}); remove one of the 'base:' lines")
    if not path.is_file():
        referrer = f" (the base of {_seen[-1]})" if _seen else ""
        raise ConfigError(f"{path}{referrer}: config file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())  # one line: PyYAML spreads its message over several
        raise ConfigError(f"{path}: invalid YAML ({detail})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values, got {type(data).__name__}")
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base:' must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, load_yaml(path.parent / base, _seen + (path,)))
    return deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (numbers, lists, booleans, null)."""
    data = dict(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=1000)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        nested: Any = value
        for part in reversed(parts):
            nested = {part.strip(): nested}
        data = deep_merge(data, nested)
    return data


def _field_types(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved at runtime: accept any value for it
        return {f.name: Any for f in dataclasses.fields(cls)}


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _allows_none(tp) -> bool:
    return tp is Any or tp is type(None) or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    )


def _describe(tp) -> str:
    """How an error message names what a key accepts: ``true or false``, ``one of 'a', 'b'``, ``int``."""
    if tp is bool:
        return "true or false"
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp`` and convert where YAML is ambiguous.

    PyYAML reads ``1e-4`` (no dot) as a string and ``5`` where a float is meant as an int; both
    are converted. Anything that does not fit raises :class:`ConfigError` naming the dotted key.
    """
    def bad(expected: str):
        return ConfigError(f"config key '{key}': expected {expected}, got {value!r}")

    if tp is Any or isinstance(tp, (str, typing.ForwardRef)) or isinstance(tp, typing.TypeVar):
        return value
    if value is None:
        if _allows_none(tp):
            return None
        raise bad(getattr(tp, "__name__", str(tp)))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(value, options[0], key)
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise bad(" or ".join(_describe(a) for a in options))
    if origin is typing.Literal:
        if value not in args:
            raise bad(_describe(tp))
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(_describe(tp))
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise bad("an integer") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("a string")
        return str(value)  # e.g. a run name written as 2024 reads as an int
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} values")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        value_type = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    return value


def _dict_default(f: dataclasses.Field) -> dict | None:
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        # A nested section whose default differs from its class's own defaults (e.g. a ChannelConfig
        # that is always on): a partial overlay keeps the rest of *that* default. Fields that a
        # __post_init__ derives from others are taken from the default too, and then re-derived.
        return to_dict(default)
    return default if isinstance(default, dict) else None


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    Values are checked against the field annotations (see :func:`_coerce`). Unknown keys raise
    :class:`ConfigError` naming the dotted key, the closest known key and every known key.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where or cls.__name__}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = [prefix + name for name in fields]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hints.append(f"'{prefix}{key}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else ""))
        raise ConfigError(f"unknown key {', '.join(hints)}; known keys: {', '.join(known)}")
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        default = _dict_default(fields[key])
        if default is not None and isinstance(value, dict):
            # Mapping fields (e.g. lambdas) merge into their default like any overlay, so that
            # ``train.lambdas.loss/kl=0.5`` changes one weight instead of dropping all the others.
            value = deep_merge(default, value)
        kwargs[key] = _coerce(value, hints.get(key, Any), prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if where and where not in str(error):
            raise ConfigError(f"config section '{where}': {error}") from None
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config section '{where or cls.__name__}': {error}") from None


def to_dict(config) -> dict:
    """Plain dict (JSON/YAML-serialisable) of a dataclass config."""
    def convert(value):
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(dataclasses.asdict(config))


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from an optional YAML file plus ``key=value`` overrides."""
    data = load_yaml(path) if path else {}
    return from_dict(cls, apply_overrides(data, overrides or []))


def save_yaml(config, path: str | Path) -> None:
    """Write the resolved config (a dataclass or a dict) as YAML, atomically."""
    from voiceconv.checkpoint import atomic_write_text

    data = config if isinstance(config, dict) else to_dict(config)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
