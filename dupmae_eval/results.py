"""The metrics record: what `reproduce` writes beside every run and what `table` reads.

One record per cell: `<run>.metrics.json` with the suite, condition, dataset, split, the key the
suite's expectations use, the BEIR unit it averages into, the aggregate values and the per-query
values of every measure (for paired tests). The writer and the reader live here, and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List

from .errors import DupMAEEvalError


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


def metrics_path_for(run_path: Path) -> Path:
    return run_path.with_suffix(".metrics.json")


def write_metrics(run_path: Path, record: MetricsRecord) -> Path:
    from . import cache

    path = metrics_path_for(run_path)
    cache.write_json(path, asdict(record))
    return path


def read_metrics(paths: Iterable[Path]) -> List[MetricsRecord]:
    """Every *.metrics.json under the given files or folders, as records."""
    found = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("*.metrics.json"))
        if not files:
            raise DupMAEEvalError(f"{path}: no *.metrics.json results here (run `dupmae-eval reproduce` first)")
        for file in files:
            try:
                raw = json.loads(file.read_text())
            except json.JSONDecodeError as exc:
                raise DupMAEEvalError(f"{file}: not valid JSON ({exc.msg})") from None
            try:
                found.append(MetricsRecord(**raw))
            except TypeError as exc:
                raise DupMAEEvalError(f"{file}: not a metrics record ({exc})") from None
    return found
