"""Atomic file writes and run folders: a kill never leaves a half-written file that later loads."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputExistsError, ProtopruneError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the final suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _atomic(path, lambda p: fig.savefig(p, format=fmt, **kwargs))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    return _atomic(path, lambda p: torch.save(obj, p))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_run_dir(
    path: str | Path, force: bool = False, resume: bool = False, resumable: bool = False
) -> Path:
    """Refuse an unusable output path before any work is done; changes nothing on disk.

    `resumable`: the command has a --resume option, which the refusal then suggests.

    Run as root (containers, CI), permission bits do not stop writes, so a path under a regular
    file is the common "cannot write there" case: name the file that is in the way.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output path {path} exists and is not a folder", "choose another --out")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ProtopruneError(
                    f"cannot create run folder {path}: {parent} is a file, not a folder",
                    "choose an --out whose parent folders are folders (or can be created)",
                )
            break
    if path.is_dir() and any(path.iterdir()) and not resume and not force:
        kept = f"(the old folder is kept as {path.name}.old-N)"
        raise OutputExistsError(
            f"run folder {path} already holds results",
            f"pass --resume to continue it, --force to start over {kept}, or choose another --out"
            if resumable
            else f"pass --force to replace it {kept}, or choose another --out",
        )
    return path


def prepare_run_dir(
    path: str | Path, force: bool = False, resume: bool = False, resumable: bool = False
) -> Path:
    """Create a run folder; refuse to reuse a non-empty one unless resuming or forced.

    `force` moves the old folder aside to `<name>.old-N` instead of deleting it, so results are
    never silently lost.
    """
    path = check_run_dir(path, force, resume, resumable)
    if path.is_dir() and any(path.iterdir()) and not resume:
        n = 1
        while path.with_name(f"{path.name}.old-{n}").exists():
            n += 1
        shutil.move(str(path), str(path.with_name(f"{path.name}.old-{n}")))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ProtopruneError(
            f"cannot write to run folder {path}: {exc.strerror}",
            "choose a writable output folder with --out (this one is read-only, or lies in a "
            "virtual file system such as /proc or /sys)",
        ) from None
    return path
