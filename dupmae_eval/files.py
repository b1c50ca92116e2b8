"""Writing files so that a crash, a full disk or a bad record never leaves a half-written file.

Every output the toolkit writes (runs, sidecars, metrics, caches, checkpoints' side files) goes
through `atomic_output`: a temporary file beside the target, renamed into place only on success.
`check_output_file` refuses, before any long work, an output path that could not be written at the end.
These sit below every stage (the cache uses them too), so they live here and not with the readers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from dupmae_eval.errors import DupMAEEvalError


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w"):
    """Write to a temporary file beside `path`, and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        **({"encoding": "utf-8"} if "b" not in mode else {}),
    )
    try:
        with handle:
            yield handle
        os.chmod(handle.name, 0o666 & ~_umask())  # temp files are private; the result should not be
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def check_output_file(path: str | Path, flag: str = "--output") -> None:
    """Refuse, before any long work, an output file that `atomic_output` could not write at the end:
    an existing folder, a path under a file, or a place where no file can be created (tried with a
    probe file in the nearest existing folder, which is what a read-only mount or root squash answers
    truthfully where permission bits would not)."""
    path = Path(path)
    if path.is_dir():
        raise DupMAEEvalError(f"{flag} {path}: is a folder; give the path of a file to write")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DupMAEEvalError(f"{flag} {path}: {probe} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".dupmae-eval-probe."):
            pass
    except OSError as exc:
        raise DupMAEEvalError(f"{flag} {path}: cannot create a file in {probe} ({exc.strerror})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
