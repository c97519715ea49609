"""Import and validate preference data: a VideoAlign CSV (or our parquet) -> validated parquet (``rlhf/data/import_job.py``).

python jobs/import_data.py --input pairs.csv --root /data/videos --out runs/prefs.parquet
python jobs/import_data.py --input pairs.csv --root /data/videos --out runs/prefs.parquet --strict
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.data.import_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
