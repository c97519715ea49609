# Long on purpose: typed configs: loading, coercion, overrides, errors and the --help that reads field comments
# walk the same dataclass fields; one walker, one file.
"""Typed job configs: dataclasses loaded from YAML with ``key.sub=value`` overrides.

Every job declares one dataclass (fields documented where declared). ``load_config`` builds it from
defaults, an optional YAML file and command-line overrides, in that order. Unknown keys and values
of the wrong type raise :class:`ConfigError` with the list of valid keys, so a typo never runs
silently with a default. ``save_config`` writes the resolved config into a run directory.
A field's comment in its dataclass is its documentation: ``describe_keys`` reads it from the source for
``--help``, so it is written once.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config file or override that does not match the job's schema."""


def _walk(cls: type, prefix: str = ""):
    """Yield ``(dotted key, dataclass holding the field, field, type)`` for every field of ``cls``, depth
    first: a nested dataclass field comes right before its own fields."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        yield key, cls, f, hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _walk(hints[f.name], key + ".")


def _valid_keys(cls: type) -> list[str]:
    return [key for key, _c, _f, hint in _walk(cls) if not dataclasses.is_dataclass(hint)]


def _type_name(hint: Any) -> str:
    """``hint`` as written in a config class: ``int``, ``list[Member]``, ``str | None``, ``Literal['a', 'b']``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None and args:
        return f"{_type_name(origin)}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


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


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in ``cls``'s own source: the trailing ``# ...`` on the field's line(s),
    else the comment lines directly above it, joined into one line. Only fields ``cls`` itself declares;
    {} when the source cannot be read (a class built at run time)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments: dict[int, tuple[str, bool]] = {}  # line number -> (text, stands on a line of its own)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            comments[row] = (tok.string.lstrip("#").strip(), not lines[row - 1][:col].strip())
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    found = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        rows = range(node.lineno, node.end_lineno + 1)
        text = [comments[r][0] for r in rows if r in comments and not comments[r][1]]
        if not text:
            r = node.lineno - 1
            while r in comments and comments[r][1]:
                text.insert(0, comments[r][0])
                r -= 1
        found[node.target.id] = " ".join(t for t in text if t)
    return found


def _comment(cls: type, name: str) -> str:
    # the class that declares the field (a subclass that re-declares it overrides its base)
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return _field_comments(klass).get(name, "")
    return ""


def _default_text(value: Any) -> str:
    """``value`` as one would write it in ``key=value`` (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value and yaml.safe_load(value) == value else json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return repr(value)


def describe_keys(cls: type) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` for every key of ``cls``, in declaration order, nested keys dotted.

    The meaning is the field's comment in its dataclass (see ``_field_comments``), "" when it has none.
    The default is that of ``cls()``, so a nested default set by the outer config
    (``field(default_factory=lambda: SamplerConfig(steps=10))``) shows as such. A nested dataclass field
    gets its own row (type: its class, default: "") right before its keys, so its comment is shown too.
    """
    defaults = to_dict(cls())
    rows = []
    for key, owner, f, hint in _walk(cls):
        if dataclasses.is_dataclass(hint):
            rows.append((key, hint.__name__, "", _comment(owner, f.name)))
            continue
        value: Any = defaults
        for part in key.split("."):
            value = value[part]
        rows.append((key, _type_name(hint), _default_text(value), _comment(owner, f.name)))
    return rows


HELP_WIDTH = 110  # columns of the --help key table
_MIN_MEANING = 45  # columns the meaning keeps, taken from the type and default columns when keys are long
_MAX_DEFAULT = 32  # a longer default (a list of members, a shell command) is cut with '…'


def keys_help(cls: type, width: int = HELP_WIDTH) -> str:
    """The table of ``describe_keys(cls)`` that ``--help`` prints: key, type, default and meaning in
    aligned columns of at most ``width`` characters, a long meaning wrapped under its column. A type or
    default wider than its column pushes that row's meaning right; a nested dataclass row's type spans
    the default column."""
    rows = [
        (k, t, d if len(d) <= _MAX_DEFAULT else d[: _MAX_DEFAULT - 1] + "…", m) for k, t, d, m in describe_keys(cls)
    ]
    leaves = [r for r in rows if r[2]]  # a nested dataclass row is the one without a default
    kw = max(len(r[0]) for r in rows)
    tw = max(min(max((len(r[1]) for r in leaves), default=0), 16), len("TYPE"))
    dw = max(min(max((len(r[2]) for r in leaves), default=0), 16), len("DEFAULT"))
    while 2 + kw + 2 + tw + 2 + dw + 2 > width - _MIN_MEANING and max(tw, dw) > 9:
        if tw >= dw:
            tw -= 1
        else:
            dw -= 1
    col = 2 + kw + 2 + tw + 2 + dw + 2
    out = []
    for key, typ, default, meaning in [("KEY", "TYPE", "DEFAULT", "MEANING"), *rows]:
        prefix = f"  {key:<{kw}}  {typ:<{tw}}  {default}" if default else f"  {key:<{kw}}  {typ}"
        if not meaning:
            out.append(prefix.rstrip())
            continue
        first = prefix.ljust(col) if len(prefix) + 2 <= col else prefix + "  "
        out.extend(
            textwrap.wrap(meaning, width, initial_indent=first, subsequent_indent=" " * col, break_on_hyphens=False)
        )
    return "\n".join(out)


class _JobParser(argparse.ArgumentParser):
    """Prints ``keys_help`` of its config class under the options; built only when help is asked for,
    since reading the config classes' source takes a noticeable fraction of a second."""

    def __init__(self, config_class: type, **kwargs: Any):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.config_class = config_class

    def format_help(self) -> str:
        self.epilog = "config keys (override with key.sub=value, the value read as YAML, or in the --config file):\n"
        self.epilog += keys_help(self.config_class)
        return super().format_help()


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
    ``--help`` lists the flags and then every config key with its type, default and comment (``keys_help``).
    Exits with status 2 and the message on a config error, as argparse does for bad flags.
    """
    parser = _JobParser(
        cls, description="\n".join(textwrap.fill(line, HELP_WIDTH) for line in description.splitlines())
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
