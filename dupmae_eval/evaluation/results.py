"""The metrics record: what `reproduce` writes beside every run and what `table` reads (it also scores runs
that `bm25` and `run` wrote, from their sidecars).

One record per cell: `<run>.metrics.json` with the suite, condition, dataset, split, the key the
suite's expectations use, the BEIR unit it averages into, the aggregate values and the per-query
values of every measure (for paired tests), and what the result was made from: the SHA-256 of the corpus the
run searched, a digest of the queries it searched and one of the judgments it was scored against (so results
of one row made from different corpora, queries or judgments are refused rather than compared). The writer
and the reader live here, and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from dupmae_eval.data.formats import SIDECAR_SUFFIX, metrics_path_for
from dupmae_eval.errors import DupMAEEvalError


@dataclass
class MetricsRecord:
    suite: str
    condition: str
    dataset: str                                   # registry name (a CQADupStack forum, not the unit)
    split: str
    key: str                                       # "scifact", "msmarco-passage/dl19": as the suite's expectations
    unit: str                                      # the BEIR unit it averages into ("cqadupstack"), else dataset
    run: str                                       # the run file's name
    aggregate: Dict[str, float]
    per_query: Dict[str, Dict[str, float]] = field(default_factory=dict)    # measure -> {qid: value}
    run_sha256: str = ""                           # the run file's bytes when scored; "" if it was not there
    corpus_sha256: str = ""                        # the corpus the run searched; "" when nothing recorded it
    queries_digest: str = ""                       # the queries it searched (formats.queries_digest); "" unknown
    judgments_digest: str = ""                     # the judgments it was scored against; "" from older versions


def write_metrics(run_path: Path, record: MetricsRecord) -> Path:
    """Write `record` beside `run_path`, with the SHA-256 of the run file as it is now: a reader then knows
    whether the record still scores the file beside it (`_checked_against_run`)."""
    from dupmae_eval import cache

    path = metrics_path_for(run_path)
    digest = cache.file_digest(run_path) if Path(run_path).is_file() else ""
    cache.write_json(path, {**asdict(record), "run_sha256": digest})
    return path


def read_metrics(paths: Iterable[Path], qrels: Optional[Path] = None,
                 measures: Sequence[str] = ()) -> List[MetricsRecord]:
    """Every result under the given files or folders, as records: `*.metrics.json` files (what `reproduce`
    writes), and runs that `bm25` or `run` wrote (a run file with its `.meta.json` sidecar, scored here
    against its dataset's judgments and measures). With `qrels`, a run file given by name without a sidecar
    (another tool's TREC, MS MARCO or JSON run) is scored against that judgments file (`record_from_plain_run`).
    Two results for the same table cell (`table_row`) and dataset are refused, naming both files: a cell must
    come from one run per dataset (a CQADupStack cell averages its forums, one result each), so a plain run's
    record (no split: the dataset's default) and a reproduce record of that split are the same cell twice.
    Results of one row and dataset made from different corpora, queries or judgments are refused too
    (`refuse_other_inputs`)."""
    return [record for record, _ in read_metrics_with_runs(paths, qrels, measures)]


def read_metrics_with_runs(paths: Iterable[Path], qrels: Optional[Path] = None,
                           measures: Sequence[str] = ()) -> List[Tuple[MetricsRecord, Path]]:
    """`read_metrics`, each record with the path of the run file it scores (beside which its sidecar is, when
    the run is still there): what a report needs to say where each cell came from."""
    read: List[Tuple[MetricsRecord, Path, Path]] = []     # each record, its file, and the run it scores
    plain: List[int] = []                                   # which of them are plain runs scored with `qrels`
    for path in map(Path, paths):
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(path.rglob("*.metrics.json"))
            files += [run for run in _runs_with_sidecars(path) if not metrics_path_for(run).is_file()
                      and _judged(run)]        # a run for topics without judgments is no table cell
        else:
            raise DupMAEEvalError(f"{path}: no such file or folder")
        if not files:
            raise DupMAEEvalError(f"{path}: no results here (*.metrics.json from `dupmae-eval reproduce`, or runs "
                                  f"with their .meta.json sidecar from `bm25`/`run`)")
        for file in files:
            if file.name.endswith(".metrics.json"):
                record = _with_corpus(file, _checked_against_run(file, _read_record(file)))
                read.append((record, file, file.parent / record.run))
                continue
            if qrels is not None and not Path(f"{file}{SIDECAR_SUFFIX}").is_file():
                plain.append(len(read))
                record = record_from_plain_run(file, qrels, measures)
            else:
                record = record_from_run(file, measures)
            read.append((record, file, file))
    for index in plain:
        read[index] = (_in_its_row(read[index][0], [record for record, _, _ in read]),) + read[index][1:]
    origin: Dict[tuple, Path] = {}
    for record, file, _ in read:
        key = cell_key(record)
        if key in origin:
            raise DupMAEEvalError(f"two results for condition {record.condition!r} on {record.key}: "
                                  f"{origin[key]} and {file}; give the table one of them")
        origin[key] = file
    refuse_other_inputs((record, file) for record, file, _ in read)
    return [(record, run) for record, _, run in read]


def _in_its_row(record: MetricsRecord, others: Sequence[MetricsRecord]) -> MetricsRecord:
    """A plain run's record (`record_from_plain_run`: named after its judgments file) moved to the row of the
    one dataset and split among `others` whose judgments are the very ones it was scored against (the same
    digest): `table ours.trec theirs.trec --qrels scifact/qrels/test.tsv` compares the two in SciFact's row,
    where they would otherwise land in rows "scifact" and "test". Left where it is when no other result, or
    results of more than one dataset or split, have those judgments."""
    rows = {(other.dataset, other.split, other.key, other.unit) for other in others
            if other is not record and other.judgments_digest == record.judgments_digest and other.split}
    if len(rows) != 1:
        return record
    dataset, split, key, unit = rows.pop()
    return replace(record, dataset=dataset, split=split, key=key, unit=unit)


# what a result was made from, as a record holds it: (field, what differs, the digest's name, what to do)
MADE_FROM = (("corpus_sha256", "made from different corpora", "corpus SHA-256",
              "give the table the results of one corpus"),
             ("queries_digest", "made for different queries (other ids or texts)", "queries digest",
              "make every run of the row for the same queries"),
             ("judgments_digest", "scored against different judgments", "judgments digest",
              "score them against the same judgments (`reproduce` rescores its runs when run again)"))


def refuse_other_inputs(named: Iterable[Tuple[MetricsRecord, object]]) -> None:
    """Refuse, in one line naming both, two results of one table row and dataset (`table_row`, the dataset:
    the results a paired test compares query by query) whose records say they were made from different
    corpora, searched different queries, or were scored against different judgments (`MADE_FROM`): under the
    same names and query ids, a difference between them then says nothing about the conditions. `named`: each
    record with what to call it (its file). A record that holds no digest of one of these (one an older
    version wrote; another tool's run scored with --qrels names no corpus and no queries) cannot be told
    apart on that and is not refused for it: refusing it would refuse every such result, so the check is as
    good as what the results record."""
    seen: Dict[Tuple[str, str, str], Tuple[str, object]] = {}
    for record, name in named:
        for attribute, differs, label, remedy in MADE_FROM:
            digest = getattr(record, attribute)
            if not digest:
                continue
            first = seen.setdefault((attribute, table_row(record), record.dataset), (digest, name))
            if first[0] != digest:
                raise DupMAEEvalError(f"{first[1]} and {name}: results for {record.key} {differs} ({label} "
                                      f"{first[0][:12]} and {digest[:12]}), which one row cannot compare; {remedy}")


def table_row(record: MetricsRecord) -> str:
    """The table row a record lands in: its BEIR unit, followed by `/split` unless the split is the dataset's
    default. A record without a split (a run scored with --qrels, which names none) counts as the default
    split, so it shares its row with a reproduce record of that split. `tables` places records by this, and
    `read_metrics_with_runs` refuses doubles by it: the two cannot disagree on what one cell is."""
    unit = record.unit or record.dataset
    return unit if record.split in ("", default_split(record.dataset)) else f"{unit}/{record.split}"


def cell_key(record: MetricsRecord) -> Tuple[str, str, str]:
    """What one result of a table cell is: its row (`table_row`), its condition, and its dataset (a cell holds
    one result per dataset: several only for a unit's members, CQADupStack's forums). Two records with the same
    key are the same result twice, which `table` refuses rather than averaging."""
    return table_row(record), record.condition, record.dataset


def default_split(dataset: str) -> str:
    """A registry dataset's default split; "test" for a name the registry does not know (BEIR's default)."""
    from dupmae_eval.data.datasets import lookup

    try:
        return lookup(dataset).default_split
    except DupMAEEvalError:
        return "test"


def _read_record(file: Path) -> MetricsRecord:
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DupMAEEvalError(f"{file}: not valid JSON ({exc.msg})") from None
    try:
        return MetricsRecord(**raw)
    except TypeError as exc:
        raise DupMAEEvalError(f"{file}: not a metrics record ({exc})") from None


def _checked_against_run(file: Path, record: MetricsRecord) -> MetricsRecord:
    """`record` (read from `file`) if it scores the run file beside it as that file is now. Refused in one line
    when the run has other bytes than the record's SHA-256 (made again, or replaced, since it was scored), or
    when the record carries no SHA-256 (an older version wrote it: nothing says which run it scored) while a
    run lies beside it; `reproduce` rewrites the record from the run in either case. A record whose run is
    absent is read as it is: it is all there is of that result, with nothing to disagree with it."""
    from dupmae_eval import cache

    run = file.parent / record.run
    if not run.is_file():
        return record
    if not record.run_sha256:
        raise DupMAEEvalError(f"{file}: records no SHA-256 of {run.name} (an older version wrote it), so nothing "
                              f"says it scores the run there now; run `dupmae-eval reproduce` again (it reuses "
                              f"the run and rewrites this file) or remove the file to table the run itself")
    if record.run_sha256 != cache.file_digest(run):
        raise DupMAEEvalError(f"{file}: scores another run than {run} holds now (its SHA-256 differs: made again "
                              f"or replaced since); run `dupmae-eval reproduce` again or remove the file")
    return record


def _with_corpus(file: Path, record: MetricsRecord) -> MetricsRecord:
    """`record` with the corpus SHA-256 and queries digest of its run's sidecar where the record lacks them
    (written before records held them) and the run it scores lies beside it: `_checked_against_run` has
    matched the run's bytes, and a sidecar is only ever written after its run and removed before the run is
    made again. The judgments a record was scored with are not in the sidecar, so an older record stays
    without their digest."""
    run = file.parent / record.run
    if (record.corpus_sha256 and record.queries_digest) or not run.is_file():
        return record
    try:
        meta = json.loads(Path(f"{run}{SIDECAR_SUFFIX}").read_text())
    except (OSError, json.JSONDecodeError):
        return record
    if not isinstance(meta, dict):
        return record
    found = {attribute: meta.get(attribute) for attribute in ("corpus_sha256", "queries_digest")
             if not getattr(record, attribute) and isinstance(meta.get(attribute), str)}
    return replace(record, **found)


def _runs_with_sidecars(folder: Path) -> List[Path]:
    return [sidecar.with_name(sidecar.name[:-len(SIDECAR_SUFFIX)]) for sidecar in sorted(folder.rglob(f"*{SIDECAR_SUFFIX}"))
            if sidecar.with_name(sidecar.name[:-len(SIDECAR_SUFFIX)]).is_file()]


def _judged(run_path: Path) -> bool:
    """False for a run whose sidecar says its queries have no judgments (a topics file) or unknown ones."""
    try:
        meta = json.loads(Path(f"{run_path}{SIDECAR_SUFFIX}").read_text())
    except (OSError, json.JSONDecodeError):
        return True                  # record_from_run says what is wrong with it
    return not (isinstance(meta, dict) and meta.get("judgments") and meta.get("split") is None)


def record_from_plain_run(run_path: Path, qrels: Path, measures: Sequence[str] = ()) -> MetricsRecord:
    """A run with no sidecar (another tool's: TREC, MS MARCO or JSON, told from its content) scored against
    the judgments file `qrels` with `measures` and the BEIR measures. Its condition is the run file's name
    without its extension, its dataset the judgments file's, its split none. Only `measures` (those the
    table shows; all of them when none is given) are warned about: a 100-deep run is not told that R@1000,
    which it is scored with but which no column shows, reaches past its depth."""
    import sys

    from dupmae_eval.data.datasets import BEIR_MEASURES
    from dupmae_eval.data.formats import judgments_digest, read_qrels, read_run
    from dupmae_eval.evaluation.measures import check_coverage, evaluate

    qrels, run_path = Path(qrels), Path(run_path)
    names = list(dict.fromkeys([*measures, *BEIR_MEASURES]))
    condition, dataset = run_path.name.split(".")[0], qrels.name.split(".")[0]
    judged, run, label = read_qrels(qrels), read_run(run_path), f"{condition} {dataset}: "
    for warning in check_coverage(judged, run, list(measures) or names, label=label):
        print(f"dupmae-eval: warning: {label}{warning}", file=sys.stderr, flush=True)
    evaluation = evaluate(judged, run, names)
    return MetricsRecord(suite="", condition=condition, dataset=dataset, split="", key=dataset, unit=dataset,
                         run=run_path.name, aggregate=evaluation.aggregate, per_query=evaluation.per_query,
                         judgments_digest=judgments_digest(judged))


def record_from_run(run_path: Path, measures: Sequence[str] = ()) -> MetricsRecord:
    """A run written by `bm25`, `run` or `reproduce`, scored against the judgments of the dataset and split
    its sidecar names, with `measures` (those a table asks for) and the dataset's (`run_sidecar` says when it
    is refused); in the format the sidecar records, else the one the file's content tells."""
    from dupmae_eval.data.formats import read_run

    meta, data = run_sidecar(run_path)
    names = list(dict.fromkeys([*measures, *data.measures(meta["split"])])) if measures else None
    return record_of(meta["condition"], data, meta["split"], read_run(run_path, meta.get("run_format")), run_path.name,
                     suite=meta.get("suite", ""), measures=names, name=meta["dataset"], shown=measures or None,
                     corpus_sha256=meta.get("corpus_sha256") or "", queries_digest=meta.get("queries_digest") or "")


def run_sidecar(run_path: Path):
    """A run's sidecar and the dataset it names, resolved. Refused when the sidecar is missing (nothing says
    what judges the run) or when the dataset's corpus is no longer the one the run was made from."""
    from dupmae_eval.data.datasets import resolve

    sidecar = Path(f"{run_path}{SIDECAR_SUFFIX}")
    if not sidecar.is_file():
        raise DupMAEEvalError(f"{run_path}: not a metrics record, and no {sidecar.name} beside it to say which "
                              f"dataset judges it; give the judgments with --qrels FILE")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key), str) for key in ("dataset", "split",
                                                                                         "condition")):
        if isinstance(meta, dict) and meta.get("judgments") and meta.get("split") is None:
            raise DupMAEEvalError(f"{run_path}: no judgments to score it with ({meta['judgments']})")
        raise DupMAEEvalError(f"{sidecar}: not a run sidecar (needs dataset, split and condition)")
    name = meta["dataset"]
    root = meta.get("dataset_root")
    data = resolve(root if root and Path(root).is_dir() else name, download=False)
    if meta.get("corpus_sha256") and meta["corpus_sha256"] != data.corpus_fingerprint():
        raise DupMAEEvalError(f"{run_path}: made from another corpus than {data.root} holds now (corpus SHA-256 "
                              f"differs); run it again")
    return meta, data


def record_of(condition: str, data, split: str, run, run_name: str, suite: str = "",
              measures=None, name: str | None = None, corpus_sha256: Optional[str] = None,
              queries_digest: Optional[str] = None, shown: Optional[Sequence[str]] = None) -> MetricsRecord:
    """The metrics record of a run of `data` (a resolved dataset; `name`: the name it was asked by, when not
    the folder's) on `split`, scored against its judgments with its measures (or `measures`): what a table
    cell is made from, whether the run is a file or in memory. `corpus_sha256`: the corpus the run searched as
    its sidecar records it ("" when it records none); None: `data`'s, for a run just made from it.
    `queries_digest` likewise: the queries the run searched; None: the split's queries as `data` holds them.
    `shown`: the measures a table shows, the only ones warned about (a cutoff past the run's depth)."""
    from dupmae_eval.data.datasets import lookup
    from dupmae_eval.data.formats import judgments_digest, queries_digest as digest_of_queries
    from dupmae_eval.evaluation.measures import evaluate_checked

    name = name or data.name
    judgments = data.qrels(split)
    evaluation = evaluate_checked(judgments, run, measures or data.measures(split),
                                  label=f"{condition} {name}/{split}: ", shown=shown)
    try:
        info = lookup(name)
        default, unit = info.default_split, info.unit or name
    except DupMAEEvalError:
        default, unit = data.default_split, name
    return MetricsRecord(suite=suite, condition=condition, dataset=name, split=split,
                         key=name if split == default else f"{name}/{split}", unit=unit, run=run_name,
                         aggregate=evaluation.aggregate, per_query=evaluation.per_query,
                         corpus_sha256=data.corpus_fingerprint() if corpus_sha256 is None else corpus_sha256,
                         queries_digest=(digest_of_queries(data.queries(split)) if queries_digest is None
                                         else queries_digest),
                         judgments_digest=judgments_digest(judgments))
