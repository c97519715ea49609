"""Typed job configs: YAML + key=value overrides, strict keys and types, --help from the field comments."""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from rlhf.config import HELP_WIDTH, ConfigError, describe_keys, keys_help, load_config, parse_cli, save_config


@dataclass
class Inner:
    lr: float = 1e-4
    steps: int = 10
    mode: Literal["dpo", "rwr"] = "dpo"


@dataclass
class Job:
    name: str = "run"
    workers: int = 2
    verbose: bool = False
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    ckpt: str | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def test_defaults_file_then_overrides_in_that_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 4\ninner: {lr: 0.5, steps: 3}\n")
    cfg = load_config(Job, f, ["inner.steps=7", "weights=[0.1,0.1,0.8]", "verbose=true", "ckpt=a/b"])
    assert cfg.workers == 4
    assert cfg.inner.lr == 0.5 and cfg.inner.steps == 7 and cfg.inner.mode == "dpo"
    assert cfg.weights == [0.1, 0.1, 0.8]
    assert cfg.verbose is True and cfg.ckpt == "a/b"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(Job, None, ["inner.lr=1"]).inner.lr == 1.0
    assert load_config(Job, None, ["inner.lr=5e-4"]).inner.lr == 0.0005  # YAML 1.1 reads this as a string
    with pytest.raises(ConfigError, match="inner.lr.*a number"):
        load_config(Job, None, ["inner.lr=fast"])
    with pytest.raises(ConfigError, match="inner.steps.*integer"):
        load_config(Job, None, ["inner.steps=2.5"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(Job, None, ["inner.lrr=3"])
    msg = str(e.value)
    assert "inner.lrr" in msg
    for key in ("name", "workers", "verbose", "weights", "ckpt", "inner.lr", "inner.steps", "inner.mode"):
        assert key in msg


def test_unknown_key_in_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("worker: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'worker'.*valid keys: name, workers"):
        load_config(Job, f)


def test_wrong_types_and_literals_are_named():
    with pytest.raises(ConfigError, match="'workers': expected an integer, got 'many'"):
        load_config(Job, None, ["workers=many"])
    with pytest.raises(ConfigError, match="'inner.mode': expected one of 'dpo', 'rwr'"):
        load_config(Job, None, ["inner.mode=ppo"])
    with pytest.raises(ConfigError, match="'verbose': expected true or false"):
        load_config(Job, None, ["verbose=3"])
    with pytest.raises(ConfigError, match=r"weights\[1\]"):
        load_config(Job, None, ["weights=[1, x]"])


def test_validate_hook_runs_on_the_result():
    with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
        load_config(Job, None, ["workers=0"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Job, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Job, lst)
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Job, None, ["workers"])


def test_saved_config_reloads_to_the_same_value(tmp_path):
    cfg = load_config(Job, None, ["inner.steps=5", "weights=[0.5, 0.5, 0.0]"])
    path = save_config(cfg, tmp_path / "run")
    assert yaml.safe_load(path.read_text())["inner"]["steps"] == 5
    assert load_config(Job, path) == cfg


def test_cli_flags_and_overrides(capsys):
    cfg = parse_cli(Job, ["--workers", "3", "inner.steps=4"], "test", {"--workers": ("workers", int, "n")})
    assert cfg.workers == 3 and cfg.inner.steps == 4
    with pytest.raises(SystemExit) as e:
        parse_cli(Job, ["nope=1"], "test")
    assert e.value.code == 2
    assert "unknown config key 'nope'" in capsys.readouterr().err


@dataclass
class Schedule:
    warmup: int = 100  # linear warm-up steps
    # cosine decay to lr x floor,
    # reached at the last step
    floor: float = 0.1
    kind: Literal["cosine", "constant"] = "cosine"


@dataclass
class Recipe:
    out: str = "runs/x"  # run directory
    name: str = ""  # run name ("" = the directory's)
    answer: str = "yes"  # YAML reads a bare yes as true, so the default is shown quoted
    ckpt: str | None = None  # resume from here
    # not the meaning of workers: a field's own comment wins
    workers: int = 2  # processes
    tags: list[str] = field(default_factory=list)
    # a comment with a blank line under it belongs to no field

    seed: int = 0
    lr: float = 5e-4  # AdamW
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=5))  # learning-rate schedule


RECIPE_KEYS = [
    ("out", "str", "runs/x", "run directory"),
    ("name", "str", '""', 'run name ("" = the directory\'s)'),
    ("answer", "str", '"yes"', "YAML reads a bare yes as true, so the default is shown quoted"),
    ("ckpt", "str | None", "null", "resume from here"),
    ("workers", "int", "2", "processes"),
    ("tags", "list[str]", "[]", ""),
    ("seed", "int", "0", ""),
    ("lr", "float", "0.0005", "AdamW"),
    ("schedule", "Schedule", "", "learning-rate schedule"),
    ("schedule.warmup", "int", "5", "linear warm-up steps"),  # the outer default, not Schedule's 100
    ("schedule.floor", "float", "0.1", "cosine decay to lr x floor, reached at the last step"),
    ("schedule.kind", "Literal['cosine', 'constant']", "cosine", ""),
]


def test_describe_keys_gives_type_default_and_comment_of_every_key():
    assert describe_keys(Recipe) == RECIPE_KEYS


@dataclass
class LongRecipe(Recipe):
    out: str = "runs/long"  # redeclared: this comment replaces the base's
    epochs: int = 3  # passes over the data


def test_inherited_fields_keep_their_base_class_comment():
    rows = {key: (typ, default, meaning) for key, typ, default, meaning in describe_keys(LongRecipe)}
    assert rows["out"] == ("str", "runs/long", "redeclared: this comment replaces the base's")
    assert rows["workers"] == ("int", "2", "processes")
    assert rows["schedule.floor"] == ("float", "0.1", "cosine decay to lr x floor, reached at the last step")
    assert rows["epochs"] == ("int", "3", "passes over the data")


def test_help_lists_every_key_with_type_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as e:
        parse_cli(Recipe, ["--help"], "Train a recipe.", {"--out": ("out", str, "run directory")})
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"^  --out OUT\s+run directory \(= out\)$", out, re.M)
    assert re.search(r"^  KEY\s+TYPE\s+DEFAULT\s+MEANING$", out, re.M)
    for row in RECIPE_KEYS:
        line = "  " + r"\s+".join(re.escape(cell) for cell in row if cell)
        assert re.search(f"^{line}$", out, re.M), f"no help line for {row[0]}"


@dataclass
class Verbose:
    # the learning rate of the optimiser that trains the low-rank adapter, warmed up linearly over warmup steps
    # and then decayed along a cosine to lr x lr_floor at the very last optimiser step of the run
    lr: float = 1e-4
    members: list[int] = field(default_factory=lambda: list(range(40)))  # ranks of the members


def test_help_table_fits_its_width_wrapping_meanings_and_cutting_long_defaults():
    lines = keys_help(Verbose).splitlines()
    assert max(len(line) for line in lines) <= HELP_WIDTH
    meaning_col = lines[0].index("MEANING")
    lr_lines = [line for line in lines if line.startswith("  lr ") or line[:meaning_col].isspace()]
    assert len(lr_lines) == 3
    assert " ".join(line[meaning_col:] for line in lr_lines) == describe_keys(Verbose)[0][3]
    members = next(line for line in lines if line.startswith("  members "))
    # 32 characters: the default's first 31 ("[" and ten "d, ") and the cut mark
    assert "  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, …  ranks of the members" in members


def _uncommented(roots: list[type]) -> dict[str, list[str]]:
    """Declaring class -> "its commented/all field count" line and its fields without a comment, over
    every dataclass reachable from ``roots`` through nested config fields."""
    found: dict[str, dict[str, bool]] = {}
    seen, todo = set(), list(roots)
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        meanings = {key: meaning for key, _t, _d, meaning in describe_keys(cls) if "." not in key}
        for f in dataclasses.fields(cls):
            owner = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
            found.setdefault(f"{owner.__module__}.{owner.__qualname__}", {})[f.name] = bool(meanings[f.name])
            if dataclasses.is_dataclass(hints[f.name]):
                todo.append(hints[f.name])
    return {
        f"{name} ({sum(fields.values())}/{len(fields)} commented)": [f for f, ok in fields.items() if not ok]
        for name, fields in found.items()
    }


def test_real_job_configs_describe_every_key_with_a_meaning():
    """Every job that reads a config (a ``parse_cli`` call under actors/, jobs/, rlhf/, serve/), plus the
    generator actors' config the online job builds: its valid keys are the leaf rows of ``describe_keys``,
    and every row, nested ones included, has a meaning (the field's comment), so ``--help`` explains it."""
    import ast
    import importlib
    from pathlib import Path

    from actors.generator import GeneratorActorConfig

    repo = Path(__file__).resolve().parents[1]
    roots = [GeneratorActorConfig]
    for path in sorted(p for d in ("actors", "jobs", "rlhf", "serve") for p in (repo / d).rglob("*.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "parse_cli"
        ]
        if not calls or path == repo / "rlhf" / "config.py":
            continue
        module = importlib.import_module(".".join(path.relative_to(repo).with_suffix("").parts))
        roots += [getattr(module, call.args[0].id) for call in calls]
    names = {root.__name__ for root in roots}
    expected = {"OnlineConfig", "TrainRewardJob", "PretrainConfig", "AlignOfflineConfig", "EvaluateConfig"}
    expected |= {"MakeDatasetConfig", "LatentRewardJobConfig", "GenerateConfig", "NRGTableConfig"}
    expected |= {"AlignTableConfig", "RefreshTableConfig", "EvaluateRewardConfig", "BenchConfig", "ImportConfig"}
    expected |= {"ExportRewardConfig", "WorldReportConfig"}
    assert expected <= names, f"job configs not found: {sorted(expected - names)}"
    missing = []
    for root in roots:
        with pytest.raises(ConfigError) as e:
            load_config(root, None, ["no_such_key=1"])
        valid = str(e.value).split("valid keys: ")[1].split(", ")
        rows = describe_keys(root)
        assert [key for key, _t, default, _m in rows if default] == valid, root.__name__
        missing += [f"{root.__name__}: {key}" for key, _t, _d, meaning in rows if not meaning]
    by_class = {name: fields for name, fields in _uncommented(roots).items() if fields}
    assert not missing, (
        "keys without a meaning (give the field a comment):\n  "
        + "\n  ".join(missing)
        + "\nby declaring class:\n  "
        + "\n  ".join(f"{name}: {', '.join(fields)}" for name, fields in by_class.items())
    )
