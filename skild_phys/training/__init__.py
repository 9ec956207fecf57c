"""Training: the loop, run directories and checkpoints, data-parallel ranks."""
