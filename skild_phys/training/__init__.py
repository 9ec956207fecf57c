"""Training: the loop and its run directory (files in skild_phys.checkpoint), data-parallel ranks."""
