"""dupmae-eval: evaluate DupMAE retrieval models beside BM25 and RetroMAE through Pyserini.

Importing the package is cheap on purpose: no JVM, no torch, no Pyserini. Those are loaded
by the modules that need them, the first time they are used.
"""

__version__ = "0.1.0"
