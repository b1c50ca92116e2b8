"""Retrieval modes: how an encoded corpus and its queries become a run. One entry per mode.

This table is the only place where a mode is named; the CLI's choices, the suite YAML's validation
and the runner read it. A mode says which halves it needs and how it searches; it returns the run
and what its sidecar should record. Adding a mode is one `register_retrieval_mode(...)` call.

- dense: the dense half through Pyserini's FaissSearcher (flat inner product), or with
  `faiss_shards` one faiss index per encoding shard with a merged top-k;
- impact: the sparse half through Pyserini's LuceneImpactSearcher (quantised weights);
- dupmae: the paper's score, exact, brute force streamed shard by shard (a one-half kind: that half);
- hybrid: dense and impact candidates (the dense ones as `dense` finds them, `faiss_shards` included),
  their union rescored with the exact score, streamed shard by shard. Its audit against
  brute force (top-10 overlap, metric difference) runs the very search hybrid exists to avoid, so it
  is on by default only up to `HYBRID_AUDIT_MAX_DOCUMENTS`, and the sidecar says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from dupmae_eval.data.formats import Run
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.kinds import ENCODER_KINDS
from dupmae_eval.registry import Registry

HYBRID_AUDIT_MAX_DOCUMENTS = 100_000
HYBRID_AUDIT_CHOICES = ("auto", "on", "off")


@dataclass
class SearchJob:
    """What a retrieval mode works with: the finished encoding, the model and its settings, the queries
    (in file order) and the search options. Query encoders and query halves are made once, on demand."""

    encoding: object
    model: object                      # model.LoadedModel
    settings: object                   # encoders.EncoderSettings
    queries: Dict[str, str]
    hits: int = 1000
    threads: Optional[int] = None
    remove_query: bool = True
    quantization_scale: float = 100.0
    faiss_shards: bool = False
    hybrid_audit: str = "auto"
    evaluate: Optional[Callable[[Run], Dict[str, float]]] = None   # the dataset's measures, for audits
    device: Optional[str] = None       # where queries are encoded and the exact score runs (None: CPU)
    precision: Optional[str] = None    # the queries' arithmetic: the documents' (precision.py)
    _encoders: dict = field(default_factory=dict, repr=False)
    _halves: Optional[tuple] = field(default=None, repr=False)

    @property
    def qids(self):
        return list(self.queries)

    def query_encoder(self, half: str):
        """The Pyserini-facing query encoder for one half (dense: vectors; sparse: {term: weight})."""
        from dupmae_eval.encoding.encoders import DupMAEQueryEncoder

        if half not in self._encoders:
            self._encoders[half] = DupMAEQueryEncoder(self.model, self.settings, half=half,
                                                      quantization_scale=self.quantization_scale,
                                                      device=self.device, precision=self.precision)
        return self._encoders[half]

    def query_halves(self):
        """(dense Q x d or None, sparse Q x V or None) for every query, in `qids` order."""
        from dupmae_eval.encoding.encoders import encode_queries

        if self._halves is None:
            half = "dense" if self.settings.has_dense else "sparse"
            dense, sparse, _ = encode_queries(self.query_encoder(half), [self.queries[q] for q in self.qids])
            self._halves = (dense, sparse)
        return self._halves

    def exact(self) -> Run:
        from dupmae_eval.retrieval.searchers import exact_search

        dense, sparse = self.query_halves()
        on_device = self.device if self.device not in (None, "cpu") else None
        return exact_search(self.encoding, dense, sparse, self.qids, self.hits, self.remove_query, device=on_device)


@dataclass(frozen=True)
class RetrievalMode:
    """A way to search an encoding: the halves it needs ("dense", "sparse", "both" or "any") and the search."""

    name: str
    needs: str
    search: Callable[[SearchJob], Tuple[Run, dict]]
    summary: str
    impact_index: bool = False       # searches a Lucene impact index (`indexes.impact_index`): its key is the run's

    def check(self, settings) -> None:
        """Refuse, in one line, an encoder kind that lacks a half this mode needs."""
        kind = settings.kind
        if self.needs == "dense" and not settings.has_dense:
            raise DupMAEEvalError(f"--retrieval {self.name} needs a dense half; encoder {kind!r} has none")
        if self.needs == "sparse" and not settings.has_sparse:
            sparse_kinds = " or ".join(name for name, spec in ENCODER_KINDS.items() if spec.sparse)
            raise DupMAEEvalError(f"--retrieval {self.name} needs a sparse half; encoder {kind!r} has none "
                                  f"(use {sparse_kinds})")
        if self.needs == "both" and not (settings.has_dense and settings.has_sparse):
            raise DupMAEEvalError(f"--retrieval {self.name} fuses both halves; encoder {kind!r} has one "
                                  f"(use --retrieval dupmae for its exact score)")


RETRIEVAL_MODES: Registry[RetrievalMode] = Registry("--retrieval")
register_retrieval_mode = RETRIEVAL_MODES.register
retrieval_mode = RETRIEVAL_MODES.lookup


# --------------------------------------------------------------------------- the four modes


def _dense(job: SearchJob) -> Tuple[Run, dict]:
    from dupmae_eval.retrieval.indexes import faiss_index
    from dupmae_eval.retrieval.searchers import dense_search, faiss_sharded_search

    if job.faiss_shards:
        dense, _ = job.query_halves()
        run = faiss_sharded_search(job.encoding, dense, job.qids, job.hits, job.remove_query)
        return run, {"index": f"{job.encoding.blocks} faiss shards, top-k merged"}
    index = faiss_index(job.encoding)
    return dense_search(index, job.query_encoder("dense"), job.queries, job.hits, job.threads,
                        job.remove_query), {"index": str(index)}


def _impact_run(job: SearchJob):
    from dupmae_eval.retrieval.indexes import impact_index, impact_meta
    from dupmae_eval.retrieval.searchers import impact_search

    encoder = job.query_encoder("sparse")
    index = impact_index(job.encoding, encoder.vocabulary(), job.quantization_scale, job.threads)
    run = impact_search(index, encoder, job.queries, job.hits, job.threads, job.remove_query)
    return run, index, impact_meta(index)


LOST_MASS_WARNING = 0.01
"""Share of the sparse half's score mass an impact index may leave out before `impact` says so."""


def _impact(job: SearchJob) -> Tuple[Run, dict]:
    run, index, meta = _impact_run(job)
    warn_lost_mass(meta)
    return run, {"index": str(index), "impact_index": meta}


def warn_lost_mass(meta: dict) -> Optional[str]:
    """One warning line on stderr when the impact index leaves out a share of the sparse score mass (negative
    weights cannot enter a Lucene impact index; small ones round to 0): the run then scores something other
    than the model's sparse half. Hybrid only takes candidates from the index and rescores them exactly, so
    it records the shares without this warning."""
    import sys

    negative, rounded = meta.get("negative_mass_fraction", 0.0), meta.get("rounded_away_mass_fraction", 0.0)
    if negative + rounded <= LOST_MASS_WARNING:
        return None
    line = (f"dupmae-eval: warning: the impact index leaves out {negative + rounded:.0%} of the sparse half's score "
            f"mass ({negative:.0%} negative weights, {rounded:.0%} rounded to 0), so this run does not score "
            f"with the model's sparse half; --retrieval dupmae scores it exactly (or use a non-negative "
            f"--activation)")
    print(line, file=sys.stderr, flush=True)
    return line


def _exact(job: SearchJob) -> Tuple[Run, dict]:
    return job.exact(), {}


def _hybrid(job: SearchJob) -> Tuple[Run, dict]:
    from dupmae_eval.retrieval.searchers import fuse_candidates, rescore

    dense_run, dense_meta = _dense(job)           # --faiss-shards applies here too (a dense half beyond memory)
    impact_run, _, meta = _impact_run(job)
    dense, sparse = job.query_halves()
    run = rescore(job.encoding, dense, sparse, job.qids, fuse_candidates(dense_run, impact_run), job.hits)
    return run, {**dense_meta, "impact_index": meta, "hybrid_agreement": _audit(job, run)}


def _audit(job: SearchJob, run: Run) -> dict:
    """Hybrid against brute force (top-10 overlap and the measures' differences), when the audit is on."""
    documents = len(job.encoding.docids)
    if job.hybrid_audit not in HYBRID_AUDIT_CHOICES:
        raise DupMAEEvalError(f"--hybrid-audit must be one of {', '.join(HYBRID_AUDIT_CHOICES)}")
    on = job.hybrid_audit == "on" or (job.hybrid_audit == "auto" and documents <= HYBRID_AUDIT_MAX_DOCUMENTS)
    reason = (f"{job.hybrid_audit}: {documents:,} documents "
              f"{'<=' if documents <= HYBRID_AUDIT_MAX_DOCUMENTS else '>'} {HYBRID_AUDIT_MAX_DOCUMENTS:,}"
              if job.hybrid_audit == "auto" else "asked for")
    if not on:
        return {"audit": f"off ({reason}; --hybrid-audit on runs brute force to compare)"}
    import numpy as np

    reference = job.exact()
    overlap = [len({d for d, _ in run[q][:10]} & {d for d, _ in reference[q][:10]}) /
               max(1, min(10, len(reference[q]))) for q in job.qids]
    audit = {"audit": f"on ({reason})", "top10_overlap_with_exact": float(np.mean(overlap))}
    if job.evaluate is not None:
        ours, exact = job.evaluate(run), job.evaluate(reference)
        audit.update(exact=exact, hybrid=ours, difference={m: ours[m] - exact[m] for m in ours})
    return audit


register_retrieval_mode(RetrievalMode(
    "dense", needs="dense", search=_dense,
    summary="the dense half with Pyserini's FaissSearcher (flat inner product)"))
register_retrieval_mode(RetrievalMode(
    "impact", needs="sparse", search=_impact, impact_index=True,
    summary="the sparse half with Pyserini's LuceneImpactSearcher (quantised weights)"))
register_retrieval_mode(RetrievalMode(
    "dupmae", needs="any", search=_exact,
    summary="the paper's score, exact, brute force over the whole corpus"))
register_retrieval_mode(RetrievalMode(
    "hybrid", needs="both", search=_hybrid, impact_index=True,
    summary="dense + impact candidates rescored with the exact score"))
