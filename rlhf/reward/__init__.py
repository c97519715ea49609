"""VideoReward: the multi-dimensional VLM reward model, its losses, metrics and checkpoints."""
