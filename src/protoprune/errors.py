"""One exception type for user-facing problems, always carrying the fix."""

from __future__ import annotations

from pathlib import Path


class ProtopruneError(Exception):
    """A problem the user can fix: the message names what is wrong and how to fix it.

    The CLI prints these without a traceback and exits with status 2.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class ConfigError(ProtopruneError, ValueError):
    """Invalid configuration value, key or file."""


class DataError(ProtopruneError, ValueError):
    """Missing, corrupt or inconsistent input data."""


class CheckpointError(ProtopruneError, ValueError):
    """A checkpoint that cannot be loaded into the requested model."""


class OutputExistsError(ProtopruneError, FileExistsError):
    """An output folder holds earlier results and --force was not given."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, carrying what the user can do now (the CLI prints it, exit 130)."""

    def __init__(self, advice: str):
        self.advice = advice
        super().__init__(advice)


def not_a_file(what: str, path: str | Path) -> str:
    """The problem with a path that should name a file: a folder stands there, or nothing does."""
    path = Path(path)
    if path.is_dir():
        return f"{what} {path} is a folder, not a file"
    return f"{what} {path} does not exist"
