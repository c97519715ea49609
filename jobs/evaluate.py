"""Win rate of an aligned policy against the pretrained one on held-out prompts, same seeds (``rlhf/eval/policy_job.py``).

python jobs/evaluate.py --adapter runs/align_dpo/adapter --out runs/align_dpo/eval.json
python jobs/evaluate.py --adapter runs/ta/adapter weights.VQ=0 weights.MQ=0 seeds=8
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.eval.policy_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
