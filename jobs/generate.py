"""Sample videos from a generator (optionally a LoRA policy, optionally with Flow-NRG reward guidance) (``rlhf/generator/generate_job.py``).

    python jobs/generate.py --out runs/gen --prompt "a red circle moving left slowly on a gray background"
    python jobs/generate.py --out runs/gen_heldout prompts=heldout per_prompt=2
    python jobs/generate.py --out runs/gen_nrg prompts=heldout --guidance-model runs/latent_noise/model \\
    python jobs/generate.py --out runs/gen_dpo prompts=heldout --lora runs/online_dpo/adapter
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.generator.generate_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
