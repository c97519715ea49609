"""GPU check through the project's own code, each figure beside the plain-PyTorch copy of ``bench_gpu.py`` (``rlhf/gpu_check.py``).

python jobs/gpu_check.py --out runs/bench/gpu_check.json             # on a CUDA machine, bf16
python jobs/gpu_check.py --tiny --device cpu --out /tmp/check.json    # a seconds-long smoke run
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
