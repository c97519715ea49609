"""GPU hot paths at a realistic size, in plain PyTorch (no Ray, diffusers or transformers needed) (``rlhf/plain.py``).

python jobs/bench_gpu.py --out runs/bench/gpu.json          # on a CUDA machine
python jobs/bench_gpu.py --tiny --device cpu                  # a seconds-long smoke run of the same code
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first (ray job --working-dir)
from rlhf.plain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
