"""Alignment of the flow generator: Flow-DPO, Flow-RWR, SFT losses, pair building, the training step."""

from .flow_dpo import flow_dpo_loss
from .flow_rwr import flow_rwr_loss
from .sft import sft_loss

__all__ = ["flow_dpo_loss", "flow_rwr_loss", "sft_loss"]
