"""The reproduction runner: every cell of a suite -> run file + sidecar + metrics, checked against
the expected scores at the suite's precision (Anserini-regression style: a higher score than
expected is a FAIL to explain, not a pass)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dupmae_eval import cache
from dupmae_eval.evaluation.suites import Cell, Suite, load_suite
from dupmae_eval.data.datasets import lookup, resolve, units_of
from dupmae_eval.data.formats import forget_run_records, judgments_digest, queries_digest
from dupmae_eval.evaluation.results import MetricsRecord, write_metrics


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


IDENTITY_KEY = "cell_identity"
"""The sidecar key holding what made a reproduce cell's run (`cell_identity`); a run is reused only when it
equals what the cell would be made from now."""


def reproduce(suite_path: str | Path, runs_dir: Path, datasets: Optional[List[str]] = None,
              conditions: Optional[List[str]] = None, dry_run: bool = False, echo=print,
              force: bool = False) -> List[str]:
    """Run (or reuse) every chosen cell, evaluate it, and return the OK/FAIL verdict lines. A cell's run is
    reused only when what made it is identical (`reuse_decision`); `force` redoes every chosen cell. When
    a cell fails, the verdicts of the cells already finished are printed before the error goes up."""
    suite = load_suite(suite_path, selected=datasets)
    cells = suite.cells(datasets, conditions)
    if dry_run:
        for cell in cells:
            path = run_path_for(runs_dir, suite, cell)
            action, why = reuse_decision(path, cell_identity(suite, cell), force)
            echo(f"{action:<5} {cell.condition:<28}{cell.key:<32}{path}" + (f"  ({why})" if why else ""))
        return []
    check_model_lengths(suite, cells)
    results: List[CellResult] = []
    try:
        for cell in cells:
            results.append(run_cell(suite, cell, runs_dir, force=force, echo=echo))
    finally:
        verdicts = check_expected(suite, results)
        for line in verdicts:
            echo(line)
    return verdicts


def check_model_lengths(suite: Suite, cells: List[Cell]) -> None:
    """Each chosen model condition's token lengths against its model's position count, before the first cell
    runs: otherwise a condition asking for more positions than its model has would fail only when its turn
    came, after the cells before it had run. Only the config is read. A hub model not yet in the local cache
    is checked by its own run, once fetched (nothing is downloaded here)."""
    from dupmae_eval.encoding.checkpoint import cached_checkpoint, check_lengths, read_config
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.errors import DupMAEEvalError
    from dupmae_eval.options import translate

    for name in dict.fromkeys(cell.condition for cell in cells):
        condition = suite.conditions[name]
        if condition.kind != "model":
            continue
        found = cached_checkpoint(str(condition.params["model"]))
        config = found[0] / "config.json" if found is not None else None
        if config is None or not config.is_file():
            continue                        # the run says what is wrong with it
        settings = EncoderSettings.for_kind(condition.params["encoder"], **translate(condition.params)[0])
        try:
            check_lengths(settings.lengths(), read_config(config).get("max_position_embeddings", 512), config)
        except DupMAEEvalError as exc:
            raise DupMAEEvalError(f"{suite.path}: conditions: {name}: {exc}") from None


def cell_identity(suite: Suite, cell: Cell) -> dict:
    """Everything that makes a cell's run file: the condition's parameters as the suite gives them, the
    dataset, split and corpus (its SHA-256, so `--data NAME=FOLDER` pointing elsewhere is another run), the
    split's queries as the run searches them (a digest of their ids and texts, `queries_digest`: an edited
    queries file, or judgments that pick another BEIR subset, is another run), and what the parameters resolve
    to on this machine with this code:

    - bm25: the index folder `bm25_index` would use (its name holds the corpus, the fields and Anserini's
      version), so a new Anserini, which rebuilds the index, redoes the run too;
    - model: the checkpoint's content (its files hashed, as encodings' keys hash them) and revision (a hub
      model's snapshot commit in the local Hugging Face cache; nothing is downloaded to decide reuse), the
      precision as it resolves here (`precision: auto` is bf16 on one CPU and fp32 on another), the encoding
      folder `encode_corpus` would make (its name holds the settings, the batch size, the arithmetic's version
      and the format) and, for a mode that searches a Lucene impact index, that index's folder (Anserini's
      version). Whatever remakes the encoding or an index therefore redoes the run made from it.

    A hub model that is not in the local cache cannot be fingerprinted offline: its identity says so, and
    never equals a recorded one, so the cell is redone (`run_cell` records the identity once the run has
    fetched the model). The judgments and the measures are not in it: `run_cell` scores the run against the
    judgments as they are now every time, reused or not, so they cannot go stale in a metrics record (a hybrid
    run's sidecar audit alone holds scores of the judgments it was made with; the run itself never uses
    them)."""
    from dupmae_eval.retrieval.indexes import bm25_index_folder

    condition = suite.conditions[cell.condition]
    data = resolve(cell.dataset)
    identity = {"kind": condition.kind, "params": json.loads(json.dumps(condition.params, sort_keys=True,
                                                                        default=str)),
                "dataset": cell.dataset, "split": cell.split, "corpus_sha256": data.corpus_fingerprint(),
                "queries": queries_digest(data.queries(cell.split))}
    if condition.kind == "bm25":
        identity["index"] = bm25_index_folder(data, condition.params.get("fields", "flat")).name
    if condition.kind == "model":
        identity.update(_model_identity(data, condition.params))
    return identity


HUB_MODEL_NOT_CACHED = "not in the local Hugging Face cache"


def _model_identity(data, params: dict) -> dict:
    """A model condition's part of `cell_identity`: checkpoint content and revision, resolved precision, and
    the encoding (and impact index) folders its run is made from."""
    import inspect

    from dupmae_eval.encoding.checkpoint import cached_checkpoint
    from dupmae_eval.encoding.corpus import encoding_folder_of, folder_fingerprint, folder_tokenization_digest
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.encoding.precision import resolve_precision
    from dupmae_eval.options import translate
    from dupmae_eval.retrieval.indexes import impact_index_folder
    from dupmae_eval.retrieval.jobs import run_model
    from dupmae_eval.retrieval.modes import retrieval_mode

    overrides, runner = translate(params)
    defaults = {name: p.default for name, p in inspect.signature(run_model).parameters.items()}
    precision = resolve_precision(runner.get("precision"), runner.get("device"))
    found = cached_checkpoint(str(params["model"]))
    if found is None:
        return {"model_content": f"hub:{params['model']}", "model_revision": HUB_MODEL_NOT_CACHED,
                "precision": precision, "encoding": None}
    folder, revision = found
    fingerprint = folder_fingerprint(folder)
    settings = EncoderSettings.for_checkpoint(params["encoder"], folder, **overrides)
    device_type = (runner.get("device") or "cpu").split(":")[0]   # as the encoders place the model: cpu unless told
    encoding = encoding_folder_of(data, fingerprint, settings, runner.get("batch_size", defaults["batch_size"]),
                                  precision, device_type, bool(runner.get("compile", False)),
                                  folder_tokenization_digest(folder)).name
    identity = {"model_content": fingerprint, "model_revision": revision, "precision": precision,
                "encoding": encoding}
    if retrieval_mode(params["retrieval"]).impact_index:
        scale = runner.get("quantization_scale", defaults["quantization_scale"])
        identity["index"] = impact_index_folder(encoding, scale).name
    return identity


def reuse_decision(run_path: Path, identity: dict, force: bool = False) -> Tuple[str, str]:
    """('reuse' | 'run' | 'redo', why): reuse only a run whose sidecar records this very identity."""
    if not run_path.is_file():
        return "run", ""
    if force:
        return "redo", "--force"
    recorded = _sidecar(run_path).get(IDENTITY_KEY)
    if not isinstance(recorded, dict):
        return "redo", "no record of what made it (sidecar missing, unreadable or from an older version)"
    unrecorded = sorted(key for key in identity if key not in recorded)
    if unrecorded:
        return "redo", f"its record lacks {', '.join(unrecorded)} (an older version made it)"
    if identity.get("model_revision") == HUB_MODEL_NOT_CACHED:
        return "redo", f"{identity['model_content'][4:]} is not in the local Hugging Face cache, so nothing says " \
                       f"the run was made from the model it would fetch"
    differ = sorted({key for key in set(identity) | set(recorded) if identity.get(key) != recorded.get(key)})
    if differ:
        if "params" in differ:
            old, new = recorded.get("params") or {}, identity["params"]
            differ.remove("params")
            differ += [f"{key}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        return "redo", f"{', '.join(differ)} changed since it was made"
    return "reuse", ""


def run_cell(suite: Suite, cell: Cell, runs_dir: Path, force: bool = False, echo=print) -> CellResult:
    """Compute the cell's run unless an identical one exists; evaluate it; write its metrics (aggregate +
    per query) with the suite's measures (the dataset's when the suite names none)."""
    from dupmae_eval.data.formats import read_trec_run
    from dupmae_eval.evaluation.measures import evaluate_checked
    from dupmae_eval.options import translate
    from dupmae_eval.retrieval.jobs import run_bm25, run_model

    condition = suite.conditions[cell.condition]
    output = run_path_for(runs_dir, suite, cell)
    data = resolve(cell.dataset)
    identity = cell_identity(suite, cell)
    action, why = reuse_decision(output, identity, force)
    reused = action == "reuse"
    if action == "redo":
        echo(f"redo  {cell.condition:<28}{cell.key:<32}({why})")
    if not reused:
        # the old sidecar holds the old cell identity: gone before the long work, so a redo interrupted at any
        # point, or refused (a run in which no query retrieved anything is never written: `jobs._written`),
        # leaves a run that is redone next time, never one reused under the identity it no longer has
        forget_run_records(output)
        params = dict(condition.params)
        if condition.kind == "bm25":
            run_bm25(data, cell.split, params.pop("fields", "flat"), output, tag=cell.condition, **params)
        else:
            overrides, runner = translate(params)
            run_model(data, params["model"], params["encoder"], params["retrieval"], output,
                      split=cell.split, tag=cell.condition, **runner, **overrides)
        if identity.get("model_revision") not in (None, "local", "package"):
            identity = cell_identity(suite, cell)       # a hub model: the run may have fetched another snapshot
        sidecar = Path(f"{output}.meta.json")
        cache.write_json(sidecar, {**_sidecar(output), IDENTITY_KEY: identity})
    judgments = data.qrels(cell.split)
    evaluation = evaluate_checked(judgments, read_trec_run(output),
                                  suite.measures or data.measures(cell.split), f"; no judged query of {data.root} (split {cell.split}) got a hit",
                                  label=f"{cell.condition} {cell.key}: ")
    write_metrics(output, MetricsRecord(
        suite=suite.name, condition=cell.condition, dataset=cell.dataset, split=cell.split, key=cell.key,
        unit=lookup(cell.dataset).unit or cell.dataset, run=output.name, aggregate=evaluation.aggregate,
        per_query=evaluation.per_query, corpus_sha256=identity["corpus_sha256"], queries_digest=identity["queries"],
        judgments_digest=judgments_digest(judgments)))
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
