"""Build a moving-shapes preference dataset: mp4 videos, prefs.parquet and manifest.json (``rlhf/synthetic/dataset_job.py``).

python jobs/make_dataset.py --pairs 2000 --out runs/dataset
python jobs/make_dataset.py --config jobs/configs/make_dataset.yaml annotator.tie_k=5 workers=1
python jobs/make_dataset.py --pairs 0 generated.prompts=200 --out runs/generated   # generated pairs only
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.synthetic.dataset_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
