"""Offline alignment of the generator: sample prompt groups, score them, train a LoRA (``rlhf/align/offline_job.py``).

python jobs/align_offline.py --out runs/align_dpo --algo dpo                 # learned reward (shipped)
python jobs/align_offline.py --out runs/align_rwr --algo rwr --reward oracle # oracle-reward run
python jobs/align_offline.py --out runs/ta --algo dpo train.pairs.weights.VQ=0 train.pairs.weights.MQ=0
python jobs/align_offline.py --out runs/more --algo dpo train.init_adapter=runs/align_dpo/adapter
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.align.offline_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
