"""Print the moving-shapes world's calibration: defect x dimension table, tie rate and ceiling (``rlhf/synthetic/world_report.py``).

python jobs/world_report.py                       # fresh sample of pairs
python jobs/world_report.py --dataset runs/dataset  # stats of a built dataset
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.synthetic.world_report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
