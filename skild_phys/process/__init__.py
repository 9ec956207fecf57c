"""The SKILD process: DCT/Fourier bases, spectra, schedules, official presets, the diffusion
itself (forward marginals, reverse chain) and its expression in lattice units."""
