"""Tables 4 and 5 in miniature: SFT / Flow-RWR / Flow-DPO (beta_t) / Flow-DPO (constant beta) against (``rlhf/eval/align_table.py``).

python jobs/align_table.py                     # both weightings (1:1:1 and TA only), every algorithm
python jobs/align_table.py weightings=1:1:1 algos=dpo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.eval.align_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
