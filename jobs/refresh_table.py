"""Does human feedback carry the loop? Online Flow-DPO with (a) the oracle as the reward, (b) the learned reward (``actors/refresh_table.py``).

python jobs/refresh_table.py                              # the three rows of docs/results/refresh_table.md
python jobs/refresh_table.py rows=frozen,refresh online.iterations=12 refresh.pairs=32
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from actors.refresh_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
