"""Pretraining job: resume continues exactly, a second run refuses to overwrite, export writes a manifest."""

import json

import pytest
import torch

from rlhf.artefacts import verify_manifest
from rlhf.generator.model import load_generator
from rlhf.generator.pretrain_job import main

TINY = [
    "generator.layers=1",
    "generator.heads=2",
    "generator.head_dim=8",
    "generator.ffn_dim=32",
    "generator.freq_dim=16",
    "generator.position_channels=4",
    "generator.layout_channels=2",
    "generator.text_dim=16",
    "generator.text_layers=1",
    "generator.text_ffn=32",
    "batch=2",
    "warmup=2",
    "checkpoint_every=2",
    "threads=1",
    "eval_prompts=0",
]


def test_resume_is_exact_and_export_has_a_manifest(tmp_path):
    assert main(["--out", str(tmp_path / "straight"), "steps=4", *TINY]) == 0
    assert main(["--out", str(tmp_path / "split"), "steps=2", *TINY]) == 0
    assert (
        main(["--out", str(tmp_path / "split"), "--resume", "steps=4", *TINY, f"export={tmp_path / 'artefact'}"]) == 0
    )
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    manifest = verify_manifest(tmp_path / "artefact")
    assert "generator.json" in manifest["files"] and "pretrain.py" in manifest["command"]
    load_generator(tmp_path / "artefact")
    (tmp_path / "artefact" / "generator.json").write_text(json.dumps({"layers": 2}))
    with pytest.raises(ValueError, match="changed since export"):
        load_generator(tmp_path / "artefact")


def test_second_run_in_the_same_directory_is_refused(tmp_path):
    assert main(["--out", str(tmp_path), "steps=1", *TINY]) == 0
    with pytest.raises(FileExistsError, match="--resume"):
        main(["--out", str(tmp_path), "steps=1", *TINY])


def test_manifest_records_paths_inside_the_repository_relative_to_it(tmp_path):
    import json

    from rlhf.artefacts import REPO, write_manifest

    (tmp_path / "w.bin").write_bytes(b"x")
    meta = {
        "config": {
            "out": str(REPO / "runs" / "r"),
            "data": [str(REPO / "artefacts" / "a")],
            "elsewhere": "/opt/data",
            "note": "runs/r",
        }
    }
    write_manifest(tmp_path, meta)
    got = json.loads((tmp_path / "MANIFEST.json").read_text())["config"]
    assert got == {"out": "runs/r", "data": ["artefacts/a"], "elsewhere": "/opt/data", "note": "runs/r"}


def test_table_files_append_suffixes_so_a_dotted_stem_keeps_its_name():
    from pathlib import Path

    from rlhf.artefacts import table_files

    assert table_files("runs/t_lr0.00005") == (Path("runs/t_lr0.00005.md"), Path("runs/t_lr0.00005.json"))
    assert table_files("docs/results/align_table") == (
        Path("docs/results/align_table.md"),
        Path("docs/results/align_table.json"),
    )
    assert table_files("runs/x.md") == table_files("runs/x.json") == (Path("runs/x.md"), Path("runs/x.json"))
