"""Online Flow-DPO / Flow-RWR of the video generator on Ray (the product's main job; ``actors/online.py``).

    python jobs/online_dpo.py                                   # embedded default: local Ray, moving shapes
    python jobs/online_dpo.py --out runs/online --mode one_step_off trainer.algo.algo=rwr
    python jobs/online_dpo.py --out runs/online --resume        # continue from the last checkpoint
    python jobs/online_dpo.py --check                           # each role's GPU memory against cluster.yaml
    ray job submit --working-dir . -- python jobs/online_dpo.py # against a running cluster

The console shows a progress bar, a line per iteration and the result; Ray, Serve and worker logs go to
``<out>/run.log`` (``--verbose`` shows them too). ``tensorboard --logdir <out>`` reads the run's scalars
and the evaluation's side-by-side clips. ``--help`` lists every key with its type, default and meaning.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from actors.online import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
