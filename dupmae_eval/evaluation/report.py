"""The HTML report: one self-contained page of a comparison (datasets x conditions, several measures),
readable offline and printable.

What it holds, per measure: the matrix in suite order with the published reference columns kept apart,
averages labelled by what they cover, and in every measured cell its value, its delta to the baseline and
a significance mark, expanding to the p-value, the 95 % bootstrap CI of the delta, the queries won, lost
and tied, and the command that makes the run again (rebuilt from the run's sidecar); a chart of the deltas
per dataset and, per dataset, the sorted per-query differences. Then, per condition, where its runs came
from (model and revision, encoder settings, toolkit version and commit, hardware, date, corpus SHA-256).

The numbers are `tables.build_table`'s, so the report and `table --format md` cannot disagree. CSS,
script and charts (SVG) are inline; the page loads nothing.

The statistics are the table's (`statistics.py` through `tables.build_table`): the same test, correction,
alpha, bootstrap interval and won/lost counts as `table` prints, so the page and `table` agree to the digit.
"""

from __future__ import annotations

import html
import json
import math
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dupmae_eval import __version__
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.results import MetricsRecord, SIDECAR_SUFFIX
from dupmae_eval.evaluation.statistics import CORRECTION_NAMES, DEFAULT_ALPHA, TEST_NAMES
from dupmae_eval.evaluation.tables import Table, build_table, format_p

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D1F", "#000000")
"""Okabe-Ito colours (told apart with the common colour-vision deficiencies), one per condition."""
WON, LOST, TIED = "#0072B2", "#D55E00", "#6e7781"


# --------------------------------------------------------------------------- the report's data


@dataclass
class Cell:
    """One measured (dataset, condition) cell of one measure."""

    row: str
    column: str
    value: float
    text: str                                    # as `table --format md` prints it, without marks
    delta: Optional[float] = None
    delta_text: str = ""
    p_value: Optional[float] = None              # raw
    p_adjusted: Optional[float] = None           # after the correction: what the mark means
    p_text: str = "–"                            # the corrected p as `table` prints it
    significant: bool = False
    ci: Optional[Tuple[float, float]] = None
    ci_text: str = "–"                           # as `table` prints it
    won: int = 0
    lost: int = 0
    tied: int = 0
    queries: int = 0
    partial: str = ""
    deltas: List[float] = field(default_factory=list, repr=False)     # per query, for the chart
    runs: List["RunInfo"] = field(default_factory=list, repr=False)


@dataclass
class RunInfo:
    """A run behind a cell: its file, its sidecar (None when missing), and the commands that make it again."""

    path: Path
    record: MetricsRecord
    meta: Optional[dict]
    commands: List[str]


@dataclass
class Section:
    """One measure: its matrix, averages and charts."""

    measure: str
    slug: str
    rows: List[str]
    conditions: List[str]                        # measured, suite order
    references: List[str]                        # published columns
    cells: Dict[Tuple[str, str], Cell]
    reference_values: Dict[Tuple[str, str], float]
    averages: Dict[str, Tuple[Optional[float], str]]
    average_deltas: Dict[str, Optional[float]]
    delta_chart: str = ""
    query_charts: Dict[str, List[Tuple[str, str, str]]] = field(default_factory=dict)  # row -> (cond, caption, svg)

    def cell(self, row: str, column: str) -> Optional[Cell]:
        return self.cells.get((row, column))


@dataclass
class Report:
    title: str
    baseline: Optional[str]
    suite: Optional[str]
    inputs: List[str]
    sections: List[Section]
    conditions: List[dict]                       # name, colour, description, provenance fields
    references: Dict[str, dict]
    generated: str
    tool: str = f"dupmae-eval {__version__}"
    alpha: float = DEFAULT_ALPHA
    ci_level: float = 0.95
    test: str = TEST_NAMES["t"]
    correction: str = CORRECTION_NAMES["holm"]


def build_report(found: Sequence[Tuple[MetricsRecord, Path]], suite=None, suite_argument: Optional[str] = None,
                 baseline: Optional[str] = None, measures: Optional[Sequence[str]] = None,
                 inputs: Sequence[str] = (), test: str = "t", correction: str = "holm",
                 alpha: float = DEFAULT_ALPHA) -> Report:
    """The report of `found` (`results.read_metrics_with_runs`): `suite` (a loaded `Suite`) gives the order of
    conditions and datasets, their descriptions and the reference columns; `suite_argument` is how the suite was
    named on the command line (for the reproducing commands); `test`, `correction` and `alpha` as `table`'s."""
    records = [record for record, _ in found]
    available: List[str] = []
    for name in [*(suite.measures if suite else ()), *(m for r in records for m in r.aggregate)]:
        if name not in available and any(name in r.aggregate for r in records):
            available.append(name)
    if not available:
        raise DupMAEEvalError("no results found")
    chosen = list(measures) if measures else available
    missing = [m for m in chosen if m not in available]
    if missing:
        raise DupMAEEvalError(f"--measures: no results for {', '.join(missing)}; the results hold "
                              f"{', '.join(available)}")
    references = suite.references if suite else {}
    runs = _runs(found, suite, suite_argument)
    order = list(suite.conditions) if suite else None
    sections = [_section(build_table(records, measure, baseline, references, test=test, correction=correction,
                                     alpha=alpha, order=order), suite, runs, index)
                for index, measure in enumerate(chosen)]
    conditions = _conditions(sections, suite, runs)
    for section in sections:
        colours = {c["name"]: c["colour"] for c in conditions}
        section.delta_chart = delta_chart(section, colours, alpha)
        section.query_charts = query_charts(section, baseline)
    return Report(
        title=f"{suite.name}: comparison" if suite else "Comparison", baseline=baseline,
        suite=suite_argument, inputs=list(inputs), sections=sections, conditions=conditions,
        references={name: reference for name, reference in references.items()
                    if any(name in s.references for s in sections)},
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"), alpha=alpha, test=TEST_NAMES[test],
        correction=CORRECTION_NAMES[correction])


def _suite_rows(suite) -> List[str]:
    from dupmae_eval.evaluation.results import default_split as _default_split

    rows = []
    for entry in suite.datasets if suite else ():
        name, _, split = str(entry).partition("/")
        rows.append(name if not split or split == _default_split(name) else f"{name}/{split}")
    return rows


def _ordered(found: Sequence[str], order: Sequence[str]) -> List[str]:
    """`found` in `order` first, the rest as they came."""
    return [name for name in order if name in found] + [name for name in found if name not in order]


def _row_of(record: MetricsRecord) -> str:
    from dupmae_eval.evaluation.results import table_row

    return table_row(record)


def _runs(found, suite, suite_argument) -> Dict[Tuple[str, str], List[RunInfo]]:
    runs: Dict[Tuple[str, str], List[RunInfo]] = {}
    for record, path in found:
        meta = read_sidecar(path)
        commands = reproducing_commands(record, path, meta, suite, suite_argument)
        runs.setdefault((_row_of(record), record.condition), []).append(RunInfo(path, record, meta, commands))
    return runs


def read_sidecar(run_path: Path) -> Optional[dict]:
    sidecar = Path(f"{run_path}{SIDECAR_SUFFIX}")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _section(table: Table, suite, runs, index: int) -> Section:
    measured = [c for c in table.columns if c not in table.references]
    conditions = _ordered(measured, list(suite.conditions) if suite else [])
    rows = _ordered(table.rows, _suite_rows(suite))
    cells: Dict[Tuple[str, str], Cell] = {}
    for row in rows:
        for column in conditions:
            value = table.values.get((row, column))
            if value is None:
                continue
            cell = Cell(row, column, value, f"{value:.4f}", partial=table.partial_units.get((row, column), ""),
                        runs=runs.get((row, column), []))
            cells[(row, column)] = cell
            base_value = table.values.get((row, table.baseline)) if table.baseline else None
            if base_value is None or column == table.baseline:
                continue
            cell.delta = value - base_value
            cell.delta_text = f"{cell.delta:+.4f}"
            comparison = table.comparisons.get((row, column))
            if comparison is None:
                continue
            cell.p_value, cell.p_adjusted = table.raw_p_values[(row, column)], table.p_values[(row, column)]
            cell.p_text = format_p(cell.p_adjusted)
            cell.significant = table.significant(row, column)
            if not math.isnan(comparison.ci_low):
                cell.ci = (comparison.ci_low, comparison.ci_high)
                cell.ci_text = f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
            cell.won, cell.lost, cell.tied, cell.queries = (comparison.won, comparison.lost, comparison.tied,
                                                            comparison.queries)
            base, other = table.per_query[(row, table.baseline)], table.per_query[(row, column)]
            cell.deltas = sorted((other[q] - base[q] for q in set(base) & set(other)), reverse=True)
    averages = {column: table.average(column) for column in conditions + table.references}
    average_deltas: Dict[str, Optional[float]] = {}
    if table.baseline:
        base_value, base_label = averages.get(table.baseline, (None, ""))
        for column in conditions:
            value, label = averages[column]
            same = [r for r in rows if (r, column) in cells] == [r for r in rows if (r, table.baseline) in cells]
            average_deltas[column] = (value - base_value if column != table.baseline and value is not None
                                      and base_value is not None and label == base_label and same else None)
    reference_values = {(row, column): table.values[(row, column)] for row in rows for column in table.references
                        if (row, column) in table.values}
    return Section(table.measure, _slug(table.measure, index), rows, conditions, list(table.references), cells,
                   reference_values, averages, average_deltas)


def _slug(text: str, index: int) -> str:
    """An id for a measure's section: its position (unique) and its name in letters and digits (readable)."""
    return f"m{index}-" + "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


# --------------------------------------------------------------------------- reproducing commands


def reproducing_commands(record: MetricsRecord, run_path: Path, meta: Optional[dict], suite=None,
                         suite_argument: Optional[str] = None) -> List[str]:
    """The command that writes this very run again (`bm25`, `run` or `fuse` with every setting the sidecar
    records), and for a run that `reproduce` made, the suite's cell too. Empty without a sidecar."""
    if meta is None:
        return []
    commands = []
    direct = _direct_command(meta, run_path)
    if direct:
        commands.append(direct)
    if meta.get("cell_identity") and record.suite:
        suite_name = suite_argument if suite is not None and suite.name == record.suite and suite_argument \
            else record.suite
        entry = record.key if (record.unit or record.dataset) == record.dataset else record.unit
        runs_dir = run_path.parent.parent.parent
        folder = _own_folder(meta)
        mapping = ["--data", f"{record.dataset}={folder}"] if folder else []
        commands.append(_join(["dupmae-eval", "reproduce", suite_name, "--datasets", entry,
                               "--conditions", record.condition, *mapping, "--runs", str(runs_dir)]))
    return commands


def _own_folder(meta: dict) -> Optional[str]:
    """The folder a run's dataset was read from when its name alone would not find that data again: a
    folder given by path or mapped to a name (`--data NAME=FOLDER`, DUPMAE_EVAL_DATA), a registry name
    mapped to other data included (msmarco-passage to a sample: the name alone would download the whole
    corpus). None for a registry dataset read from its own place, bundled or downloaded."""
    from dupmae_eval import cache
    from dupmae_eval.data.datasets import BUNDLED_DATA, REGISTRY

    name, root = str(meta.get("dataset", "")), meta.get("dataset_root")
    if not root or name.startswith("irds:") or not Path(root).is_dir():
        return None                     # an ir_datasets id (found by its name), or a folder no longer here
    own = {(BUNDLED_DATA / name).resolve(), (cache.home() / "datasets" / name).resolve()}
    return None if name in REGISTRY and Path(root).resolve() in own else str(root)


def _dataset_argument(meta: dict) -> str:
    return _own_folder(meta) or str(meta.get("dataset", ""))


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fuse_command(fusion: dict, meta: dict, run_path: Path) -> Optional[str]:
    """`fuse` with the inputs (their paths as the sidecar records them) and every setting it records."""
    inputs = [str(run.get("path", "")) for run in fusion.get("inputs") or []]
    if len(inputs) < 2 or not all(inputs) or not fusion.get("method"):
        return None
    words = ["dupmae-eval", "fuse", *inputs, "--method", str(fusion["method"])]
    if fusion.get("k") is not None:
        words += ["--k", repr(float(fusion["k"]))]
    if fusion.get("method") != "rrf" and fusion.get("norm"):
        words += ["--norm", str(fusion["norm"])]
    if fusion.get("weights"):
        words += ["--weights", *(repr(float(weight)) for weight in fusion["weights"])]
    words += ["--hits", _number(fusion.get("hits", 1000)), "--tag", str(meta.get("condition", "")),
              "--output", str(run_path)]
    if meta.get("run_format") not in (None, "trec"):
        words += ["--run-format", str(meta["run_format"])]
    return _join(words)


def _direct_command(meta: dict, run_path: Path) -> Optional[str]:
    if isinstance(meta.get("fusion"), dict):
        return _fuse_command(meta["fusion"], meta, run_path)
    retrieval = meta.get("retrieval") or {}
    common = ["--dataset", _dataset_argument(meta), "--split", str(meta.get("split", ""))]
    tail = (["--keep-query-hit"] if retrieval.get("remove_query_hit") is False else []) + \
        ["--tag", str(meta.get("condition", "")), "--output", str(run_path)] + \
        (["--run-format", str(meta["run_format"])] if meta.get("run_format") not in (None, "trec") else [])
    if retrieval.get("kind") == "bm25":
        return _join(["dupmae-eval", "bm25", *common, "--fields", str(retrieval.get("fields", "flat")),
                      "--k1", _number(retrieval.get("k1", 0.9)), "--b", _number(retrieval.get("b", 0.4)),
                      "--hits", _number(retrieval.get("hits", 1000)), *tail])
    model, encoder = meta.get("model") or {}, meta.get("encoder") or {}
    if not model.get("source") or not encoder.get("kind") or not retrieval.get("mode"):
        return None
    words = ["dupmae-eval", "run", *common, "--model", str(model["source"]), "--encoder", str(encoder["kind"]),
             "--retrieval", str(retrieval["mode"])]
    if encoder.get("activation") is not None:
        words += ["--activation", str(encoder["activation"])]
    for key, flag in (("doc_topk", "--topk"), ("query_topk", "--query-topk")):
        if key in encoder:
            words += [flag, "all" if encoder[key] is None else _number(encoder[key])]
    if encoder.get("include_sep") is False:
        words.append("--exclude-sep")
    if encoder.get("normalize"):
        words.append("--normalize")
    for key in ("max_query_length", "max_passage_length"):
        if encoder.get(key) is not None:
            words += ["--" + key.replace("_", "-"), _number(encoder[key])]
    words += ["--hits", _number(retrieval.get("hits", 1000))]
    if retrieval.get("quantization_scale") is not None and retrieval["mode"] in ("impact", "hybrid"):
        words += ["--quantization-scale", _number(retrieval["quantization_scale"])]
    if meta.get("precision"):
        words += ["--precision", str(meta["precision"])]
    return _join(words + tail)


def _join(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


# --------------------------------------------------------------------------- provenance


def _conditions(sections: List[Section], suite, runs) -> List[dict]:
    names = _ordered([c for s in sections for c in s.conditions], list(suite.conditions) if suite else [])
    names = list(dict.fromkeys(names))
    found = []
    for index, name in enumerate(names):
        spec = suite.conditions.get(name) if suite else None
        description = (spec.params.get("description") if spec else None) or ""
        if suite is not None and spec is not None:
            raw = _suite_description(suite, name)
            description = raw or description
        condition_runs = [run for (row, column), items in sorted(runs.items()) if column == name for run in items]
        found.append({"name": name, "colour": PALETTE[index % len(PALETTE)], "description": description,
                      "kind": spec.kind if spec else "", "fields": provenance_fields(condition_runs)})
    return found


def _suite_description(suite, name: str) -> str:
    """A condition's `description` from the suite file (the loaded suite keeps only the parameters)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(suite.path).read_text())
        return str(((raw.get("conditions") or {}).get(name) or {}).get("description") or "")
    except (OSError, yaml.YAMLError, AttributeError):
        return ""


PROVENANCE_FIELDS = ("run", "model", "encoder", "retrieval", "toolkit", "commit", "hardware", "date",
                     "corpus SHA-256")


def provenance_fields(runs: List[RunInfo]) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """(field, [(scope, value)]) for a condition: one value when every run of the condition agrees, else one
    per dataset (scope = the dataset's key)."""
    fields = []
    for name in PROVENANCE_FIELDS:
        values = [(run.record.key, _provenance_value(name, run)) for run in runs]
        distinct = list(dict.fromkeys(value for _, value in values))
        fields.append((name, [("", distinct[0])] if len(distinct) == 1 else values))
    return fields


def _provenance_value(name: str, run: RunInfo) -> str:
    meta = run.meta
    if name == "run":
        return str(run.path)
    if meta is None:
        return f"not recorded (no {run.path.name}{SIDECAR_SUFFIX})"
    fusion = meta.get("fusion") if isinstance(meta.get("fusion"), dict) else None
    if fusion is not None and name in ("model", "encoder", "retrieval"):
        if name != "retrieval":
            return "none (a fusion of runs; see retrieval)"
        settings = ", ".join(f"{k}={fusion[k]}" for k in ("method", "k", "norm", "weights", "hits")
                             if fusion.get(k) is not None)
        inputs = ", ".join(f"{run['condition']} ({run.get('path')})" if run.get("condition") else str(run.get("path"))
                           for run in fusion.get("inputs") or [])
        return f"fuse: {settings}; inputs: {inputs}"
    if name == "model":
        model = meta.get("model")
        if not model:
            return "none (BM25)" if (meta.get("retrieval") or {}).get("kind") == "bm25" else "not recorded"
        return (f"{model.get('source')} @ {model.get('revision') or 'no revision recorded'}"
                + (f" (files {model['fingerprint']})" if model.get("fingerprint") else ""))
    if name == "encoder":
        encoder = meta.get("encoder")
        if not encoder:
            return "none (BM25)" if (meta.get("retrieval") or {}).get("kind") == "bm25" else "not recorded"
        text = ", ".join(f"{k}={'all' if v is None and k.endswith('topk') else v}" for k, v in encoder.items())
        return text + (f", precision={meta['precision']}" if meta.get("precision") else "")
    if name == "retrieval":
        return ", ".join(f"{k}={v}" for k, v in (meta.get("retrieval") or {}).items()) or "not recorded"
    if name == "toolkit":
        return str(meta.get("tool") or "not recorded")
    if name == "commit":
        return str(meta.get("git_commit") or "not recorded (not run from a git checkout)")
    if name == "hardware":
        hardware = meta.get("hardware") or {}
        parts = [str(hardware.get("cpu", "?")), f"{hardware.get('cores', '?')} cores"]
        if hardware.get("memory_gb"):
            parts.append(f"{hardware['memory_gb']} GB")
        if hardware.get("gpu"):
            parts.append(f"GPU {hardware['gpu']}")
        if hardware.get("python"):
            parts.append(f"Python {hardware['python']}")
        return ", ".join(parts) if hardware else "not recorded"
    if name == "date":
        if meta.get("date"):
            return str(meta["date"])
        try:
            stamp = datetime.fromtimestamp(run.path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            return f"{stamp} (the run file's time; the sidecar has no date)"
        except OSError:
            return "not recorded"
    if name == "corpus SHA-256":
        return f"{meta['corpus_sha256']} ({run.record.key})" if meta.get("corpus_sha256") else "not recorded"
    raise KeyError(name)


# --------------------------------------------------------------------------- charts (inline SVG)


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _ticks(low: float, high: float, count: int = 5) -> List[float]:
    span = high - low
    raw = span / max(1, count)
    magnitude = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = np.ceil(low / step) * step
    return [round(float(v), 10) for v in np.arange(first, high + step / 2, step) if low - 1e-12 <= v <= high + 1e-12]


def delta_chart(section: Section, colours: Dict[str, str], alpha: float = DEFAULT_ALPHA) -> str:
    """Horizontal bars: each compared condition's delta to the baseline, per dataset. The values are written in
    a column of their own at the right (no label over a bar), a zero delta is a visible diamond on the zero
    line, negative bars go left; solid bars are significant, pale ones are not. The legend sits above the
    plot, never over it. Reference columns are not here: they were not measured."""
    compared = [c for c in section.conditions if any(section.cells.get((r, c)) and section.cells[(r, c)].delta
                                                     is not None for r in section.rows)]
    if not compared:
        return ""
    deltas = [cell.delta for cell in section.cells.values() if cell.delta is not None]
    low, high = min(0.0, *deltas), max(0.0, *deltas)
    if high - low < 1e-9:
        low, high = -0.01, 0.01
    pad = (high - low) * 0.06
    low, high = low - (pad if low < 0 else 0), high + (pad if high > 0 else 0)
    width, left, right, values_width = 760, 150, 20, 110
    plot_width = width - left - right - values_width
    bar, gap, group_gap = 14, 3, 14
    legend_lines = _legend_lines(compared, width - 20)
    top = 16 + 22 * len(legend_lines) + 26
    group = len(compared) * (bar + gap) - gap
    height = top + len(section.rows) * (group + group_gap) + 44
    x = lambda v: left + (v - low) / (high - low) * plot_width  # noqa: E731
    parts = [f'<svg class="chart delta-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="Δ {_esc(section.measure)} to the baseline, per dataset">']
    for line_index, line in enumerate(legend_lines):
        for name, offset in line:
            y = 16 + 22 * line_index
            parts.append(f'<rect x="{10 + offset}" y="{y - 10}" width="12" height="12" fill="{colours[name]}"/>'
                         f'<text x="{10 + offset + 17}" y="{y}" class="legend">{_esc(name)}</text>')
    key_y = 16 + 22 * len(legend_lines)
    parts.append(f'<text x="10" y="{key_y}" class="note">solid: significant (corrected p &lt; {alpha:g}, marked †); '
                 f'pale: not; ◆: no difference</text>')
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 6}" y2="{height - 38}" class="grid"/>'
                     f'<text x="{x(tick):.1f}" y="{height - 24}" class="tick" text-anchor="middle">'
                     f'{"0" if tick == 0 else f"{tick:+.3g}"}</text>')
    parts.append(f'<text x="{left + plot_width / 2:.1f}" y="{height - 6}" class="axis" text-anchor="middle">'
                 f'Δ {_esc(section.measure)} (condition − baseline)</text>')
    parts.append(f'<text x="{width - right}" y="{top - 10}" class="axis" text-anchor="end">Δ</text>')
    for row_index, row in enumerate(section.rows):
        y0 = top + row_index * (group + group_gap)
        parts.append(f'<text x="{left - 8}" y="{y0 + group / 2 + 4:.1f}" class="label" text-anchor="end">'
                     f'{_esc(row)}</text>')
        for index, column in enumerate(compared):
            y = y0 + index * (bar + gap)
            cell = section.cells.get((row, column))
            title = f"{column} on {row}"
            if cell is None or cell.delta is None:
                parts.append(f'<text x="{width - right}" y="{y + bar - 3}" class="value" text-anchor="end">'
                             f'n/a</text>')
                continue
            opacity = "1" if cell.significant else "0.4"
            title += f": Δ {cell.delta_text}" + (" (significant)" if cell.significant else "")
            x_from, x_to = x(min(0.0, cell.delta)), x(max(0.0, cell.delta))
            if x_to - x_from < 1.5:
                cx, cy = x(cell.delta), y + bar / 2
                parts.append(f'<path d="M{cx:.1f} {cy - 6:.1f} L{cx + 6:.1f} {cy:.1f} L{cx:.1f} {cy + 6:.1f} '
                             f'L{cx - 6:.1f} {cy:.1f} Z" fill="{colours[column]}" stroke="#24292f" '
                             f'stroke-width="0.8"><title>{_esc(title)}</title></path>')
            else:
                parts.append(f'<rect x="{x_from:.1f}" y="{y}" width="{x_to - x_from:.1f}" height="{bar}" '
                             f'fill="{colours[column]}" fill-opacity="{opacity}" stroke="{colours[column]}">'
                             f'<title>{_esc(title)}</title></rect>')
            sign = "pos" if cell.delta > 1e-12 else "neg" if cell.delta < -1e-12 else "zero"
            parts.append(f'<text x="{width - right}" y="{y + bar - 3}" class="value {sign}" text-anchor="end">'
                         f'{_esc(cell.delta_text)}{" †" if cell.significant else ""}</text>')
    parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 6}" y2="{height - 38}" class="zero"/>')
    parts.append("</svg>")
    return "".join(parts)


def _legend_lines(names: Sequence[str], width: float) -> List[List[Tuple[str, float]]]:
    lines: List[List[Tuple[str, float]]] = [[]]
    offset = 0.0
    for name in names:
        size = 17 + 7.2 * len(name) + 18
        if lines[-1] and offset + size > width:
            lines.append([])
            offset = 0.0
        lines[-1].append((name, offset))
        offset += size
    return lines


def query_charts(section: Section, baseline: Optional[str]) -> Dict[str, List[Tuple[str, str, str]]]:
    """Per dataset, per compared condition: the per-query deltas sorted from the largest gain to the largest
    loss (bars above the line: queries won; below: lost; the grey stretch on the line: tied)."""
    charts: Dict[str, List[Tuple[str, str, str]]] = {}
    for row in section.rows:
        for column in section.conditions:
            cell = section.cells.get((row, column))
            if cell is None or not cell.deltas:
                continue
            caption = (f"{column} − {baseline} on {row}: {cell.won} won, {cell.lost} lost, {cell.tied} tied "
                       f"of {cell.queries} queries")
            charts.setdefault(row, []).append((column, caption, _query_chart(cell.deltas, section.measure, caption)))
    return charts


def _query_chart(deltas: Sequence[float], measure: str, caption: str) -> str:
    width, height, left, right, top, bottom = 520, 170, 48, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    extent = max((abs(d) for d in deltas), default=0.0) or 1.0
    n = len(deltas)
    step = plot_w / n
    zero = top + plot_h / 2
    y = lambda v: zero - v / extent * (plot_h / 2)  # noqa: E731
    won, lost, tied = [], [], []
    for index, delta in enumerate(deltas):
        cx = left + (index + 0.5) * step
        if delta > 1e-12:
            won.append(f"M{cx:.2f} {zero:.2f}V{y(delta):.2f}")
        elif delta < -1e-12:
            lost.append(f"M{cx:.2f} {zero:.2f}V{y(delta):.2f}")
        else:
            tied.append(index)
    stroke = max(0.6, min(step * 0.8, 6))
    parts = [f'<svg class="chart query-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{_esc(caption)}">']
    for value in (extent, extent / 2, 0.0, -extent / 2, -extent):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'class="{"zero" if value == 0 else "grid"}"/>'
                     f'<text x="{left - 4}" y="{y(value) + 4:.1f}" class="tick" text-anchor="end">{value:+.2f}</text>')
    if won:
        parts.append(f'<path d="{"".join(won)}" stroke="{WON}" stroke-width="{stroke:.2f}"/>')
    if lost:
        parts.append(f'<path d="{"".join(lost)}" stroke="{LOST}" stroke-width="{stroke:.2f}"/>')
    if tied:
        x0, x1 = left + tied[0] * step, left + (tied[-1] + 1) * step
        parts.append(f'<rect x="{x0:.1f}" y="{zero - 2.5:.1f}" width="{max(x1 - x0, 2):.1f}" height="5" '
                     f'fill="{TIED}"><title>{len(tied)} tied</title></rect>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" class="axis" text-anchor="middle">'
                 f'{n} queries, sorted by Δ {_esc(measure)} (won · tied · lost)</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- rendering


def render_html(report: Report) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from dupmae_eval.shipped import resource_path

    environment = Environment(loader=FileSystemLoader(str(resource_path("templates"))),
                              autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["p"] = format_p
    environment.filters["signed"] = lambda v: "–" if v is None else f"{v:+.4f}"
    return environment.get_template("report.html.j2").render(report=report)


def write_report(report: Report, output: Path) -> None:
    from dupmae_eval.files import atomic_output

    with atomic_output(output) as handle:
        handle.write(render_html(report))
