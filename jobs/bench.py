"""Benchmarks: figures measured side by side in one run, written as JSON and Markdown and printed as a table (``actors/bench.py``).

python jobs/bench.py                          # every benchmark (about 20 minutes on 2 cores)
python jobs/bench.py only=[loop] loop_iterations=2
python jobs/bench.py only=[hot,service]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from actors.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
