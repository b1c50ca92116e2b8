"""Experiment matrices in YAML: conditions x datasets, with expected scores and their precision.

A suite file (see `configs/`) holds structured parameters, never shell strings:

    suite: beir
    measures: [nDCG@10, R@100, R@1000]
    precision: 4                      # decimals at which expected scores are compared
    datasets: [trec-covid, ..., cqadupstack, ..., scifact]    # BEIR units; cqadupstack = its 12 forums
    conditions:
      bm25-flat:   {kind: bm25, fields: flat, expected: {scifact: {nDCG@10: 0.6789, ...}, ...},
                    index_stats: {scifact: {documents: 5183, documents (non-empty): 5183, ...}, ...}}
      retromae:    {kind: model, model: Shitao/RetroMAE_BEIR, encoder: cls, retrieval: dense}
    references:                       # published columns for tables (the paper's Table 3, ...)
      DupMAE (paper): {measure: nDCG@10, values: {trec-covid: 0.728, ...}}

Everything is validated before any work starts; errors name the YAML file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dupmae_eval.data.datasets import REGISTRY, lookup, units_of
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.options import OPTIONS

CONDITION_KEYS = {
    "bm25": {"kind", "fields", "k1", "b", "hits", "expected", "index_stats", "description"},
    "model": {"kind", "model", "encoder", "retrieval", "expected", "description"} | set(OPTIONS),
}
"""Keys a condition may have: a model condition takes every option of the `run` verb (`options.OPTIONS`)."""
INDEX_STATS = ("documents", "documents (non-empty)", "total terms", "unique terms")
"""Index statistics a bm25 condition may expect, named as Anserini's regression YAMLs name them."""
SUITE_KEYS = {"suite", "description", "measures", "precision", "datasets", "conditions", "references"}


@dataclass(frozen=True)
class Cell:
    """One (condition, dataset, split) to run."""

    condition: str
    dataset: str      # registry name (a CQADupStack forum, not the unit)
    split: str

    @property
    def key(self) -> str:
        info = lookup(self.dataset)
        return self.dataset if self.split == info.default_split else f"{self.dataset}/{self.split}"


@dataclass
class Condition:
    name: str
    kind: str
    params: Dict[str, Any]
    expected: Dict[str, Dict[str, float]] = field(default_factory=dict)   # dataset or unit key -> measure -> value
    index_stats: Dict[str, Dict[str, int]] = field(default_factory=dict)  # dataset key -> statistic -> count


def describe_conditions(suite: "Suite") -> Dict[str, str]:
    """What each condition of a suite is, in a few words, for a table's legend: BM25 with its field layout
    and parameters, or the model with its encoder kind and retrieval mode (and any other setting given)."""
    described = {}
    for name, condition in suite.conditions.items():
        params = dict(condition.params)
        if condition.kind == "bm25":
            text = (f"BM25 {params.pop('fields', 'flat')} (k1 {params.pop('k1', 0.9)}, b {params.pop('b', 0.4)}"
                    + (f", {params.pop('hits')} hits" if "hits" in params else "") + ")")
        else:
            text = (f"{params.pop('model')}, encoder {params.pop('encoder', 'dupmae')}, "
                    f"retrieval {params.pop('retrieval', 'dupmae')}")
            text += "".join(f", {key} {value}" for key, value in params.items())
        described[name] = text
    return described


@dataclass
class Suite:
    path: Path
    name: str
    measures: Tuple[str, ...]
    precision: int
    datasets: List[str]                # as written: units ("cqadupstack") or "name/split"
    conditions: Dict[str, Condition]
    references: Dict[str, Dict[str, Any]]

    def cells(self, datasets: Optional[List[str]] = None, conditions: Optional[List[str]] = None) -> List[Cell]:
        """Every cell of the matrix (or of the chosen rows/columns), units expanded into their members."""
        chosen_datasets = datasets or self.datasets
        chosen_conditions = conditions or list(self.conditions)
        for name in chosen_conditions:
            if name not in self.conditions:
                raise DupMAEEvalError(f"{self.path}: no condition {name!r} (has: {', '.join(self.conditions)})")
        cells = []
        for entry in chosen_datasets:
            if entry not in self.datasets:
                raise DupMAEEvalError(f"{self.path}: dataset {entry!r} is not in this suite")
            for dataset, split in expand_dataset(entry):
                cells.extend(Cell(condition, dataset, split) for condition in chosen_conditions)
        return cells


def expand_dataset(entry: str) -> List[Tuple[str, str]]:
    """'cqadupstack' -> its 12 forums; 'msmarco-passage/dl19' -> (msmarco-passage, dl19); an ir_datasets name
    ('irds:beir/scifact/test') is its own split."""
    if entry.startswith("irds:"):
        return [(entry, lookup(entry).default_split)]
    name, _, split = entry.partition("/")
    members = units_of(name)
    return [(member, split or lookup(member).default_split) for member in members]


def load_suite(path: str | Path, check_datasets: bool = True, selected: Optional[Sequence[str]] = None) -> Suite:
    """Read and validate a suite YAML; refuse it whole, naming the file and key, at the first problem.

    `check_datasets=False` skips resolving dataset names (for tables, which only need references);
    `selected` (reproduce --datasets) resolves only those: a dataset the run leaves out may stay unmapped
    (a local collection that needs --data NAME=FOLDER is not asked for when it is not run)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        from dupmae_eval.shipped import shipped_suites

        raise DupMAEEvalError(f"{path}: no such suite file, and no shipped suite of that name (the shipped suites: "
                              f"{', '.join(shipped_suites())})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DupMAEEvalError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise DupMAEEvalError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise DupMAEEvalError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(SUITE_KEYS))})")
    for key in ("suite", "datasets", "conditions"):
        if key not in raw:
            raise DupMAEEvalError(f"{path}: missing key {key!r}")
    datasets = list(raw["datasets"])
    for entry in datasets if check_datasets else ():
        if not selected or entry in selected:
            _check_dataset(path, f"datasets: {entry}", entry)
    conditions = {name: _condition(path, name, spec, datasets if check_datasets else None)
                  for name, spec in (raw["conditions"] or {}).items()}
    measures = tuple(raw.get("measures") or ())
    if measures:
        from dupmae_eval.evaluation.measures import parse_measures

        try:
            parse_measures(measures)
        except DupMAEEvalError as exc:
            raise DupMAEEvalError(f"{path}: measures: {exc}") from None
    return Suite(path, str(raw["suite"]), measures, int(raw.get("precision", 4)), datasets, conditions,
                 dict(raw.get("references") or {}))


def _check_dataset(path: Path, where: str, entry: str) -> None:
    if str(entry).startswith("irds:"):
        from dupmae_eval.data.datasets import resolve

        try:
            resolve(str(entry), download=False)       # the id against ir_datasets' catalogue; nothing is read
        except DupMAEEvalError as exc:
            raise DupMAEEvalError(f"{path}: {where}: {exc}") from None
        return
    name, _, split = str(entry).partition("/")
    if not any(info.unit == name for info in REGISTRY.values()):
        try:
            lookup(name)
        except DupMAEEvalError as exc:
            raise DupMAEEvalError(f"{path}: {where}: {exc}") from None
    info = lookup(units_of(name)[0])
    if split and info.shipped and split not in info.shipped:
        raise DupMAEEvalError(f"{path}: {where}: dataset {name!r} has no split {split!r}")


def _condition(path: Path, name: str, spec: Any, datasets: Optional[List[str]]) -> Condition:
    """One condition, validated. Its name is the tag of its runs, so it meets `write_run`'s rule here, when
    the suite is loaded, rather than when the first cell's run is written after its index or encoding."""
    from dupmae_eval.data.formats import check_run_tag

    where = f"conditions: {name}"
    check_run_tag(str(name), f"{path}: conditions: name")
    if not isinstance(spec, dict):
        raise DupMAEEvalError(f"{path}: {where}: expected a mapping")
    kind = spec.get("kind")
    if kind not in CONDITION_KEYS:
        raise DupMAEEvalError(f"{path}: {where}: kind must be one of {', '.join(CONDITION_KEYS)}, not {kind!r}")
    unknown = set(spec) - CONDITION_KEYS[kind]
    if unknown:
        key = sorted(unknown)[0]
        spelled = str(key).replace("-", "_")
        hint = f" (suite keys are spelt with underscores: {spelled!r} for --{key})" \
            if spelled in CONDITION_KEYS[kind] else ""
        raise DupMAEEvalError(f"{path}: {where}: unknown key {key!r} for a {kind} condition{hint}")
    if kind == "bm25":
        _check_bm25_condition(path, where, spec)
    if kind == "model":
        for key in ("model", "encoder", "retrieval"):
            if not spec.get(key):
                raise DupMAEEvalError(f"{path}: {where}: missing {key!r}")
        _check_model_condition(path, where, spec)
    expected = spec.get("expected") or {}
    known = None if datasets is None else {k for entry in datasets for k in _member_keys(entry)} | set(datasets)
    for dataset_key in expected if known is not None else ():
        if dataset_key not in known:
            raise DupMAEEvalError(f"{path}: {where}: expected: {dataset_key!r} is not a dataset of this suite")
    index_stats = _index_stats(path, where, spec.get("index_stats") or {}, known)
    params = {k: v for k, v in spec.items() if k not in ("kind", "expected", "index_stats", "description")}
    return Condition(name, kind, params, {k: dict(v) for k, v in expected.items()}, index_stats)


def _check_bm25_condition(path: Path, where: str, spec: dict) -> None:
    """k1, b and hits in the ranges the bm25 verb's flags accept (the same validators), and a field layout."""
    from dupmae_eval.options import check_bm25_settings

    check_bm25_settings(f"{path}: {where}: ", **{key: spec[key] for key in ("k1", "b", "hits", "fields")
                                                  if key in spec})


def _check_model_condition(path: Path, where: str, spec: dict) -> None:
    """The encoder kind and retrieval mode are registered and fit together; the settings are valid."""
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.options import translate
    from dupmae_eval.retrieval.modes import retrieval_mode

    try:
        check_model_reference(str(spec["model"]))
        overrides, _ = translate(spec)
        settings = EncoderSettings.for_kind(spec["encoder"], **overrides)
        retrieval_mode(spec["retrieval"]).check(settings)
    except DupMAEEvalError as exc:
        raise DupMAEEvalError(f"{path}: {where}: {exc}") from None


def check_model_reference(name: str) -> None:
    """What can be checked of a model without loading it or asking the hub: a packaged model's folder
    exists, and a name that is a path (starts with '.', '/' or '~', or has more than one '/', as
    `model.resolve_checkpoint` reads it) is a folder. Hub names are checked when the cell runs."""
    from dupmae_eval.encoding.checkpoint import _package_folder

    if name.startswith("package:"):
        _package_folder(name)
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        return
    if folder.exists() or name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise DupMAEEvalError(f"model {name!r}: no such folder")


def _index_stats(path: Path, where: str, raw: Any, known) -> Dict[str, Dict[str, int]]:
    """`index_stats: {dataset: {documents: N, ...}}`: whole numbers, statistics Anserini names."""
    if not isinstance(raw, dict):
        raise DupMAEEvalError(f"{path}: {where}: index_stats: expected a mapping of dataset -> statistics")
    stats: Dict[str, Dict[str, int]] = {}
    for dataset_key, values in raw.items():
        if known is not None and dataset_key not in known:
            raise DupMAEEvalError(f"{path}: {where}: index_stats: {dataset_key!r} is not a dataset of this suite")
        if not isinstance(values, dict):
            raise DupMAEEvalError(f"{path}: {where}: index_stats: {dataset_key}: expected a mapping")
        for stat, value in values.items():
            if stat not in INDEX_STATS:
                raise DupMAEEvalError(f"{path}: {where}: index_stats: {dataset_key}: unknown statistic {stat!r} "
                                      f"(allowed: {', '.join(INDEX_STATS)})")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DupMAEEvalError(f"{path}: {where}: index_stats: {dataset_key}: {stat} must be a whole number")
        stats[str(dataset_key)] = dict(values)
    return stats


def _member_keys(entry: str) -> List[str]:
    """The cell keys an entry expands to; just the entry for one that cannot be resolved here (a local
    collection left unmapped because this run does not select it: `load_suite`'s `selected`)."""
    try:
        return [Cell("", dataset, split).key for dataset, split in expand_dataset(entry)]
    except DupMAEEvalError:
        return [entry]
