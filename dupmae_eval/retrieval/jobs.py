"""End-to-end jobs: dataset -> index -> search -> TREC run (+ metadata sidecar) -> metrics.

The runner knows no encoder kind, retrieval mode or dataset layout by name: it asks their
registries (`kinds`, `retrieval`, `layouts`), so a new variant is one entry there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from dupmae_eval import __version__, cache
from dupmae_eval.data.formats import Qrels, forget_run_records, queries_digest, write_run
from dupmae_eval.data.datasets import Dataset, resolve
from dupmae_eval.encoding.encoders import DEFAULT_QUANTIZATION_SCALE
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.measures import Evaluation, evaluate, evaluate_checked
from dupmae_eval.provenance import provenance


@dataclass
class RunResult:
    """A run (written to `run_path`, or held in memory only when no output was asked for), its sidecar's
    metadata, and what is needed to score it."""

    run_path: Optional[Path]
    dataset: Dataset
    split: Optional[str]                 # None: the queries came from a topics file without judgments
    queries: int
    run: dict = field(repr=False)
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def tag(self) -> str:
        return self.metadata.get("condition", "")

    def qrels(self) -> Qrels:
        if self.split is None:
            raise DupMAEEvalError(f"{self.run_path}: its queries come from a topics file without judgments; "
                                  f"score it with `dupmae-eval eval QRELS {self.run_path}` once they are judged")
        return self.dataset.qrels(self.split)

    def evaluate(self, measures: Optional[Tuple[str, ...]] = None) -> Evaluation:
        """The run's scores; a run that covers only some judged queries, or is shallower than a cutoff, is
        warned about on stderr, and one that shares no query with the judgments is refused (`evaluate_checked`)."""
        return evaluate_checked(self.qrels(), self.run, measures or self.dataset.measures(self.split),
                                f"; no judged query of {self.dataset.root} (split {self.split}) got a hit")


def read_topics_file(topics: Path) -> Tuple[Dict[str, str], dict]:
    """The queries of a topics file without judgments, and what the sidecar says of them."""
    from dupmae_eval.data.formats import read_topics

    queries, fmt = read_topics(topics)
    return queries, {"path": str(Path(topics).resolve()), "sha256": cache.file_digest(topics), "format": fmt,
                     "queries": len(queries)}


def _choose_queries(data: Dataset, split: Optional[str], topics: Optional[Path]):
    """(queries, split, sidecar fields): a split's judged queries, or a topics file's (no judgments)."""
    from dupmae_eval.retrieval.searchers import check_queries

    if topics is None:
        split = split or data.default_split
        queries = data.queries(split)
        check_queries(queries, f"{data.root} (split {split})")
        return queries, split, {"split": split, "queries_digest": queries_digest(queries)}
    if split is not None:
        raise DupMAEEvalError(f"--split {split} and --topics {topics}: a split names judged queries, a topics "
                              f"file replaces them; give one")
    queries, described = read_topics_file(topics)
    check_queries(queries, str(topics))
    return queries, None, {"split": None, "topics": described, "queries_digest": queries_digest(queries),
                           "judgments": "none: the queries come from a topics file, so the run is not evaluated"}


def run_bm25(dataset: str | Dataset, split: Optional[str], fields: str, output: Optional[Path], k1: float = 0.9,
             b: float = 0.4, hits: int = 1000, threads: Optional[int] = None,
             keep_query_hit: bool = False, tag: Optional[str] = None, topics: Optional[Path] = None,
             run_format: str = "trec") -> RunResult:
    """Index (cached) and search a dataset with BM25; write the run (TREC, or `run_format`) and its metadata
    sidecar (only the result in memory when `output` is None). `topics`: search for a topics file's queries
    instead of a split's (no judgments)."""
    from dupmae_eval.retrieval.indexes import bm25_index, index_meta
    from dupmae_eval.retrieval.searchers import bm25_search

    data = dataset if isinstance(dataset, Dataset) else resolve(dataset)
    queries, split, described = _choose_queries(data, split, topics)
    started = time.time()
    index = bm25_index(data, fields, threads=threads)
    index_info = index_meta(index)
    indexed = time.time()
    remove_query = data.spec.removes_query_hit and not keep_query_hit
    run = bm25_search(index, queries, fields, k1=k1, b=b, hits=hits, threads=threads,
                      remove_query=remove_query)
    tag = tag or f"bm25-{fields}"
    metadata = {
        **_sidecar_head(tag, data, described, run_format),
        "retrieval": {"kind": "bm25", "fields": fields, "k1": k1, "b": b, "hits": hits,
                      "remove_query_hit": remove_query},
        "corpus": _corpus_counts(data, indexed_as=fields),
        "index": str(index), "index_stats": index_info["index_stats"], "queries": len(queries),
        "seconds": {"index": round(indexed - started, 2), "search": round(time.time() - indexed, 2)},
        **provenance(),
    }
    return _written(output, RunResult(output, data, split, len(queries), run, metadata))


def run_model(dataset: str | Dataset, model: str, encoder: str, retrieval: str, output: Optional[Path],
              split: Optional[str] = None, hits: int = 1000, batch_size: int = 32, device: Optional[str] = None,
              quantization_scale: float = DEFAULT_QUANTIZATION_SCALE, threads: Optional[int] = None,
              keep_query_hit: bool = False, tag: Optional[str] = None, shard_size: int = 10_000,
              faiss_shards: bool = False, hybrid_audit: str = "auto", compile: bool = False,
              precision: Optional[str] = None, topics: Optional[Path] = None, run_format: str = "trec",
              **settings_overrides) -> RunResult:
    """Encode (cached), index (cached) and search with a learned model; write the run and its sidecar (only
    the result in memory when `output` is None).

    `encoder` names a registered encoder kind (`kinds.ENCODER_KINDS`), `retrieval` a registered mode
    (`retrieval.RETRIEVAL_MODES`: dense, impact, dupmae, hybrid); `settings_overrides` are
    `EncoderSettings` fields (see `options.translate` for how CLI options and YAML keys become them).
    `compile` runs the encoder under torch.compile (documents and queries; `compiled.py`). `precision`:
    fp32, bf16 or auto for documents and queries alike (`precision.py`; None: the device's default).
    `topics`: search for a topics file's queries instead of a split's (no judgments, so no hybrid audit
    scores); `run_format`: trec, msmarco or json.
    """
    from dupmae_eval.encoding.corpus import encode_corpus, load_encoding, model_fingerprint
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings
    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.retrieval.modes import SearchJob, retrieval_mode

    mode = retrieval_mode(retrieval)
    settings = EncoderSettings.for_kind(encoder, **settings_overrides)
    mode.check(settings)
    data = dataset if isinstance(dataset, Dataset) else resolve(dataset)
    queries, split, described = _choose_queries(data, split, topics)
    remove_query = data.spec.removes_query_hit and not keep_query_hit
    loaded = load_model(model, need_mlm_head=settings.has_sparse, lengths=settings.lengths())
    settings = EncoderSettings.for_checkpoint(encoder, loaded.folder, **settings_overrides)  # a fine-tuned model's own
    if compile:
        loaded.compile_encoder()
    timings: Dict[str, float] = {}
    document_encoder = DupMAEDocumentEncoder(loaded, settings, device, precision)
    if precision == "auto":
        import sys

        from dupmae_eval.encoding.precision import describe_auto

        print(f"dupmae-eval: {describe_auto(device)}", file=sys.stderr, flush=True)
    started = time.time()
    encoding = load_encoding(encode_corpus(data, document_encoder, batch_size, shard_size), settings)
    timings["encode"] = time.time() - started
    job = SearchJob(encoding, loaded, settings, queries, hits=hits, threads=threads, remove_query=remove_query,
                    quantization_scale=quantization_scale, faiss_shards=faiss_shards, hybrid_audit=hybrid_audit,
                    device=device, precision=document_encoder.precision,
                    evaluate=None if split is None else
                    lambda found: evaluate(data.qrels(split), found, data.measures(split)).aggregate)
    started = time.time()
    run, extra = mode.search(job)
    timings["search"] = time.time() - started
    truncated = _count_truncated(loaded, list(queries.values()), settings.max_query_length)
    tag = tag or f"{encoder}-{retrieval}"
    metadata = {
        **_sidecar_head(tag, data, described, run_format),
        # the fingerprint is the checkpoint files' content (`model_fingerprint`, reproduce's model_content):
        # a local folder's revision is just "local", so only it tells two checkpoints saved there apart
        "model": {"source": loaded.source, "revision": loaded.revision, "folder": str(loaded.folder.resolve()),
                  "fingerprint": model_fingerprint(loaded), "projection": loaded.projection is not None,
                  "dense_dim": loaded.dense_dim},
        "encoder": settings.as_dict(), "precision": document_encoder.precision,
        "retrieval": {"mode": retrieval, "hits": hits, "remove_query_hit": remove_query,
                                                     "quantization_scale": quantization_scale},
        "encoding": str(encoding.folder), "documents": len(encoding.docids), "corpus": _corpus_counts(data, encoded_with=settings),
        "queries": len(queries), "queries_truncated": truncated, "seconds": {k: round(v, 2) for k, v in timings.items()},
        **extra, **provenance(),
    }
    return _written(output, RunResult(output, data, split, len(queries), run, metadata))


def _sidecar_head(tag: str, data: Dataset, described: dict, run_format: str) -> dict:
    """What every run's sidecar begins with: the tool, the condition, the dataset and its corpus, where the
    queries came from, and the run's format."""
    return {"tool": f"dupmae-eval {__version__}", "condition": tag, "dataset": data.name,
            "dataset_root": str(data.root), **described, "run_format": run_format,
            "corpus_sha256": data.corpus_fingerprint(), "corpus_source": data.source()}


def _written(output: Optional[Path], result: RunResult) -> RunResult:
    """Write the run, then its sidecar (each atomically), when an output was asked for; the old sidecar and
    metrics record go first (`formats.forget_run_records`), so an interruption never pairs this run with them.

    A run in which no query retrieved any document is refused here, before anything is written or removed:
    an empty run file cannot be scored, and with a sidecar beside it `reproduce` would take it for a finished
    cell and reuse it. A run where only some queries found nothing is written (scoring warns about them)."""
    if not any(result.run.values()):
        source = (f"{result.dataset.root} (split {result.split})" if result.split is not None
                  else result.metadata.get("topics", {}).get("path", "the topics file"))
        none = (f"none of the {result.queries} queries retrieved a document" if result.queries != 1
                else "its one query retrieved no document")
        raise DupMAEEvalError(f"{source}: {none}, so there is no run to "
                              f"{'write' if output is not None else 'score'}")
    if output is not None:
        forget_run_records(output)
        write_run(output, result.run, result.tag, result.metadata.get("run_format", "trec"))
        cache.write_json(Path(f"{output}.meta.json"), result.metadata)
    return result


def _corpus_counts(data: Dataset, indexed_as: Optional[str] = None, encoded_with=None) -> dict:
    """The corpus census for a sidecar: passages, empty ones, and (for a Lucene index) how many it holds, or
    (for an encoding, `encoded_with` its `EncoderSettings`) what an empty passage's halves are made of."""
    from dupmae_eval.data.census import take_census

    census = take_census(data)
    counts = {"passages": census.passages, "empty_passages": census.empty_passages,
              "passages_without_text": census.empty_text_passages}
    if indexed_as is not None:
        counts["expected_index_documents"] = census.expected_documents(indexed_as)
        counts["empty_rule"] = ("Anserini skips a document whose contents are blank after Java's trim(): "
                                + ("title + text" if indexed_as == "flat" else "the text field") + " here")
    elif encoded_with is not None:
        counts["empty_rule"] = _empty_passage_rule(encoded_with)
    return counts


def _empty_passage_rule(settings) -> str:
    """What an empty passage, encoded as `[CLS] [SEP]`, holds under these settings: its sparse half pools the
    special tokens the kind pools ([SEP] for dupmae and ot unless --exclude-sep; [CLS] and [SEP] for splade),
    and is empty only when it pools neither."""
    pooling = settings.pooling()
    halves = ["dense half defined"] if settings.has_dense else []
    if settings.has_sparse:
        pooled = [token for token, on in (("[CLS]", pooling.sparse_include_cls), ("[SEP]", pooling.sparse_include_sep))
                  if on]
        halves.append(f"sparse half pooled over {' and '.join(pooled)} alone" if pooled else "sparse half empty")
    return f"empty passages are encoded as [CLS] [SEP] ({', '.join(halves)})"


def _count_truncated(loaded, texts, max_length: int) -> int:
    lengths = [len(ids) for ids in loaded.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    return sum(length > max_length for length in lengths)
