"""The reproduction runner: every cell of a suite -> run file + sidecar + metrics, checked against
the expected scores at the suite's precision (Anserini-regression style: a higher score than
expected is a FAIL to explain, not a pass)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .config import Cell, Suite, load_suite
from .datasets import lookup, resolve, units_of
from .results import MetricsRecord, write_metrics


@dataclass
class CellResult:
    cell: Cell
    run_path: Path
    scores: Dict[str, float]
    reused: bool
    index_stats: Optional[Dict[str, int]] = None   # a bm25 run's index statistics, from its sidecar


def run_path_for(runs_dir: Path, suite: Suite, cell: Cell) -> Path:
    """runs/<suite>/<condition>/<dataset>[.<split>].trec — the condition name is also the run tag."""
    return runs_dir / suite.name / cell.condition / f"{cell.key.replace('/', '.')}.trec"


def reproduce(suite_path: str | Path, runs_dir: Path, datasets: Optional[List[str]] = None,
              conditions: Optional[List[str]] = None, dry_run: bool = False, echo=print) -> List[str]:
    """Run (or reuse) every chosen cell, evaluate it, and return the OK/FAIL verdict lines."""
    suite = load_suite(suite_path)
    cells = suite.cells(datasets, conditions)
    if dry_run:
        for cell in cells:
            path = run_path_for(runs_dir, suite, cell)
            echo(f"{'reuse' if path.is_file() else 'run  '} {cell.condition:<28}{cell.key:<32}{path}")
        return []
    results = [run_cell(suite, cell, runs_dir) for cell in cells]
    verdicts = check_expected(suite, results)
    for line in verdicts:
        echo(line)
    return verdicts


def run_cell(suite: Suite, cell: Cell, runs_dir: Path) -> CellResult:
    """Compute the cell's run unless it exists; evaluate it; write its metrics (aggregate + per query)."""
    from .data import read_trec_run
    from .evaluate import evaluate
    from .options import translate
    from .pipeline import run_bm25, run_model

    condition = suite.conditions[cell.condition]
    output = run_path_for(runs_dir, suite, cell)
    data = resolve(cell.dataset)
    reused = output.is_file()
    if not reused:
        params = dict(condition.params)
        if condition.kind == "bm25":
            run_bm25(data, cell.split, params.pop("fields", "flat"), output, tag=cell.condition, **params)
        else:
            overrides, runner = translate(params)
            run_model(data, params["model"], params["encoder"], params["retrieval"], output,
                      split=cell.split, tag=cell.condition, **runner, **overrides)
    evaluation = evaluate(data.qrels(cell.split), read_trec_run(output), data.measures(cell.split))
    write_metrics(output, MetricsRecord(
        suite=suite.name, condition=cell.condition, dataset=cell.dataset, split=cell.split, key=cell.key,
        unit=lookup(cell.dataset).unit or cell.dataset, run=output.name, aggregate=evaluation.aggregate,
        per_query=evaluation.per_query))
    return CellResult(cell, output, evaluation.aggregate, reused, _sidecar(output).get("index_stats"))


def _sidecar(run_path: Path) -> dict:
    path = Path(f"{run_path}.meta.json")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def check_expected(suite: Suite, results: List[CellResult]) -> List[str]:
    """OK / FAIL per expected value (cells and unit averages), at the suite's precision."""
    lines = []
    by_key = {(r.cell.condition, r.cell.key): r.scores for r in results}
    for (condition, key), scores in sorted(by_key.items()):
        expected = suite.conditions[condition].expected.get(key, {})
        lines.extend(_verdicts(condition, key, scores, expected, suite.precision))
    for result in sorted(results, key=lambda r: (r.cell.condition, r.cell.key)):
        expected = suite.conditions[result.cell.condition].index_stats.get(result.cell.key, {})
        lines.extend(_index_verdicts(result, expected))
    for condition in {r.cell.condition for r in results}:
        for unit, expected in suite.conditions[condition].expected.items():
            members = units_of(unit)
            if len(members) > 1 and all((condition, m) in by_key for m in members):
                average = {m: sum(by_key[(condition, f)][m] for f in members) / len(members)
                           for m in expected if all(m in by_key[(condition, f)] for f in members)}
                lines.extend(_verdicts(condition, f"{unit} (mean of {len(members)})", average, expected,
                                       suite.precision))
    return lines


def _index_verdicts(result: CellResult, expected: Dict[str, int]) -> List[str]:
    """OK / FAIL per expected index statistic (exact counts, as Anserini's regressions check them)."""
    lines = []
    condition, key = result.cell.condition, result.cell.key
    for stat, target in expected.items():
        label = f"index {stat}"
        ours = (result.index_stats or {}).get(stat)
        if ours is None:
            lines.append(f"FAIL  {condition:<26}{key:<28}{label:<30}not recorded in {result.run_path.name}.meta.json "
                         f"(delete the run to recompute it)")
            continue
        verdict = "OK  " if ours == target else "FAIL"
        note = "" if ours == target else f"  (differs by {ours - target:+d})"
        lines.append(f"{verdict}  {condition:<26}{key:<28}{label:<30}{ours}  expected {target}{note}")
    return lines


def _verdicts(condition: str, key: str, scores: Dict[str, float], expected: Dict[str, float], precision: int):
    lines = []
    for measure, value in scores.items():
        ours = round(value, precision)
        if measure not in expected:
            lines.append(f"  --  {condition:<26}{key:<28}{measure:<16}{ours:.{precision}f}  (no expected value)")
            continue
        target = round(float(expected[measure]), precision)
        if ours == target:
            verdict = "OK  "
        else:
            verdict = "FAIL"
        note = "" if ours == target else ("  higher than expected: unexplained" if ours > target else "  lower")
        lines.append(f"{verdict}  {condition:<26}{key:<28}{measure:<16}{ours:.{precision}f}  expected "
                     f"{target:.{precision}f}{note}")
    return lines
