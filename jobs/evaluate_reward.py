"""Evaluate VideoReward checkpoints on held-out pairs; build the ablation table (Table 3 in miniature) (``actors/reward_eval.py``).

python jobs/evaluate_reward.py --checkpoint runs/reward_default --data runs/eval_heldout
python jobs/evaluate_reward.py --ablation --out runs/ablation      # trains the four variants first
python jobs/evaluate_reward.py --checkpoint artefacts/reward_default --probe   # + caption probe
python jobs/evaluate_reward.py --checkpoint artefacts/reward_default --policy artefacts/generator_default
python jobs/evaluate_reward.py --checkpoint artefacts/reward_mixed --defects pair   # minimal-pair probe
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from actors.reward_eval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
