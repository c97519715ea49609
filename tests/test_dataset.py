"""The dataset builder: files that decode, records that validate, determinism across workers."""

import json

import numpy as np
import pytest

from rlhf.data.schema import read_preferences
from rlhf.data.validate import validate_records
from rlhf.synthetic.dataset import PairSampling, build_dataset, pair_spec
from rlhf.synthetic.oracle import score
from rlhf.video import read_video


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    build_dataset(out, pairs=30, seed=3, workers=1, progress=False)
    return out


def test_records_validate_and_videos_decode(built):
    table = read_preferences(built / "prefs.parquet")
    assert len(table) == 30
    report = validate_records(table.to_pylist(), built)
    assert report.rejects == []
    for r in table.to_pylist()[:5]:
        v = read_video(built / r["video_a"])
        assert v.shape == (8, 32, 32, 3)
        # labels describe the stored file: the oracle on the decoded mp4 gives the recorded scores
        assert score(v, r["prompt"]) == pytest.approx(r["score_a"], abs=1e-9)
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["pairs"] == 30 and set(manifest["stats"]) == {"VQ", "MQ", "TA", "Overall"}


def test_pairs_differ_in_defects_and_share_the_prompt():
    for i in range(200):
        s = pair_spec(0, i)
        assert s.defects_a != s.defects_b
    kinds = {k for i in range(300) for k in pair_spec(0, i).defects_a}
    assert {"wrong_colour", "wrong_shape", "wrong_direction", "wrong_speed"} <= kinds


def test_contrast_pairs_differ_in_one_text_alignment_defect():
    cfg = PairSampling(grammar="mixed", contrast_prob=0.5)
    specs = [pair_spec(2, i, cfg) for i in range(200)]
    contrast = [s for s in specs if s.seed_a == s.seed_b]
    assert 60 < len(contrast) < 140  # about half
    ta = {"wrong_colour", "wrong_shape", "wrong_direction", "wrong_speed", "swap", "wrong_relation"}
    sides = set()
    for s in contrast:
        small, big = sorted((s.defects_a, s.defects_b), key=len)
        extra = set(big) - set(small)
        assert len(big) == len(small) + 1 and len(extra) == 1 and extra <= ta
        assert all(big[k] == v for k, v in small.items())  # the shared defects at the same strengths
        if extra & {"swap", "wrong_relation"}:
            assert s.prompt.kind == "pair"  # pair-only defects only on pair prompts
        sides.add(len(s.defects_a) > len(s.defects_b))
    assert sides == {True, False}  # the worse clip is drawn on either side


def test_split_follows_the_prompt():
    specs = [pair_spec(1, i, PairSampling(heldout_fraction=0.5)) for i in range(100)]
    assert {s.prompt.split for s in specs} == {"train", "heldout"}


def test_same_records_with_two_workers(built, tmp_path):
    build_dataset(tmp_path, pairs=30, seed=3, workers=2, progress=False)
    a = read_preferences(built / "prefs.parquet").to_pylist()
    b = read_preferences(tmp_path / "prefs.parquet").to_pylist()
    assert a == b
    assert np.array_equal(read_video(built / a[7]["video_b"]), read_video(tmp_path / b[7]["video_b"]))
