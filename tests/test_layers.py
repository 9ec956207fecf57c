"""The package layers form one line, each using only those below it (docs/architecture.md):

    skild_phys   the SKILD process, networks, methods, sampling, data adapters, training, reports, CLI
      ising      lattice models, the Wolff sampler, exact results, stores, store correlators
      analysis   pure estimators over arrays and DataArrays
      skild_base errors, output claims and locks, the version

Every import statement of every module (function-local ones included) is read from the source,
so a lazy import cannot hide an upward arrow.  Below skild_phys nothing imports torch.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["skild_base", "analysis", "ising", "skild_phys"]  # bottom to top
NO_TORCH = {"skild_base", "analysis", "ising"}
# inside skild_phys, bottom to top: a module may import skild_phys modules of a lower rank or of its own
# sub-package (and the package face, for the version)
SKILD_RANKS = {
    "config": 0, "checkpoint": 0, "process": 0, "networks": 0, "data": 0,
    "methods": 1, "workflow": 1,
    "training": 2, "sampling": 2,
    "reports": 3,
    "cli": 4,
    "demo": 5, "__main__": 5,
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}:{node.lineno}: relative import; the layer test reads absolute ones")
    return out


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_runs_up_a_layer(package):
    higher = set(LAYERS[LAYERS.index(package) + 1:])
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for path in _modules(package) for line, module in _imports(path)
           if module.split(".")[0] in higher or (package in NO_TORCH and module.split(".")[0] == "torch")]
    assert not bad, "\n".join(bad)


def _part(module: str) -> str:
    """The sub-package or top-level module of skild_phys a dotted module path falls in."""
    return module.split(".")[1]


def test_skild_phys_sub_packages_form_a_line():
    parts = {p.relative_to(ROOT / "skild_phys").parts[0].removesuffix(".py")
             for p in (ROOT / "skild_phys").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert parts - {"__init__"} == set(SKILD_RANKS)
    bad = []
    for path in _modules("skild_phys"):
        rel = path.relative_to(ROOT / "skild_phys").parts[0].removesuffix(".py")
        if rel == "__init__":
            continue
        for line, module in _imports(path):
            if not module.startswith("skild_phys.") or _part(module) == rel or _part(module) == "__version__":
                continue
            if _part(module) in SKILD_RANKS and SKILD_RANKS[_part(module)] >= SKILD_RANKS[rel]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


def test_the_contract_sees_every_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(LAYERS)
    # and it would catch an upward import: this file's own parser on a known-bad snippet
    bad = ROOT / "tests" / "_layer_probe.py"
    try:
        bad.write_text("def f():\n    from skild_phys.process import basis\n")
        assert (2, "skild_phys.process") in _imports(bad)
    finally:
        bad.unlink()
