"""skild-phys: SKILD scale-invariant diffusion and critical lattice tools."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skild-phys")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
