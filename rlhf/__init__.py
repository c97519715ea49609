"""Online RLHF for text-to-video flow models: the library (pure PyTorch/numpy, no Ray)."""

__version__ = "0.1.0"
