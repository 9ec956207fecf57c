"""skild-phys: SKILD scale-invariant diffusion and critical lattice tools."""

from skild_base import __version__

__all__ = ["__version__"]
