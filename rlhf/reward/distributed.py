"""DeepSpeed on top of an existing torch.distributed group (as Ray Train sets one up).

On CPU DeepSpeed needs ``DS_ACCELERATOR=cpu`` and, at its first ``init_distributed``, JIT-compiles a
shared-memory op for 20-30 s; the op only speeds up intra-node CPU collectives, which gloo already
does, so it is skipped. A client optimiser (torch AdamW) avoids compiling FusedAdam (39 s).
"""

from __future__ import annotations

import os
import sys


def init_deepspeed(use_gpu: bool) -> None:
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.comm.torch  # noqa: F401  (registers the module patched below)

    if not use_gpu:
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def check_zero_stage(zero_stage: int, bf16: bool, prefix: str = "") -> None:
    """ZeRO stage 0-3, and >= 1 with bf16: at stage 0 DeepSpeed 0.19 routes bf16 through its
    ``FP16_UnfusedOptimizer``, whose first AdamW step measured lr / sqrt(2) instead of lr
    (tests/test_device.py); ZeRO 1-3 keep fp32 master weights and step exactly. ``prefix`` names the
    config's keys (``trainer.``)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"{prefix}zero_stage must be 0-3, got {zero_stage}")
    if bf16 and zero_stage == 0:
        raise ValueError(
            f"{prefix}device.precision=bf16 needs {prefix}zero_stage=1, 2 or 3 (DeepSpeed ZeRO stage 1 shards "
            "only the optimiser state and costs nothing on one GPU); stage 0 with bf16 steps AdamW wrongly in "
            "DeepSpeed 0.19"
        )


def deepspeed_config(batch_size: int, zero_stage: int, bf16: bool, grad_clip: float = 1.0) -> dict:
    """The DeepSpeed config of both trainers (alignment and reward); see :func:`check_zero_stage`."""
    check_zero_stage(zero_stage, bf16)
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
