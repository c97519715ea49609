"""Train VideoReward on Ray Train workers running DeepSpeed; evaluate on the held-out split (``actors/reward_trainer.py``).

python jobs/train_reward.py --data runs/dataset --out runs/reward
python jobs/train_reward.py --config jobs/configs/train_reward.yaml loss=bt num_workers=1
python jobs/train_reward.py --data runs/dataset --out runs/reward --resume
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from actors.reward_trainer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
