"""Import and validate preference data: a VideoAlign CSV (or our parquet) -> validated parquet.

    python jobs/import_data.py --input pairs.csv --root /data/videos --out runs/prefs.parquet
    python jobs/import_data.py --input pairs.csv --root /data/videos --out runs/prefs.parquet --strict

Every bad row is reported by number and reason. Default: bad rows go to ``<out>.rejects.csv`` and
are counted in the summary; with ``--strict`` the import fails and writes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import parse_cli
from rlhf.data.schema import DataError, read_preferences, write_preferences
from rlhf.data.validate import validate_records, write_rejects
from rlhf.data.videoalign_csv import read_videoalign_csv


@dataclass
class ImportConfig:
    input: str = ""  # VideoAlign CSV (path_A,path_B,prompt,VQ,MQ,TA) or a preference parquet file
    root: str = ""  # dataset root the video paths are relative to (default: the input's folder)
    out: str = ""  # output parquet (default: <input stem>.parquet next to the input)
    split: str = "train"  # split name for rows without a split column
    strict: bool = False  # fail on the first bad row instead of writing rejects
    check_files: bool = True  # check that every video file exists

    def validate(self) -> None:
        if not self.input:
            raise ValueError("input is required: --input FILE.csv|FILE.parquet")


def run(cfg: ImportConfig):
    src = Path(cfg.input)
    root = Path(cfg.root) if cfg.root else src.parent
    out = Path(cfg.out) if cfg.out else src.with_suffix(".parquet")
    if out.resolve() == src.resolve():
        raise DataError(f"output {out} would overwrite the input; pass --out")
    if src.suffix.lower() == ".parquet":
        records = read_preferences(src).to_pylist()
    else:
        records = read_videoalign_csv(src, root, cfg.split)
    report = validate_records(records, root, cfg.check_files, source=str(src))
    if cfg.strict:
        report.raise_if_bad()
    write_preferences(report.good, out)
    rejects = out.with_name(out.stem + ".rejects.csv")
    if report.rejects:
        write_rejects(report.rejects, rejects)
    elif rejects.exists():
        rejects.unlink()
    return report, out, rejects


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        ImportConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--input": ("input", str, "CSV or parquet file"),
            "--root": ("root", str, "dataset root"),
            "--out": ("out", str, "output parquet"),
            "--split": ("split", str, "split name"),
        },
        bool_flags={"--strict": ("strict", "fail on any bad row")},
    )
    try:
        report, out, rejects = run(cfg)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {len(report.good)} rows to {out}")
    if report.rejects:
        for r in report.rejects[:10]:
            print(f"  row {r.row}: {r.reason}")
        if len(report.rejects) > 10:
            print(f"  ... {len(report.rejects) - 10} more")
        print(f"rejected rows with reasons: {rejects}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
