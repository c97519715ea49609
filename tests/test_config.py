"""Typed job configs: YAML + key=value overrides, strict keys and types."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from rlhf.config import ConfigError, load_config, parse_cli, save_config


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
