"""Where caches live and how they are keyed.

Every cached artifact (downloaded dataset, index, encoding) sits under one root,
`$DUPMAE_EVAL_HOME` (default: the user's cache folder), in a folder whose name ends in a
key hashed from everything that changes its content, so a changed corpus or changed
settings can never reuse a stale artifact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import contextlib
from pathlib import Path
from typing import Any, Iterator


def home() -> Path:
    """The cache root: `$DUPMAE_EVAL_HOME`, else e.g. ~/.cache/dupmae-eval."""
    configured = os.environ.get("DUPMAE_EVAL_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dupmae-eval"))


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able settings dict."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (metadata files are read to decide whether a cache entry is whole)."""
    from dupmae_eval.files import atomic_output

    with atomic_output(path) as out:
        json.dump(payload, out, indent=2, sort_keys=True, default=str)
        out.write("\n")


@contextlib.contextmanager
def building(final_dir: Path) -> Iterator[Path]:
    """Yield a scratch folder beside `final_dir`; rename it into place only if the body succeeds.

    A crash or an error leaves nothing under the final name, so a half-built index is never
    mistaken for a cached one.
    """
    created = [parent for parent in reversed(final_dir.parents) if not parent.exists()]
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = final_dir.parent / f".{final_dir.name}.building-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    _remove_abandoned(final_dir)
    scratch.mkdir()
    try:
        yield scratch
        write_contents(scratch)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(scratch, final_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not final_dir.exists():           # a failed or interrupted build leaves no empty folder behind
            for parent in reversed(created):
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _remove_abandoned(final_dir: Path) -> None:
    """Scratch folders of builds whose process is gone (killed with SIGKILL, or ended while a Java indexer was
    still writing): removed by the next build of the same entry."""
    for scratch in final_dir.parent.glob(f".{final_dir.name}.building-*"):
        pid = scratch.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(scratch, ignore_errors=True)
        except PermissionError:          # alive, another user's
            pass


CONTENTS = ".contents.json"
"""Every file of a finished cache entry with its size and SHA-256, written last by `building`."""


def write_contents(folder: Path) -> None:
    files = {str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CONTENTS}
    write_json(folder / CONTENTS, {"files": files})


def _sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read now (the damage check must not trust a memo)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damage(folder: Path) -> str | None:
    """Why a finished cache entry cannot be trusted (a file missing, added, of another size or content than
    its contents manifest records), or None when it is whole. An entry built before the manifest existed
    counts as damaged: it is rebuilt once."""
    manifest = folder / CONTENTS
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{manifest.name} missing or unreadable"
    present = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() and path.name != CONTENTS}
    for name in sorted(set(recorded) | present):
        if name not in present:
            return f"{name} is missing"
        if name not in recorded:
            return f"{name} was not part of it"
        path = folder / name
        if path.stat().st_size != recorded[name]["bytes"] or _sha256(path) != recorded[name]["sha256"]:
            return f"{name} differs from what was built"
    return None


def reuse_or_clear(folder: Path, what: str) -> bool:
    """True when `folder` is a whole cache entry (its meta.json present and every file as built); a damaged
    entry is removed, with one line on stderr, so that the caller builds it again."""
    import sys

    if not (folder / "meta.json").is_file():
        return False
    problem = damage(folder)
    if problem is None:
        return True
    print(f"dupmae-eval: {what} {folder} is damaged ({problem}); building it again", file=sys.stderr, flush=True)
    shutil.rmtree(folder)
    return False
