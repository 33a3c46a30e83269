"""Progress bars only where someone watches them: on a terminal, and not after --no-progress.

Every bar of protoprune is this `tqdm`: redirected into a log file, a bar writes a carriage-return
line per update, so off a terminal (and after `switch_off()`) bars are disabled and the per-epoch
and per-stage log lines are the only progress output.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm as _tqdm

_switched_off = False


def switch_off() -> None:
    """No bars for the rest of the process (the CLI's --no-progress)."""
    global _switched_off
    _switched_off = True


def bars_shown() -> bool:
    """True when bars would reach a person: stderr is a terminal and they are not switched off."""
    stream = sys.stderr
    return not _switched_off and bool(getattr(stream, "isatty", None)) and stream.isatty()


class tqdm(_tqdm):  # noqa: N801 (the name every caller already uses)
    """tqdm, disabled off a terminal or after switch_off()."""

    def __init__(self, *args, disable: bool | None = False, **kwargs):
        super().__init__(*args, disable=bool(disable) or not bars_shown(), **kwargs)
