"""Cached indexes. BM25: a Lucene index built by Anserini's IndexCollection through Pyserini.

The corpus is first read by our own validating readers and staged as a Pyserini
JsonCollection, so a malformed record is reported with its file and line before Java runs;
the index is built in a scratch folder and renamed into place only when its document count
matches the corpus, so a half-built index is never reused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable

from . import cache
from ._java import anserini_version, start_jvm
from .data import Passage
from .datasets import Dataset
from .errors import DupMAEEvalError

FIELDS = ("flat", "multifield")
_DOCS_PER_FILE = 500_000  # Anserini indexes one collection file per thread


def bm25_index(dataset: Dataset, fields: str, threads: int | None = None) -> Path:
    """Return the cached BM25 index for `dataset` (built on first use).

    flat: title and text in one `contents` field (Pyserini's BEIR "flat" condition);
    multifield: `contents` holds the text and `title` the title (searched with weights 1.0/1.0).
    """
    if fields not in FIELDS:
        raise DupMAEEvalError(f"unknown --fields {fields!r}; choose one of {', '.join(FIELDS)}")
    settings = {"kind": "lucene-bm25", "fields": fields, "corpus_sha256": dataset.corpus_fingerprint(),
                "anserini": anserini_version(), "layout": 1}
    final = cache.home() / "indexes" / f"bm25-{fields}" / f"{dataset.name}-{cache.settings_key(settings)}"
    if (final / "meta.json").is_file():
        return final
    threads = threads or os.cpu_count() or 1
    started = time.time()
    with cache.building(final) as scratch:
        collection = scratch / "collection"
        documents = _stage_collection(dataset.passages(), collection, fields)
        if documents == 0:
            raise DupMAEEvalError(f"{dataset.corpus_path}: the corpus has no documents")
        _run_index_collection(collection, scratch / "index", fields, threads)
        indexed = lucene_document_count(scratch / "index")
        if indexed != documents:
            raise DupMAEEvalError(f"Lucene indexed {indexed} of {documents} documents from "
                                  f"{dataset.corpus_path}; the index was not kept")
        for staged in collection.iterdir():
            staged.unlink()
        collection.rmdir()
        for item in (scratch / "index").iterdir():
            item.rename(scratch / item.name)
        (scratch / "index").rmdir()
        cache.write_json(scratch / "meta.json", {**settings, "dataset": dataset.name,
                                                 "corpus": str(dataset.corpus_path), "documents": documents,
                                                 "seconds": round(time.time() - started, 1)})
    return final


def _stage_collection(passages: Iterable[Passage], folder: Path, fields: str) -> int:
    """Write passages as JsonCollection files of at most _DOCS_PER_FILE documents each."""
    folder.mkdir(parents=True)
    count, out = 0, None
    try:
        for passage in passages:
            if count % _DOCS_PER_FILE == 0:
                if out:
                    out.close()
                out = open(folder / f"docs{count // _DOCS_PER_FILE:05d}.jsonl", "w", encoding="utf-8")
            if fields == "flat":
                record = {"id": passage.docid, "contents": passage.flat_text()}
            else:
                record = {"id": passage.docid, "contents": passage.text, "title": passage.title}
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
    autoclass("io.anserini.index.IndexCollection").main(arguments)


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
