"""The bottom layer of skild-phys: what every other package may use and that uses none of them.

errors (the one user-mistake exception), outputs (claiming, replacing and locking outputs), memory
(the allocator setting every command runs with) and
the version written into every output.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skild-phys")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
