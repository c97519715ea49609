"""Typed job configs: dataclasses loaded from YAML with ``key.sub=value`` overrides.

Every job declares one dataclass (fields documented where declared). ``load_config`` builds it from
defaults, an optional YAML file and command-line overrides, in that order. Unknown keys and values
of the wrong type raise :class:`ConfigError` with the list of valid keys, so a typo never runs
silently with a default. ``save_config`` writes the resolved config into a run directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config file or override that does not match the job's schema."""


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(_valid_keys(hint, name + "."))
        else:
            keys.append(name)
    return keys


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str, root: type) -> Any:
    """Return ``value`` converted to ``hint``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config key '{key}': expected {expected}, got {value!r} ({type(value).__name__})")

    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, root)
            except ConfigError as e:
                errors.append(str(e))
        raise bad(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        raise bad("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise bad(f"a mapping of {hint.__name__} fields")
        return _build(hint, value, key + ".", root)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list of {_type_name(args[0]) if args else 'values'}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", root) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}", root) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if isinstance(value, hint):
        return value
    raise bad(_type_name(hint))


def _build(cls: type, data: dict, prefix: str, root: type) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' for {root.__name__}; valid keys: "
            + ", ".join(_valid_keys(root))
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name, root)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{prefix or root.__name__ + ': '}{e}") from None
    return obj


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value``; the value is parsed as YAML (so ``3``, ``0.5``, ``true``, ``[1,2]`` work)."""
    if "=" not in text or text.startswith("="):
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of ``cfg`` (tuples become lists so the result is safe YAML)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def load_config(
    cls: type,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> Any:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``overrides``
    (``key.sub=value`` strings), then ``values`` (dotted key -> already-typed value)."""
    data: dict = to_dict(cls())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(loaded).__name__}")
        _merge(data, loaded)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value)
    for key, value in (values or {}).items():
        _set_path(data, key, value)
    return _build(cls, data, "", cls)


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def save_config(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config as ``config.yaml`` in ``run_dir`` (created if missing)."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def parse_cli(
    cls: type,
    argv: list[str] | None,
    description: str,
    flags: dict[str, tuple[str, type, str]] | None = None,
    bool_flags: dict[str, tuple[str, str]] | None = None,
):
    """Parse a job command line into ``cls``.

    ``--config FILE`` names a YAML file; ``flags`` maps convenience options (``--pairs``) to config keys
    as ``{"--pairs": ("pairs", int, "help")}``, ``bool_flags`` maps switches (``--strict``) to boolean
    keys as ``{"--strict": ("strict", "help")}``; remaining ``key.sub=value`` arguments are overrides.
    Exits with status 2 and the message on a config error, as argparse does for bad flags.
    """
    import argparse

    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides: key.sub=value (YAML values). Valid keys: " + ", ".join(_valid_keys(cls)),
    )
    parser.add_argument("--config", default=None, help="YAML config file (jobs/configs/*.yaml)")
    for flag, (key, typ, help_text) in (flags or {}).items():
        parser.add_argument(flag, dest=key.replace(".", "__"), type=typ, default=None, help=f"{help_text} (= {key})")
    for flag, (key, help_text) in (bool_flags or {}).items():
        parser.add_argument(
            flag,
            dest=key.replace(".", "__"),
            action="store_const",
            const=True,
            default=None,
            help=f"{help_text} (= {key}=true)",
        )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_intermixed_args(argv)
    values = {}
    keys = [k for k, _t, _h in (flags or {}).values()] + [k for k, _h in (bool_flags or {}).values()]
    for key in keys:
        v = getattr(args, key.replace(".", "__"))
        if v is not None:
            values[key] = v
    try:
        return load_config(cls, args.config, args.overrides, values)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")


def run_job(
    run, cfg, errors: tuple[type[BaseException], ...] = (FileExistsError, FileNotFoundError, ValueError)
) -> int:
    """Call ``run(cfg)``; an expected failure (a bad input, an existing run, a missing file) prints
    ``error: ...`` and returns exit status 2 instead of a traceback."""
    import sys

    try:
        run(cfg)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
