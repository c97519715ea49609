"""Export a trained reward model as a small, self-contained artefact with a manifest (``rlhf/reward/export_job.py``).

python jobs/export_reward.py --run runs/reward_default --out artefacts/reward_default
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.reward.export_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
