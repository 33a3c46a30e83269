"""Fixtures for the data tests: tiny data sets in their real on-disk layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import ham_metadata, write_ham


@pytest.fixture
def ham_root(tmp_path: Path) -> Path:
    """7 classes x 4 lesions x 1-3 images in the official two-folder layout."""
    return write_ham(tmp_path / "ham", ham_metadata())
