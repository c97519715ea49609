"""Train the latent reward model Flow-NRG guides with (``rlhf.reward.latent``) (``rlhf/reward/latent_job.py``).

    python jobs/train_latent_reward.py --out runs/latent_noise                    # "w/ noise" (default)
    python jobs/train_latent_reward.py --out runs/latent_clean train.noise=false \\
    python jobs/train_latent_reward.py --out runs/latent_noise --resume           # continue from state.pt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.reward.latent_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
