"""The API reference under docs/api/ is what pdoc renders from the code as it is."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "api"


def _builder():
    spec = importlib.util.spec_from_file_location("build_api_docs", ROOT / "scripts" / "build_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_its_entry_with_a_docstring() -> None:
    import protoprune

    page = (DOCS / "protoprune.html").read_text()
    intro = page[: page.find("<section id=")]  # the module's docstring
    for name in protoprune.__all__:
        if name == "__version__":
            continue
        begin = page.find(f'<section id="{name}">')
        assert begin >= 0, f"docs/api/protoprune.html has no entry for {name}"
        own = page[begin : page.find("<section id=", begin + 1)]  # up to its first member
        if re.search(r'<div class="attr (\w+)"', own).group(1) == "variable":  # pdoc reads a variable's docs from the AST: none here
            assert f'href="#{name}">{name}</a></code>' in intro, f"{name}: not in the module text"
        else:
            assert 'class="docstring"' in own, f"{name} has no docstring in the API pages"


def test_the_committed_pages_are_the_rendered_ones(tmp_path) -> None:
    pdoc = pytest.importorskip("pdoc")
    if pdoc.__version__ != "16.0.0":
        pytest.skip(f"pages are rendered with pdoc 16.0.0 (pyproject's dev extra), not {pdoc.__version__}")
    written = _builder().build(tmp_path)
    committed = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path) for p in written] == committed
    stale = [str(p) for p in committed if (tmp_path / p).read_text() != (DOCS / p).read_text()]
    assert not stale, f"docs/api is out of date ({stale}): run python scripts/build_api_docs.py"
