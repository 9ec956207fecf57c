"""Sampling: the reverse-chain samplers and the drivers that write lattice stores and images."""
