"""Parameter sweeps: one store per point of a grid of sizes and temperatures.

A swept parameter adds `_NAMEvalue` to the output name, before a trailing `.zarr`:
`--L 32,64 --T 2.2,2.3 --out ising.zarr` writes ising_L32_T2.2.zarr, ising_L32_T2.3.zarr,
ising_L64_T2.2.zarr and ising_L64_T2.3.zarr.  Every point uses the same seed, so each store
equals the single-point run with that point's parameters.
"""

from __future__ import annotations

import itertools

from skild_base.errors import InputError


def point_path(out: str, point: dict, swept: list[str]) -> str:
    """The store of one point: `out` with a suffix for each swept parameter."""
    out = str(out)
    stem, ext = (out[:-5], out[-5:]) if out.endswith(".zarr") else (out, "")
    return stem + "".join(f"_{name}{point[name]!r}" for name in swept) + ext


def sweep_points(out: str, axes: dict[str, list]) -> list[tuple[dict, str]]:
    """(point, store path) for every point of the product of the axes, in the order given."""
    for name, values in axes.items():
        if len(set(values)) != len(values):
            raise InputError(f"--{name} lists a value twice: {','.join(map(str, values))}")
    swept = [name for name, values in axes.items() if len(values) > 1]
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return [(point, point_path(out, point, swept)) for point in points]
