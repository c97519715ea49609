"""Parquet schema of preference records and their I/O.

One row compares two videos of one prompt:

==========  ==================  ===========================================================
column      type                meaning
==========  ==================  ===========================================================
id          string              unique record id
prompt      string              the text prompt both videos were generated from
video_a     string              path of video A, relative to the dataset root
video_b     string              path of video B, relative to the dataset root
VQ MQ TA    string or null      label per dimension: "A", "B", "same" (tie), null (not annotated)
Overall     string or null      overall label, same values
score_a     struct or null      per-video scores {VQ, MQ, TA, Overall} of A (MOS; regression ablation)
score_b     struct or null      the same for B
split       string              "train", "heldout", "test", ...
==========  ==================  ===========================================================

Any further columns (provenance, VideoAlign's extra CSV columns) are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

LABELS = ("A", "B", "same")
LABEL_DIMS = ("VQ", "MQ", "TA", "Overall")
SCORE_DIMS = ("VQ", "MQ", "TA", "Overall")
SCORE_TYPE = pa.struct([pa.field(d, pa.float64()) for d in SCORE_DIMS])
PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("video_a", pa.string(), nullable=False),
        pa.field("video_b", pa.string(), nullable=False),
        *(pa.field(d, pa.string()) for d in LABEL_DIMS),
        pa.field("score_a", SCORE_TYPE),
        pa.field("score_b", SCORE_TYPE),
        pa.field("split", pa.string(), nullable=False),
    ]
)
CORE_COLUMNS = tuple(PREFERENCE_SCHEMA.names)
LABEL_VALUE = {"A": 1, "B": -1, "same": 0}


class DataError(ValueError):
    """A preference file or record that does not match the schema; the message names it and the fix."""


def label_value(label: str | None) -> int | None:
    """ "A" -> 1, "B" -> -1, "same" -> 0, None -> None (not annotated)."""
    if label is None:
        return None
    try:
        return LABEL_VALUE[label]
    except KeyError:
        raise DataError(f"unknown label {label!r}; expected one of {', '.join(LABELS)} or null") from None


def to_table(records: list[dict]) -> pa.Table:
    """Records (dicts) as a table: the core columns typed by the schema, extra columns appended."""
    extra = []
    for r in records:
        for k in r:
            if k not in CORE_COLUMNS and k not in extra:
                extra.append(k)
    arrays = []
    for field in PREFERENCE_SCHEMA:
        try:
            arrays.append(pa.array([r.get(field.name) for r in records], type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"column {field.name}: values do not fit type {field.type} ({e})") from None
    fields = list(PREFERENCE_SCHEMA)
    for k in extra:
        arr = pa.array([r.get(k) for r in records])
        arrays.append(arr)
        fields.append(pa.field(k, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_preferences(records: list[dict] | pa.Table, path: str | Path) -> Path:
    """Write records to parquet atomically (a crash leaves the previous file intact)."""
    import pyarrow.parquet as pq

    table = records if isinstance(records, pa.Table) else to_table(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_preferences(path: str | Path) -> pa.Table:
    """Read a preference parquet file and check its core columns and types."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"preference file {path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"preference file {path} is not a readable parquet file ({e})") from None
    missing = [c for c in CORE_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"preference file {path} lacks column(s) {', '.join(missing)}; expected {', '.join(CORE_COLUMNS)} "
            "(import a VideoAlign CSV with jobs/import_data.py)"
        )
    for field in PREFERENCE_SCHEMA:
        have = table.schema.field(field.name).type
        if have != field.type and not (pa.types.is_null(have)):
            raise DataError(f"preference file {path}: column {field.name} has type {have}, expected {field.type}")
    return table


def records(table: pa.Table) -> list[dict]:
    """Rows of a preference table as dicts."""
    return table.to_pylist()
