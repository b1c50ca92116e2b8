"""Where hard negatives come from. One entry per source; each returns a ranking of the training
queries ({qid: [(docid, score), ...]}), from which `data.attach_candidates` keeps the top N minus the
judged positives.

- bm25: the toolkit's own Pyserini BM25 (flat fields, k1 0.9, b 0.4) over the training split — stage 1;
- model: a checkpoint's own `dupmae` retrieval (exact search) over the training split — stage 2, mined
  by the stage-1 model (the paper's Eq. 14);
- run: a TREC run file brought by the user;
- none: in-batch negatives only.
Mined rankings are written to the output folder's `negatives/` and reused when a run resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from dupmae_eval.registry import Registry

Ranking = Dict[str, List[Tuple[str, float]]]


@dataclass(frozen=True)
class NegativeSource:
    name: str
    summary: str
    mine: Callable[..., Ranking]     # (dataset or None, split, settings, folder) -> ranking


NEGATIVE_SOURCES: Registry[NegativeSource] = Registry("negative source")
register_negative_source = NEGATIVE_SOURCES.register


def _needs_dataset(name: str, dataset) -> None:
    from dupmae_eval.errors import DupMAEEvalError

    if dataset is None:
        raise DupMAEEvalError(f"negatives {name!r} search a corpus; a tevatron file brings its own negatives "
                              f"(use negatives: none with it)")


def _bm25(dataset, split, settings, folder: Path) -> Ranking:
    from dupmae_eval.data.formats import read_trec_run
    from dupmae_eval.retrieval.jobs import run_bm25

    _needs_dataset("bm25", dataset)
    path = folder / f"bm25-{split}.trec"
    if not path.is_file():
        run_bm25(dataset, split, "flat", path, hits=settings.negatives_depth)
    return read_trec_run(path)


def _model(dataset, split, settings, folder: Path) -> Ranking:
    from dupmae_eval.data.formats import read_trec_run
    from dupmae_eval.retrieval.jobs import run_model

    _needs_dataset("model", dataset)
    path = folder / f"model-{split}.trec"
    if not path.is_file():
        run_model(dataset, settings.negatives_from, settings.kind, "dupmae", path, split=split,
                  hits=settings.negatives_depth, max_passage_length=settings.passage_max_length)
    return read_trec_run(path)


def _run_file(dataset, split, settings, folder: Path) -> Ranking:
    from dupmae_eval.data.formats import read_trec_run

    return read_trec_run(Path(settings.negatives_from))


register_negative_source(NegativeSource("bm25", "Pyserini BM25 (flat) top-N over the training split", _bm25))
register_negative_source(NegativeSource("model", "a checkpoint's own retrieval (stage 2: self-mined)", _model))
register_negative_source(NegativeSource("run", "a TREC run file", _run_file))
register_negative_source(NegativeSource("none", "in-batch negatives only", lambda *args: {}))
