"""Denoiser networks: the periodic U-Net and the precision/compile wrapper."""
