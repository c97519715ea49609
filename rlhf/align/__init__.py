"""Alignment of the flow generator: Flow-DPO, Flow-RWR, SFT losses, pair building, the training step.

The losses are imported lazily: ``rlhf.align.pairs`` (numpy only) runs in Ray Data's workers, which should
not pay torch's import (~1.4 s and ~200 MB per worker) for it."""

_LAZY = {"flow_dpo_loss": ".flow_dpo", "flow_rwr_loss": ".flow_rwr", "sft_loss": ".sft"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["flow_dpo_loss", "flow_rwr_loss", "sft_loss"]
