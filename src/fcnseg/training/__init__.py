"""Training: loss, optimiser parameter groups and schedules, the training loop, checkpoints."""
