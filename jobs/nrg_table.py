"""Flow-NRG tables (VideoAlign Tables 6 and 7 in miniature): guided against unguided sampling (``rlhf/eval/nrg_table.py``).

    python jobs/nrg_table.py --out runs/nrg --noise-model runs/latent_noise/model \\
    python jobs/nrg_table.py --out runs/nrg ... tune_scales=0.5,1,2     # pick the scale on train prompts first
    python jobs/nrg_table.py --out runs/nrg ... --resume                 # keep the rows already drawn
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.eval.nrg_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
