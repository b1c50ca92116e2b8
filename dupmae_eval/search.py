"""Searches that turn queries into runs. BM25: Pyserini's LuceneSearcher over a cached index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping

from ._java import start_jvm
from .data import Run
from .errors import DupMAEEvalError

MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}


def check_queries(queries: Mapping[str, str], source: str) -> None:
    """Refuse an empty query set or an empty query text up front, naming where they came from."""
    if not queries:
        raise DupMAEEvalError(f"{source}: no queries to search")
    for qid, text in queries.items():
        if not text.strip():
            raise DupMAEEvalError(f"{source}: query {qid!r} has empty text")


def bm25_search(index: Path, queries: Mapping[str, str], fields: str, k1: float = 0.9, b: float = 0.4,
                hits: int = 1000, threads: int | None = None, remove_query: bool = True) -> Run:
    """BM25 through Pyserini's LuceneSearcher; with `remove_query`, drop the hit whose id is the query's
    (BEIR's convention: ArguAna and Quora queries are corpus documents)."""
    start_jvm()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    searcher.set_bm25(k1, b)
    qids = list(queries)
    weights = MULTIFIELD_WEIGHTS if fields == "multifield" else {}
    results = searcher.batch_search([queries[qid] for qid in qids], qids, k=hits,
                                    threads=threads or os.cpu_count() or 1, fields=weights)
    run: Run = {}
    for qid in qids:
        kept = [(hit.docid, float(hit.score)) for hit in results.get(qid, [])
                if not (remove_query and hit.docid == qid)]
        run[qid] = kept
    searcher.close()
    return run
