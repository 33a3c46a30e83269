"""Finding the image file of each metadata row, for data sets whose labels live in a CSV.

Official downloads spread images over several folders (HAM10000 ships two zip parts) and users
often hold only part of a data set, so rows are matched to files by image id across all the
known folders, and rows without a file are either dropped (with a warning) or reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MISSING_POLICIES = ("drop", "error")


def index_image_files(folders: Iterable[Path]) -> dict[str, Path]:
    """Map file stem -> path for the image files directly inside `folders` (first folder wins)."""
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in index:
                index[path.stem] = path
    return index


def _first(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def match_image_files(
    image_ids: Sequence[str],
    folders: Sequence[Path],
    missing: str,
    source: str,
    layout_hint: str,
) -> tuple[list[Path | None], list[str]]:
    """The file of each id (None where absent) and the absent ids.

    `missing="drop"` logs a warning naming how many rows have no file; `"error"` raises a
    DataError naming the first few. No file at all is always an error: it means a wrong root
    or layout, not a partial download.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    index = index_image_files(folders)
    paths = [index.get(i) for i in image_ids]
    absent = [i for i, p in zip(image_ids, paths) if p is None]
    searched = ", ".join(str(f) for f in folders)
    if image_ids and len(absent) == len(image_ids):
        raise DataError(
            f"none of the {len(image_ids)} images listed in {source} was found (searched {searched})",
            f"put the image files in {layout_hint}, named <image_id>.jpg",
        )
    if absent and missing == "error":
        raise DataError(
            f"{len(absent)} of the {len(image_ids)} images listed in {source} are missing: {_first(absent)}"
            f" (searched {searched})",
            "restore these files, or remove their rows from the metadata file "
            "(or load with missing='drop' to use only the rows whose image is present)",
        )
    if absent:
        log.warning(
            "%s: %d of %d listed images are not on disk (e.g. %s); using the %d rows whose image "
            "is present. If you expected the full data set, complete the download into %s.",
            source,
            len(absent),
            len(image_ids),
            _first(absent, 3),
            len(image_ids) - len(absent),
            layout_hint,
        )
    return paths, absent
