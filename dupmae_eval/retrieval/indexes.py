"""Cached indexes: Lucene BM25 and impact indexes (Anserini through Pyserini), faiss dense indexes.

The corpus is first read by our own validating readers and staged as a Pyserini
JsonCollection, so a malformed record is reported with its file and line before Java runs;
the index is built in a scratch folder and renamed into place only when its document count
matches the corpus, so a half-built index is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dupmae_eval import cache
from dupmae_eval._java import anserini_version, call_interruptibly, start_jvm
from dupmae_eval.data.census import indexed_contents, take_census
from dupmae_eval.data.formats import Passage
from dupmae_eval.data.datasets import Dataset
from dupmae_eval.errors import DupMAEEvalError

FIELDS = ("flat", "multifield")
_DOCS_PER_FILE = 500_000  # Anserini indexes one collection file per thread


def bm25_index(dataset: Dataset, fields: str, threads: int | None = None) -> Path:
    """Return the cached BM25 index for `dataset` (built on first use).

    flat: title and text in one `contents` field (Pyserini's BEIR "flat" condition);
    multifield: `contents` holds the text and `title` the title (searched with weights 1.0/1.0).
    Anserini skips empty documents (see `census`); the index is kept only when Lucene holds
    exactly the corpus's non-empty passages, and its meta.json records both counts and
    Anserini's index statistics.
    """
    final, settings = _bm25_index_key(dataset, fields)
    if cache.reuse_or_clear(final, "cached index"):
        return final
    census = take_census(dataset)   # duplicate ids are refused here, before any work
    expected = census.expected_documents(fields)
    if expected == 0:
        raise DupMAEEvalError(f"{dataset.corpus_path}: the corpus has no non-empty documents")
    threads = threads or os.cpu_count() or 1
    started = time.time()
    with cache.building(final) as scratch:
        collection = scratch / "collection"
        _stage_collection(dataset.passages(), collection, fields)
        _run_index_collection(collection, scratch / "index", fields, threads)
        stats = lucene_index_stats(scratch / "index")
        if stats["documents"] != expected:
            raise DupMAEEvalError(f"Lucene indexed {stats['documents']} documents from {dataset.corpus_path}, "
                                  f"expected {expected} ({census.passages} passages less "
                                  f"{census.passages - expected} empty); the index was not kept")
        _flatten(scratch, collection)
        cache.write_json(scratch / "meta.json", {**settings, "dataset": dataset.name,
                                                 "corpus": str(dataset.corpus_path),
                                                 "corpus_passages": census.passages,
                                                 "empty_passages_skipped": census.passages - expected,
                                                 "documents": stats["documents"], "index_stats": stats,
                                                 "seconds": round(time.time() - started, 1)})
    return final


def bm25_index_folder(dataset: Dataset, fields: str) -> Path:
    """Where `bm25_index` keeps the index of `dataset` (nothing is built): its name holds the corpus, the
    field layout and Anserini's version, so reproduce's cell identity changes whenever the index would."""
    return _bm25_index_key(dataset, fields)[0]


def _bm25_index_key(dataset: Dataset, fields: str):
    if fields not in FIELDS:
        raise DupMAEEvalError(f"unknown --fields {fields!r}; choose one of {', '.join(FIELDS)}")
    settings = {"kind": "lucene-bm25", "fields": fields, "corpus_sha256": dataset.corpus_fingerprint(),
                "anserini": anserini_version(), "layout": 2}
    return cache.home() / "indexes" / f"bm25-{fields}" / f"{dataset.cache_name}-{cache.settings_key(settings)}", \
        settings


def index_meta(index: Path) -> dict:
    """An index's meta.json (settings, counts, statistics)."""
    return json.loads((index / "meta.json").read_text())


def _stage_collection(passages: Iterable[Passage], folder: Path, fields: str) -> int:
    """Write passages as JsonCollection files of at most _DOCS_PER_FILE documents each (empty ones too:
    Anserini itself skips them, exactly as it does for Pyserini's own BEIR indexes)."""
    folder.mkdir(parents=True)
    count, out = 0, None
    try:
        for passage in passages:
            if count % _DOCS_PER_FILE == 0:
                if out:
                    out.close()
                out = open(folder / f"docs{count // _DOCS_PER_FILE:05d}.jsonl", "w", encoding="utf-8")
            record = {"id": passage.docid, "contents": indexed_contents(passage, fields)}
            if fields == "multifield":
                record["title"] = passage.title
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if out:
            out.close()
    return count


def _run_index_collection(collection: Path, index: Path, fields: str, threads: int) -> None:
    start_jvm()
    from jnius import autoclass

    arguments = ["-collection", "JsonCollection", "-input", str(collection), "-index", str(index),
                 "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
                 "-storePositions", "-storeDocvectors", "-quiet"]
    if fields == "multifield":
        arguments += ["-fields", "title"]
    call_interruptibly(autoclass("io.anserini.index.IndexCollection").main, arguments)


def lucene_index_stats(index: Path) -> dict:
    """Anserini's index statistics, named as its regression YAMLs name them: documents, documents
    (non-empty) (those with at least one term in `contents`), total terms and unique terms."""
    start_jvm()
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index))
    try:
        stats = reader.stats()
    finally:
        reader.reader.close()
    return {"documents": int(stats["documents"]), "documents (non-empty)": int(stats["non_empty_documents"]),
            "total terms": int(stats["total_terms"]), "unique terms": int(stats["unique_terms"])}


def lucene_document_count(index: Path) -> int:
    """Number of documents in a Lucene index (0 if there is none)."""
    start_jvm()
    from jnius import autoclass

    if not index.is_dir() or not any(index.glob("segments_*")):
        return 0
    directory = autoclass("org.apache.lucene.store.FSDirectory").open(
        autoclass("java.nio.file.Paths").get(str(index)))
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()


# --------------------------------------------------------------------------- dense and impact indexes


def faiss_index(encoding) -> Path:
    """A flat inner-product faiss index over the dense half, in Pyserini's layout (`index` + `docid`)."""
    import faiss

    if not encoding.has_dense:
        raise DupMAEEvalError(f"{encoding.folder}: this encoding has no dense half")
    final = cache.home() / "indexes" / "faiss" / encoding.folder.name
    if cache.reuse_or_clear(final, "cached index"):
        return final
    with cache.building(final) as scratch:
        index = faiss.IndexFlatIP(int(encoding.meta["dense_dim"]))
        for _, dense, _ in encoding.shards():
            index.add(np.ascontiguousarray(dense, dtype=np.float32))
        faiss.write_index(index, str(scratch / "index"))
        (scratch / "docid").write_text("".join(f"{docid}\n" for docid in encoding.docids), encoding="utf-8")
        cache.write_json(scratch / "meta.json", {"encoding": str(encoding.folder), "documents": index.ntotal,
                                                 "dimension": index.d, "kind": "faiss IndexFlatIP"})
    return final


def impact_index(encoding, vocabulary: Sequence[str], scale: float, threads: int | None = None) -> Path:
    """A Lucene impact index over the sparse half, from a JsonVectorCollection of quantised weights.

    Each document's kept (top-k) entries are quantised to round(weight * scale); negative and
    rounded-to-zero weights cannot enter a Lucene impact index, and the share of the sparse
    score mass they carry is recorded in the index's meta.json (and returned by `impact_meta`).
    """
    if not encoding.has_sparse:
        raise DupMAEEvalError(f"{encoding.folder}: this encoding has no sparse half")
    final = impact_index_folder(encoding.folder.name, scale)
    if cache.reuse_or_clear(final, "cached index"):
        return final
    with cache.building(final) as scratch:
        collection = scratch / "collection"
        stats = _stage_vectors(encoding, vocabulary, scale, collection)
        _run_impact_indexer(collection, scratch / "index", threads or os.cpu_count() or 1)
        indexed = lucene_document_count(scratch / "index")
        if indexed != stats["documents_with_terms"]:
            raise DupMAEEvalError(f"Lucene indexed {indexed} of {stats['documents_with_terms']} vectors; "
                                  f"the impact index was not kept")
        _flatten(scratch, collection)
        cache.write_json(scratch / "meta.json", {"encoding": str(encoding.folder), "quantization_scale": scale,
                                                 "anserini": anserini_version(), **stats})
    return final


def impact_index_folder(encoding_name: str, scale: float) -> Path:
    """Where `impact_index` keeps the impact index of the encoding named `encoding_name` at `scale`: the name
    holds Anserini's version (reproduce's cell identity carries it, so a new Anserini redoes the run)."""
    key = cache.settings_key({"scale": scale, "anserini": anserini_version(), "layout": 1})
    return cache.home() / "indexes" / "impact" / f"{encoding_name}-{key}"


def impact_meta(index: Path) -> dict:
    return index_meta(index)


def _stage_vectors(encoding, vocabulary: Sequence[str], scale: float, folder: Path) -> dict:
    """Write quantised vectors as JsonVectorCollection files (one per encoding shard, streamed);
    count the score mass that cannot enter the index (negative weights, weights rounded to 0)."""
    folder.mkdir(parents=True)
    terms = np.asarray(vocabulary, dtype=object)
    totals = {"entries": 0, "entries_indexed": 0, "with_terms": 0, "mass": 0.0, "negative": 0.0, "rounded": 0.0}
    for shard, (offset, _, matrix) in enumerate(encoding.shards()):
        values = matrix.data.astype(np.float64)
        quantized = np.rint(values * scale).astype(np.int64)
        magnitude = np.abs(values)
        totals["entries"] += matrix.nnz
        totals["entries_indexed"] += int((quantized > 0).sum())
        totals["mass"] += float(magnitude.sum())
        totals["negative"] += float(magnitude[values < 0].sum())
        totals["rounded"] += float(magnitude[(values > 0) & (quantized <= 0)].sum())
        with open(folder / f"vectors{shard:05d}.jsonl", "w", encoding="utf-8") as out:
            for row in range(matrix.shape[0]):
                start, end = matrix.indptr[row], matrix.indptr[row + 1]
                weights = quantized[start:end]
                keep = weights > 0
                if not keep.any():
                    continue
                vector = dict(zip(terms[matrix.indices[start:end][keep]].tolist(), weights[keep].tolist()))
                out.write(json.dumps({"id": encoding.docids[offset + row], "contents": "", "vector": vector},
                                     ensure_ascii=False) + "\n")
                totals["with_terms"] += 1
    mass = totals["mass"] or 1.0
    return {"documents": len(encoding.docids), "documents_with_terms": totals["with_terms"],
            "entries": totals["entries"], "entries_indexed": totals["entries_indexed"],
            "negative_mass_fraction": totals["negative"] / mass, "rounded_away_mass_fraction": totals["rounded"] / mass}


def _run_impact_indexer(collection: Path, index: Path, threads: int) -> None:
    start_jvm()
    from jnius import autoclass

    call_interruptibly(autoclass("io.anserini.index.IndexCollection").main, [
        "-collection", "JsonVectorCollection", "-input", str(collection), "-index", str(index),
        "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
        "-threads", str(threads), "-quiet"])


def _flatten(scratch: Path, collection: Path) -> None:
    """Drop the staged collection and move the Lucene files up to the cache entry's top level."""
    shutil.rmtree(collection)
    for item in (scratch / "index").iterdir():
        item.rename(scratch / item.name)
    (scratch / "index").rmdir()
