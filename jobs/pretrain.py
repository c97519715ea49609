"""Pretrain the moving-shapes world's base generator (Wan transformer + UMT5) by flow matching (``rlhf/generator/pretrain_job.py``).

python jobs/pretrain.py --out runs/pretrain                      # the shipped recipe
python jobs/pretrain.py --out runs/pretrain --resume             # continue from runs/pretrain/state.pt
python jobs/pretrain.py --out runs/quick steps=50 batch=4        # a smoke run
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.generator.pretrain_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
