"""Preference records: schema round trip, VideoAlign CSV import, every bad row reported."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.data.schema import DataError, read_preferences, write_preferences
from rlhf.data.validate import validate_records
from rlhf.data.videoalign_csv import read_videoalign_csv

ROOT = Path(__file__).resolve().parents[1]


def rec(i, **kw):
    r = {
        "id": f"r{i}",
        "prompt": f"prompt {i}",
        "video_a": f"v/{i}a.mp4",
        "video_b": f"v/{i}b.mp4",
        "VQ": "A",
        "MQ": "B",
        "TA": "same",
        "Overall": None,
        "score_a": None,
        "score_b": None,
        "split": "train",
    }
    r.update(kw)
    return r


def test_schema_round_trip_keeps_extra_columns(tmp_path):
    rows = [rec(1, score_a={"VQ": 0.1, "MQ": 0.2, "TA": 0.3, "Overall": 0.2}, note="x"), rec(2, note=None)]
    path = write_preferences(rows, tmp_path / "p.parquet")
    table = read_preferences(path)
    assert table.column_names[:11] == [
        "id",
        "prompt",
        "video_a",
        "video_b",
        "VQ",
        "MQ",
        "TA",
        "Overall",
        "score_a",
        "score_b",
        "split",
    ]
    back = table.to_pylist()
    assert back[0]["score_a"] == {"VQ": 0.1, "MQ": 0.2, "TA": 0.3, "Overall": 0.2}
    assert back[0]["note"] == "x" and back[1]["note"] is None and back[1]["Overall"] is None


def test_read_rejects_foreign_parquet(tmp_path):
    pq.write_table(pa.table({"prompt": ["x"]}), tmp_path / "f.parquet")
    with pytest.raises(DataError, match="lacks column\\(s\\) id, video_a"):
        read_preferences(tmp_path / "f.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet"):
        read_preferences(tmp_path / "junk.parquet")


@pytest.fixture
def csv_dataset(tmp_path):
    """A VideoAlign CSV with 6 good rows and one row of each kind of defect."""
    (tmp_path / "v").mkdir()
    for name in ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b", "5a", "5b", "6a", "6b", "7a", "7b"]:
        (tmp_path / "v" / f"{name}.mp4").write_bytes(b"x")
    lines = [
        "path_A,path_B,prompt,VQ,MQ,TA,annotator",
        "v/1a.mp4,v/1b.mp4,a cat,A,B,same,ann1",  # 1 good
        "v/2a.mp4,v/2b.mp4,a dog,a,b,SAME,ann2",  # 2 good (case-insensitive labels)
        "v/9a.mp4,v/2b.mp4,a dog,A,A,A,ann3",  # 3 missing file
        "v/3a.mp4,v/3b.mp4,a fox,A,C,A,ann1",  # 4 unknown label
        "v/1b.mp4,v/1a.mp4,a cat,B,A,same,ann2",  # 5 duplicate pair of row 1 (swapped)
        "v/4a.mp4,v/4b.mp4,,A,B,A,ann3",  # 6 empty prompt
        "v/5a.mp4,v/5b.mp4,a cow,,,B,ann1",  # 7 good (VQ, MQ not annotated)
        f"{tmp_path}/v/6a.mp4,v/6b.mp4,a pig,tie,A,B,",  # 8 good (absolute path under root, tie alias)
        "v/7a.mp4,v/7b.mp4,a hen,A,B,A,ann2",  # 9 good
        "v/3a.mp4,v/3b.mp4,a yak,B,B,B,ann3",  # 10 good (same videos, other prompt)
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_import_reports_each_bad_row_and_keeps_every_good_one(csv_dataset):
    records = read_videoalign_csv(csv_dataset / "pairs.csv", csv_dataset)
    report = validate_records(records, csv_dataset)
    assert report.total == 10
    bad = {r.row: r.reason for r in report.rejects}
    assert set(bad) == {3, 4, 5, 6}
    assert bad[3].startswith("missing file: video_a v/9a.mp4")
    assert bad[4] == "unknown label: MQ='C' (expected A, B, same or empty)"
    assert bad[5] == "duplicate pair: same prompt and videos as row 1"
    assert bad[6] == "empty prompt"
    good = {r["prompt"]: r for r in report.good}
    assert sorted(good) == ["a cat", "a cow", "a dog", "a hen", "a pig", "a yak"]
    assert (good["a dog"]["VQ"], good["a dog"]["MQ"], good["a dog"]["TA"]) == ("A", "B", "same")
    assert good["a cow"]["VQ"] is None and good["a cow"]["TA"] == "B"
    assert good["a pig"]["video_a"] == "v/6a.mp4" and good["a pig"]["VQ"] == "same"
    assert good["a cat"]["annotator"] == "ann1"  # extra column kept


def test_missing_required_column(tmp_path):
    (tmp_path / "c.csv").write_text("video1,video2,prompt,VQ\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) path_A, path_B; the VideoAlign layout is"):
        read_videoalign_csv(tmp_path / "c.csv")


def test_strict_fails_listing_rows(csv_dataset):
    report = validate_records(
        read_videoalign_csv(csv_dataset / "pairs.csv", csv_dataset), csv_dataset, source="pairs.csv"
    )
    with pytest.raises(DataError) as e:
        report.raise_if_bad()
    msg = str(e.value)
    assert "4 bad row(s) of 10" in msg and "row 3:" in msg and "row 6: empty prompt" in msg


def run_import(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs/import_data.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_import_job_writes_good_rows_and_rejects_file(csv_dataset):
    out = csv_dataset / "out" / "prefs.parquet"
    res = run_import("--input", str(csv_dataset / "pairs.csv"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "10 rows, 6 good, 4 rejected" in res.stdout
    assert len(read_preferences(out)) == 6
    rejects = (csv_dataset / "out" / "prefs.rejects.csv").read_text().splitlines()
    assert len(rejects) == 5 and rejects[0] == "row,reason,record"


def test_import_job_strict_writes_nothing(csv_dataset):
    out = csv_dataset / "strict.parquet"
    res = run_import("--input", str(csv_dataset / "pairs.csv"), "--out", str(out), "--strict")
    assert res.returncode == 1
    assert "row 4: unknown label: MQ='C'" in res.stderr
    assert not out.exists()


def test_import_job_unknown_key_lists_valid_keys(csv_dataset):
    res = run_import("--input", str(csv_dataset / "pairs.csv"), "chek_files=false")
    assert res.returncode == 2
    assert "unknown config key 'chek_files'" in res.stderr and "check_files" in res.stderr
