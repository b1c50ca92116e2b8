"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class DupMAEEvalError(Exception):
    """A user-facing error: bad input, unknown name, missing file. Never a bug."""


class InputFormatError(DupMAEEvalError):
    """Malformed input, located at a file and (when known) a line number."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the same clean-up runs (scratch
    folders removed, temporary files unlinked) and the CLI exits 143 with one line."""
