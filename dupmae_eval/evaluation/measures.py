"""Scores runs with ir-measures, the way `trec_eval -c` averages them.

Measure names are ir-measures' own (`nDCG@10`, `RR@10`, `R@1000`, `AP(rel=2)`). Every
judged query counts: a query in the qrels that the run lacks scores what trec_eval -c gives it,
the value of an empty ranking (0, except NumRel: its relevant documents, and NumQ: 1), so a run
that silently drops queries cannot look better than it is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence

from dupmae_eval.data.formats import Qrels, Run
from dupmae_eval.errors import DupMAEEvalError


@dataclass(frozen=True)
class Evaluation:
    """Aggregate values and per-query values (every judged query present) per measure string."""

    aggregate: Dict[str, float]
    per_query: Dict[str, Dict[str, float]]   # measure -> {qid: value}
    judged_queries: int
    run_queries: int


def parse_measures(names: Sequence[str]) -> list:
    """Parse measure strings with ir-measures, turning its errors into one clear line. A measure is refused
    here, before any run is read, unless ir-measures can compute it as written: its parameters valid (a
    measure that needs one given it), a cutoff of at least 1 (pytrec_eval aborts the process on @0), an
    IPrec recall level within [0, 1], and an evaluator installed that computes it (NumRel(rel=2) has none)."""
    import ir_measures

    measures = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
            _validated(measure)
        except (ValueError, NameError, SyntaxError, TypeError, AssertionError) as exc:
            close = _other_case(name)
            hint = f"did you mean {close!r}? " if close else ""
            raise DupMAEEvalError(f"unknown measure {name!r} (ir-measures says: {exc}); {hint}"
                                  f"examples: nDCG@10 RR@10 R@1000 AP(rel=2)") from None
        cutoff = measure.params.get("cutoff")
        if cutoff is not None and cutoff < 1:
            raise DupMAEEvalError(f"measure {name!r}: the cutoff must be at least 1")
        if measure.NAME == "IPrec" and not 0 <= measure.params["recall"] <= 1:
            raise DupMAEEvalError(f"measure {name!r}: the recall level must lie within [0, 1]")
        if measure.NAME != "IPrec" and not served_by(measure):
            raise DupMAEEvalError(f"measure {name!r}: no evaluator of ir-measures installed here computes it "
                                  f"with these parameters")
        measures.append(measure)
    return measures


def _validated(measure) -> None:
    """ir-measures' own check of a measure's parameters; IPrec@0 and IPrec@1 pass, as trec_eval's recall
    levels 0 and 1 (ir-measures wants a float there, and IPrec is computed here, not by ir-measures)."""
    recall = measure.params.get("recall")
    if measure.NAME == "IPrec" and isinstance(recall, int) and not isinstance(recall, bool):
        measure = measure(recall=float(recall))
    measure.validate_params()


@functools.lru_cache(maxsize=None)
def evaluators():
    """ir-measures' own pipeline (each measure to the first installed evaluator that computes it: pytrec_eval
    for trec_eval's measures), without ranx. ranx is reached only for a measure that no evaluator before it
    computes; it ranks tied scores by an unstable sort, so its value on a run with ties is neither trec_eval's
    nor certain to repeat, and importing it compiles numba functions (about 2 s here) in every process that
    asks whether some measure is computable. Such a measure is refused instead (`parse_measures`)."""
    from ir_measures import providers

    return providers.FallbackProvider([provider for name, provider in providers.registry.items() if name != "ranx"])


def served_by(measure) -> str:
    """The name of the evaluator `evaluators()` computes `measure` with ("" where none installed does): the
    first one installed that supports it, as ir-measures picks."""
    return next((provider.NAME for provider in evaluators().providers
                 if provider.is_available() and provider.supports(measure)), "")


GDEVAL_MAX_GRADE = 4


def _check_gdeval_input(qrels: Qrels, run: Run, names: Sequence[str]) -> None:
    """Refuse judgments or a run that ir-measures' gdeval (TREC Web's gdeval.pl, which computes ERR@k and
    nDCG(dcg='exp-log2')@k) would misread. It keeps only the digits after a query id's last "-" ("PLAIN-2" is
    read as "2"), so its value for such a query comes back under another id and the query would count as 0
    without a word; it refuses other ids and grades above 4 with a Perl error instead of a line."""
    measures = ", ".join(names)
    for qid in (*qrels, *run):
        if not (qid.isascii() and qid.isdigit()):
            raise DupMAEEvalError(f"{measures}: computed by gdeval, which reads numeric query ids only; query "
                                  f"id {qid!r} is not one, so its value would be lost (score it with other "
                                  f"measures)")
    for qid, judged in qrels.items():
        for docid, grade in judged.items():
            if grade > GDEVAL_MAX_GRADE:
                raise DupMAEEvalError(f"{measures}: computed by gdeval, which takes grades up to "
                                      f"{GDEVAL_MAX_GRADE}; query {qid!r} judges {docid!r} {grade}")

def _other_case(name: str) -> str | None:
    """`name` with its measure's name as ir-measures spells it (names are case-sensitive: `ndcg@10` is
    `nDCG@10`), when that spelling parses; else None."""
    import re

    import ir_measures

    base = re.split(r"[@(]", name, maxsplit=1)[0]
    preferred = ("nDCG", "RR", "R", "P", "AP", "MAP")
    known = sorted(ir_measures.measures.registry, key=lambda known: (known not in preferred, known))
    for spelling in (known for known in known if known.lower() == base.lower() and known != base):
        try:
            ir_measures.parse_measure(spelling + name[len(base):])
        except (ValueError, NameError, SyntaxError, TypeError, AssertionError):
            continue
        return spelling + name[len(base):]
    return None


def evaluate(qrels: Qrels, run: Run, measure_names: Sequence[str]) -> Evaluation:
    """Evaluate `run` against `qrels` on `measure_names`, trec_eval -c style."""
    if not qrels:
        raise DupMAEEvalError("the qrels hold no judgments")
    measures = parse_measures(measure_names)
    run_scores = {qid: _without_ties({docid: score for docid, score in hits}) for qid, hits in run.items()}
    found: Dict[str, Dict[str, float]] = {str(m): {} for m in measures}
    by_ir_measures = [m for m in measures if m.NAME != "IPrec"]
    by_gdeval = [str(m) for m in by_ir_measures if served_by(m) == "gdeval"]
    if by_gdeval:
        _check_gdeval_input(qrels, run, by_gdeval)
    if by_ir_measures:
        for metric in evaluators().iter_calc(by_ir_measures, qrels, run_scores):
            found[str(metric.measure)][metric.query_id] = float(metric.value)
    for measure in measures:
        if measure.NAME == "IPrec":
            found[str(measure)] = _interpolated_precision(qrels, run_scores, measure)
    per_query = {str(m): {qid: found[str(m)].get(qid, 0.0) if run_scores.get(qid) else
                          _empty_ranking_value(m, qrels[qid]) for qid in qrels} for m in measures}
    aggregate = {}
    for measure in measures:
        aggregator = measure.aggregator()
        for value in per_query[str(measure)].values():
            aggregator.add(value)
        aggregate[str(measure)] = float(aggregator.result())
    return Evaluation(aggregate, per_query, len(qrels), len(set(run) & set(qrels)))


def _empty_ranking_value(measure, judged: Mapping[str, int]) -> float:
    """A judged query's value where the run has no hit for it. trec_eval -c scores such a query on an empty
    ranking: 0 for every measure but num_rel, which counts the query's relevant documents from the judgments,
    and num_q, which counts the query."""
    if measure.NAME == "NumQ":
        return 1.0
    if measure.NAME == "NumRel":
        level = measure.params.get("rel", 1)
        return float(sum(1 for grade in judged.values() if grade >= level))
    return 0.0


def _without_ties(scores: Dict[str, float]) -> Dict[str, float]:
    """One query's {doc id: score} rescored n, n-1, ..., 1 in the order trec_eval evaluates it (score descending,
    ties by doc id descending). pytrec_eval ranks ties that way, but ir-measures' other evaluators (RR@k from its
    MS MARCO code, Judged@k, Compat, ...) break them by doc id ascending, so on a run with tied scores `RR@10`
    and `RR` would rank one query two ways. Every measure here depends on the order only, and with no ties
    left every evaluator sees trec_eval's."""
    order = sorted(scores, key=lambda docid: (scores[docid], docid), reverse=True)
    return {docid: float(len(order) - position) for position, docid in enumerate(order)}


def evaluate_checked(qrels: Qrels, run: Run, measure_names: Sequence[str], hint: str = "",
                     label: str = "", shown: Sequence[str] | None = None) -> Evaluation:
    """`evaluate` after `check_coverage`: what every verb that scores a run (eval, bm25 --eval, run --eval,
    reproduce) calls, so they refuse and warn alike. Each warning is one line on stderr, after `label`
    (e.g. the reproduce cell it concerns). `shown`: the measures the caller prints, when it scores more
    besides (a table showing nDCG@10 is not told that R@1000, scored with it, reaches past a run's depth)."""
    import sys

    for warning in check_coverage(qrels, run, list(shown) if shown else measure_names, hint, label):
        print(f"dupmae-eval: warning: {label}{warning}", file=sys.stderr, flush=True)
    return evaluate(qrels, run, measure_names)


def check_coverage(qrels: Qrels, run: Run, measure_names: Sequence[str], hint: str = "",
                   label: str = "") -> List[str]:
    """Refuse a run that shares no query with the judgments; return warnings for partial cover and depth.

    trec_eval -c scores a judged query the run lacks as 0, which is right for a run that dropped a
    few queries but turns a run of another collection (or another split) into a table of zeros that
    looks like a result. No shared query is therefore an error; some shared queries a warning with
    the coverage; a cutoff beyond the run's deepest ranking a warning, since R@1000 of a 100-deep run
    is R@100 under another name.
    """
    ranked = {qid for qid, hits in run.items() if hits}     # a query listed with no hit is not covered
    shared = len(ranked & set(qrels))
    if not shared:
        if not ranked:
            raise DupMAEEvalError(f"{label}no query of the run is judged: the run ranks no document for any "
                                  f"query{hint}")
        raise DupMAEEvalError(f"{label}no query of the run is judged: the run's {_queries(len(ranked))} and the "
                              f"judgments' {_queries(len(qrels))} have none in common{hint}")
    warnings = []
    if shared < len(qrels):
        missing = len(qrels) - shared
        warnings.append(f"run covers {shared} of {len(qrels)} judged queries; trec_eval -c scores the "
                        f"{missing} missing as 0")
    conflicts = len(getattr(run, "rank_conflicts", ()))
    if conflicts:
        warnings.append(f"{conflicts} of {_queries(len(run))} list documents in a rank order their scores run "
                        f"against (a better rank with a lower score); they are scored by score, as trec_eval "
                        f"does, not by rank (are the scores distances, where lower is better?)")
    depth = max((len(hits) for hits in run.values()), default=0)
    deeper = [name for name, measure in zip(measure_names, parse_measures(measure_names))
              if (measure.params.get("cutoff") or 0) > depth]
    if deeper:
        hits = f"{depth} hit{'' if depth == 1 else 's'}"
        warnings.append(f"{', '.join(deeper)}: cutoff beyond the run's depth ({hits} per query at most); "
                        f"the value is that of the run's depth")
    return warnings


def _queries(count: int) -> str:
    return f"{count} {'query' if count == 1 else 'queries'}"


def _interpolated_precision(qrels: Qrels, run: Mapping[str, Mapping[str, float]], measure) -> Dict[str, float]:
    """IPrec@r as trec_eval 10 computes it (ir-measures' pytrec_eval embeds trec_eval 9).

    trec_eval 10 turns the recall level into a number of relevant documents by rounding
    (lround(r * R)); version 9 added 0.9 and truncated, which moves the cut-off by one
    relevant document whenever r * R has a fractional part below 0.5. Ranking follows
    trec_eval: score descending, ties by doc id descending. With `judged_only` (trec_eval's -J) the
    unjudged documents leave the ranking first; a query left with no document scores 0 (trec_eval
    divides by its zero documents and prints nan).
    """
    level = measure.params.get("rel", 1)
    recall = measure.params["recall"]
    judged_only = measure.params.get("judged_only", False)
    values: Dict[str, float] = {}
    for qid, judged in qrels.items():
        scores = run.get(qid)
        if not scores:
            continue
        ranking = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
        if judged_only:
            ranking = [item for item in ranking if item[0] in judged]
            if not ranking:
                continue
        is_rel = [judged.get(docid, -1) >= level for docid, _ in ranking]
        num_rel = sum(1 for grade in judged.values() if grade >= level)
        cutoff = math.floor(recall * num_rel + 0.5)  # C's lround for non-negative values
        rel_so_far = sum(is_rel)
        if cutoff > rel_so_far:
            values[qid] = 0.0
            continue
        best = rel_so_far / len(ranking)
        for rank in range(len(ranking), 0, -1):
            if rel_so_far == 0:
                break
            best = max(best, rel_so_far / rank)
            if is_rel[rank - 1]:
                if rel_so_far == cutoff:
                    break
                rel_so_far -= 1
        values[qid] = best
    return values


def format_lines(evaluation: Evaluation, names: Sequence[str] | None = None) -> List[str]:
    """`MEASURE<TAB>VALUE` lines, values to 4 decimals, in the order asked for."""
    names = list(names) if names else list(evaluation.aggregate)
    keyed = {_canonical(name): value for name, value in evaluation.aggregate.items()}
    return [f"{name}\t{keyed[_canonical(name)]:.4f}" for name in names]


def named_values(evaluation: Evaluation, names: Sequence[str], per_query: bool = False) -> Dict[str, object]:
    """{name as asked: aggregate value} (or {name: {qid: value}} with `per_query`), for JSON output."""
    source = evaluation.per_query if per_query else evaluation.aggregate
    return {name: source[_canonical(name)] for name in names}


def _canonical(name: str) -> str:
    import ir_measures

    return str(ir_measures.parse_measure(name))


def per_query_lines(evaluation: Evaluation, names: Sequence[str] | None = None) -> List[str]:
    """`MEASURE<TAB>QID<TAB>VALUE` lines, like trec_eval -q, each measure named as asked (`MRR@10`, not the
    `RR@10` ir-measures calls it), as `format_lines` names it, in the order asked for."""
    names = list(names) if names else list(evaluation.per_query)
    return [f"{name}\t{qid}\t{value:.4f}" for name in names
            for qid, value in evaluation.per_query[_canonical(name)].items()]
