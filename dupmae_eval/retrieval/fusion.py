"""Run fusion: reciprocal rank fusion and the score combinations (CombSUM, CombMNZ, weighted sum).

Each run is taken in the order it is evaluated in (score descending, ties by document id descending, as
trec_eval and ir-measures rank), so a document's rank is the one its scores were measured at. Scores are
normalised per query and per run before they are combined (`minmax`, `zmuv`, or `none`); a document a run
did not retrieve contributes nothing from that run. The definitions follow ranx's (`ranx.fuse`), against
which the tests check them; ranx itself is not used at run time (see docs/commands.md#fuse for why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from dupmae_eval.data.formats import Run
from dupmae_eval.errors import DupMAEEvalError

FUSION_METHODS = ("rrf", "combsum", "combmnz", "wsum")
NORMALISATIONS = ("minmax", "zmuv", "none")
RRF_K = 60.0
"""Cormack et al.'s constant: a document at rank r scores 1 / (k + r) in each run."""
DEFAULT_NORM = {"rrf": "none", "combsum": "minmax", "combmnz": "minmax", "wsum": "minmax"}


@dataclass(frozen=True)
class Fusion:
    method: str
    norm: str
    k: Optional[float]                      # rrf only
    weights: Optional[Tuple[float, ...]]    # wsum only

    def describe(self) -> dict:
        return {"method": self.method, "norm": self.norm, "k": self.k,
                "weights": list(self.weights) if self.weights else None}


def fusion_settings(method: str, runs: int, k: Optional[float] = None, norm: Optional[str] = None,
                    weights: Optional[Sequence[float]] = None) -> Fusion:
    """Check a method's settings before any run is read: k for rrf only, weights for wsum (one per run),
    a normalisation only where scores are combined (rrf uses ranks)."""
    if method not in FUSION_METHODS:
        raise DupMAEEvalError(f"--method {method!r}: one of {', '.join(FUSION_METHODS)}")
    if runs < 2:
        raise DupMAEEvalError(f"fusion needs at least two runs, got {runs}")
    if k is not None and method != "rrf":
        raise DupMAEEvalError(f"--k is reciprocal rank fusion's constant; --method {method} has none")
    if k is not None and (not math.isfinite(k) or k < 0):
        raise DupMAEEvalError(f"--k {k:g}: must be a number of at least 0")
    if method == "rrf" and norm not in (None, "none"):
        raise DupMAEEvalError(f"--norm {norm}: rrf combines ranks, not scores; leave --norm out (or none)")
    if norm is not None and norm not in NORMALISATIONS:
        raise DupMAEEvalError(f"--norm {norm!r}: one of {', '.join(NORMALISATIONS)}")
    if method == "wsum":
        if weights is None:
            raise DupMAEEvalError(f"--method wsum needs --weights, one per run ({runs})")
        if len(weights) != runs:
            raise DupMAEEvalError(f"--weights: {len(weights)} given for {runs} runs; give one per run, in order")
        if not all(math.isfinite(w) for w in weights):
            raise DupMAEEvalError("--weights: every weight must be a finite number")
    elif weights is not None:
        raise DupMAEEvalError(f"--weights are for --method wsum; {method} weighs every run alike")
    return Fusion(method, norm or DEFAULT_NORM[method], (RRF_K if k is None else float(k)) if method == "rrf" else None,
                  tuple(float(w) for w in weights) if weights is not None else None)


def evaluation_order(hits: Sequence[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """Hits as trec_eval and ir-measures rank them: score descending, ties by document id descending."""
    return sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)


def normalise(hits: Sequence[Tuple[str, float]], norm: str) -> Dict[str, float]:
    """One query's scores of one run, normalised: minmax to [0, 1], zmuv to mean 0 and (population) standard
    deviation 1; where every score is the same (one hit, or a tie throughout) both give 0, as ranx does."""
    scores = {docid: score for docid, score in hits}
    if norm == "none" or not scores:
        return scores
    values = list(scores.values())
    if norm == "minmax":
        low, spread = min(values), max(values) - min(values)
        return {docid: (score - low) / spread if spread > 0 else 0.0 for docid, score in scores.items()}
    mean = sum(values) / len(values)
    deviation = math.sqrt(sum((value - mean) ** 2 for value in values) / len(values))
    return {docid: (score - mean) / deviation if deviation > 0 else 0.0 for docid, score in scores.items()}


def fuse(runs: Sequence[Run], fusion: Fusion, hits: Optional[int] = 1000) -> Run:
    """Fuse runs query by query over the union of their queries; keep the best `hits` per query (None: all)."""
    fused: Run = {}
    for qid in sorted(set().union(*runs)):
        lists = [evaluation_order(run.get(qid, ())) for run in runs]
        if fusion.method == "rrf":
            parts = [{docid: 1.0 / (fusion.k + rank) for rank, (docid, _) in enumerate(hits_, start=1)}
                     for hits_ in lists]
        else:
            parts = [normalise(hits_, fusion.norm) for hits_ in lists]
        weights = fusion.weights or (1.0,) * len(runs)
        combined: Dict[str, float] = {}
        for weight, part in zip(weights, parts):
            for docid, score in part.items():
                combined[docid] = combined.get(docid, 0.0) + weight * score
        if fusion.method == "combmnz":
            combined = {docid: score * sum(docid in part for part in parts) for docid, score in combined.items()}
        ranking = evaluation_order(combined.items())
        fused[qid] = ranking[:hits] if hits else ranking
    return fused


def coverage_warnings(runs: Sequence[Run], names: Sequence[str]) -> List[str]:
    """Refuse runs that share no query (runs of different topics); warn where a run lacks some queries."""
    every = set().union(*runs)
    if not set(runs[0]).intersection(*runs[1:]):
        raise DupMAEEvalError(f"the runs share no query ({', '.join(f'{name}: {len(run)}' for name, run in zip(names, runs))} "
                              f"queries); are they runs of the same topics?")
    return [f"{name} has no hits for {len(every) - len(run)} of the {len(every)} queries; it adds nothing to them"
            for name, run in zip(names, runs) if len(run) < len(every)]


SHARED_KEYS = ("dataset", "dataset_root", "split", "corpus_sha256", "topics", "judgments", "queries_digest")
"""What a fused run inherits from its inputs' sidecars when they agree: the dataset and queries it answers,
so `table` scores it beside them."""


def fuse_files(paths: Sequence[str], fusion: Fusion, output, tag: Optional[str] = None, hits: Optional[int] = 1000,
               input_format: Optional[str] = None, run_format: str = "trec", warn=None) -> Run:
    """Read every input (all of them, before any work: a bad one is refused naming its file and line), fuse,
    and write the run with its sidecar naming the inputs (path, SHA-256, format, condition) and the method."""
    import json
    from pathlib import Path

    from dupmae_eval import __version__, cache
    from dupmae_eval.data.formats import detect_run_format, forget_run_records, read_run, write_run
    from dupmae_eval.provenance import provenance

    runs, inputs, sidecars = [], [], []
    for path in map(Path, paths):
        fmt = detect_run_format(path) if input_format in (None, "auto") else input_format
        runs.append(read_run(path, fmt))
        sidecar = Path(f"{path}.meta.json")
        try:
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else None
        except json.JSONDecodeError:
            raise DupMAEEvalError(f"{sidecar}: not valid JSON; repair or remove it") from None
        sidecars.append(meta)
        inputs.append({"path": str(path.resolve()), "sha256": cache.file_digest(path), "format": fmt,
                       "condition": (meta or {}).get("condition"), "queries": len(runs[-1])})
    shared = _shared_origin(paths, sidecars)      # runs of other datasets: refused before any warning
    for line in coverage_warnings(runs, [str(path) for path in paths]):
        if warn is not None:
            warn(line)
    fused = fuse(runs, fusion, hits)
    tag = tag or f"fused-{fusion.method}"
    forget_run_records(output)               # never the fused run beside another run's sidecar or metrics
    write_run(output, fused, tag, run_format)
    cache.write_json(Path(f"{output}.meta.json"), {
        "tool": f"dupmae-eval {__version__}", "condition": tag, **shared, "run_format": run_format,
        "fusion": {**fusion.describe(), "hits": hits, "inputs": inputs}, "queries": len(fused), **provenance()})
    return fused


def _shared_origin(paths, sidecars) -> dict:
    """The dataset fields the inputs' sidecars agree on; inputs of different datasets or queries are refused
    (a split's queries edited between two runs too, where both sidecars hold the queries' digest).
    Without every sidecar the fused run says its judgments are unknown (score it with `eval QRELS RUN`)."""
    if any(meta is None for meta in sidecars):
        missing = [str(path) for path, meta in zip(paths, sidecars) if meta is None]
        return {"judgments": f"unknown: {', '.join(missing)} has no .meta.json sidecar saying which dataset it "
                             f"answers; score the fused run with `dupmae-eval eval QRELS RUN`"}
    first = {key: sidecars[0].get(key) for key in SHARED_KEYS if key in sidecars[0]}
    for path, meta in zip(paths[1:], sidecars[1:]):
        for key in ("dataset", "split", "corpus_sha256", "topics", "queries_digest"):
            ours, theirs = meta.get(key), first.get(key)
            if key == "topics":       # the same topics file, wherever it lies
                ours, theirs = (ours or {}).get("sha256"), (theirs or {}).get("sha256")
            if key == "queries_digest" and (ours is None or theirs is None):
                first.pop(key, None)  # an older sidecar does not say: the fused run cannot either
                continue
            if ours != theirs:
                raise DupMAEEvalError(f"{path} answers another {key.replace('_', ' ')} than {paths[0]} "
                                      f"({ours!r} and {theirs!r}, their sidecars say); "
                                      f"fuse runs of the same queries over the same corpus")
    return first
