"""The package's layers: every import, at module level or inside a function, points down.

A module may import its own sub-package and any lower layer, never a higher one (train must not
reach into prune or report, and so on), so each layer can be read, tested and reused without
what is built on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import protoprune

PACKAGE = Path(protoprune.__file__).parent

# lower rank = lower layer; a module may import only strictly lower ranks outside its own part
RANK = {
    "__init__": 0, "errors": 0,
    "registry": 1, "names": 1, "io": 1, "progress": 1, "devices": 1,
    "config": 2, "metrics": 2, "figures": 2, "seed": 2, "distributed": 3,
    "data": 4, "models": 4,
    "train": 5, "lrp": 5, "explain": 6, "prune": 7, "report": 8, "experiments": 9, "study": 10,
    "demo": 11, "cli": 12, "__main__": 13,
}  # fmt: skip


def _part(module: Path) -> str:
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_parts(source: str, depth: int) -> set[str]:
    """The top-level parts of protoprune that a module's source imports (relative or absolute);
    `depth` is how many packages below protoprune the module lies (0 for protoprune/x.py)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1  # levels above the module's own package
                if up < depth:  # stays inside its own part
                    continue
                if up > depth:
                    continue
                names = [node.module] if node.module else [a.name for a in node.names]
                found.update(n.split(".")[0] for n in names)
            elif node.module and node.module.startswith("protoprune."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("protoprune."))
    return found


def test_every_part_has_a_rank():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(RANK), f"give these a layer: {sorted(parts - set(RANK))}"


def test_every_import_points_down():
    upward = []
    for module in sorted(PACKAGE.rglob("*.py")):
        own = _part(module)
        depth = len(module.relative_to(PACKAGE).parts) - 1
        for target in _imported_parts(module.read_text(), depth) - {own}:
            if target in RANK and RANK[target] >= RANK[own]:
                upward.append(f"{module.relative_to(PACKAGE)} imports {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_walker_resolves_relative_and_absolute_imports():
    source = (
        "from ..report.html import build_report\n"  # protoprune.report
        "from .loop import fit\n"  # its own package
        "from .. import io, seed\n"  # protoprune.io, protoprune.seed
        "def f():\n    import protoprune.prune.filters\n"  # inside a function
        "import numpy\nfrom numpy import linalg\n"  # not protoprune
    )
    assert _imported_parts(source, depth=1) == {"report", "io", "seed", "prune"}
    assert _imported_parts("from .config import RunConfig\n", depth=0) == {"config"}
