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

# lower rank = lower layer; a module may import only strictly lower ranks outside its own part.
# A part is the longest dotted prefix of the module's name listed here: the packages, and the
# modules of protopnet/, a slice through the layers whose modules are ranked one by one.
RANK = {
    "__init__": 0, "errors": 0,
    "registry": 1, "names": 1, "io": 1, "progress": 1, "devices": 1,
    "config": 2, "metrics": 2, "figures": 2, "seed": 2, "distributed": 3,
    "data": 4, "models": 4,
    "protopnet": 5, "protopnet.model": 5,
    "train": 6, "lrp": 6,
    "protopnet.last_layer": 7, "protopnet.push": 7, "protopnet.training": 8,
    "explain": 9,
    "protopnet.prototype_pruning": 10, "protopnet.trunk_pruning": 10, "protopnet.repush": 10,
    "prune": 11, "report": 12, "experiments": 13, "study": 14, "demo": 15,
    "cli": 16, "__main__": 17,
}  # fmt: skip


def _module_name(module: Path) -> str:
    """protoprune/a/b.py -> "a.b"; a package's __init__.py -> the package's name."""
    parts = list(module.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _part(name: str) -> str | None:
    """The longest prefix of a dotted module name that RANK lists (None: outside protoprune)."""
    pieces = name.split(".")
    for n in range(len(pieces), 0, -1):
        if ".".join(pieces[:n]) in RANK:
            return ".".join(pieces[:n])
    return None


def _imported_modules(source: str, package: str) -> set[str]:
    """The protoprune modules a module's source imports (relative or absolute, anywhere in it), as
    dotted names below protoprune; `package` is the module's own package ("" for protoprune/x.py).
    `from P import x` yields P.x, which _part then resolves to P.x or P, whichever RANK lists."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                up = node.level - 1
                if up > len(base):
                    continue
                stem = base[: len(base) - up] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("protoprune."):
                stem = node.module.split(".")[1:]
            else:
                continue
            found.update(".".join(stem + [a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("protoprune.") for a in node.names if a.name.startswith("protoprune."))
    return found


def _modules() -> list[tuple[Path, str, str]]:
    """(path, dotted name, its package) of every module of protoprune."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" and name != "__init__" else name.rpartition(".")[0]
        out.append((path, name, package))
    return out


def test_every_part_has_a_rank():
    unranked = sorted(name for _, name, _ in _modules() if _part(name) is None)
    assert not unranked, f"give these a layer: {unranked}"
    # a slice is ranked module by module: a new module there needs its own rank
    slice_modules = {name.split(".")[1] for _, name, _ in _modules() if name.startswith("protopnet.")}
    assert {f"protopnet.{m}" for m in slice_modules} <= set(RANK), "rank each module of protopnet/"


def test_every_import_points_down():
    upward = []
    for path, name, package in _modules():
        own = _part(name)
        for target in {_part(m) for m in _imported_modules(path.read_text(), package)} - {own, None}:
            if RANK[target] >= RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_walker_resolves_relative_and_absolute_imports():
    source = (
        "from ..report.html import build_report\n"  # protoprune.report
        "from .loop import fit\n"  # its own package
        "from .. import io, seed\n"  # protoprune.io, protoprune.seed
        "def f():\n    import protoprune.prune.filters\n"  # inside a function
        "import numpy\nfrom numpy import linalg\n"  # not protoprune
    )
    assert {_part(m) for m in _imported_modules(source, "train")} == {"report", "train", "io", "seed", "prune"}
    assert {_part(m) for m in _imported_modules("from .config import RunConfig\n", "")} == {"config"}
    # inside the slice: a module resolves to its own rank, not the package's
    push = "from ...train import precision\nfrom ..model import ProtoPNet\nfrom .search import search\n"
    assert {_part(m) for m in _imported_modules(push, "protopnet.push")} == {"train", "protopnet.model", "protopnet.push"}
    assert _part("protopnet.push.search") == "protopnet.push" and _part("protopnet") == "protopnet"
