"""Comparison tables over saved results: per-dataset rows, condition columns beside the paper's
reference columns, CQADupStack averaged into one unit first, averages labelled by what they cover,
deltas to a baseline with paired t-tests (Holm-Bonferroni across the table) from per-query scores.

Formats: Markdown, CSV, LaTeX, and a PNG chart of per-dataset deltas for people who would rather look.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dupmae_eval.data.datasets import coverage_label, lookup, unit_order, units_of
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.registry import Registry
from dupmae_eval.evaluation.results import MetricsRecord

SIGNIFICANCE_LEVEL = 0.05


@dataclass
class Table:
    measure: str
    rows: List[str]                                   # dataset units, in the paper's order where known
    columns: List[str]                                # our conditions, then reference columns
    values: Dict[Tuple[str, str], float]              # (row, column) -> score
    per_query: Dict[Tuple[str, str], Dict[str, float]]
    baseline: Optional[str]
    references: List[str] = field(default_factory=list)
    p_values: Dict[Tuple[str, str], float] = field(default_factory=dict)    # (row, column) -> Holm-adjusted p
    partial_units: Dict[Tuple[str, str], str] = field(default_factory=dict)

    def average(self, column: str) -> Tuple[Optional[float], str]:
        """Mean over the rows this column covers, and a label saying which: '18', '14 public', 'n of 18'."""
        covered = [row for row in self.rows if (row, column) in self.values
                   and (row, column) not in self.partial_units]
        if not covered:
            return None, "0"
        return float(np.mean([self.values[(row, column)] for row in covered])), coverage_label(self.rows, covered)


def build_table(results: Sequence[MetricsRecord], measure: str = "nDCG@10", baseline: Optional[str] = None,
                references: Optional[Dict[str, dict]] = None) -> Table:
    """Assemble a table from metrics records (`results.read_metrics`) plus reference columns."""
    values: Dict[Tuple[str, str], float] = {}
    per_query: Dict[Tuple[str, str], Dict[str, float]] = {}
    members: Dict[Tuple[str, str], List[MetricsRecord]] = {}
    for record in results:
        if measure not in record.aggregate:
            continue
        unit = record.unit or record.dataset
        row = unit if record.split == _default_split(record.dataset) else f"{unit}/{record.split}"
        members.setdefault((row, record.condition), []).append(record)
    partial: Dict[Tuple[str, str], str] = {}
    for (row, column), records in members.items():
        expected_members = units_of(row.split("/")[0])
        values[(row, column)] = float(np.mean([r.aggregate[measure] for r in records]))
        per_query[(row, column)] = {f"{r.dataset}:{qid}": v for r in records
                                    for qid, v in r.per_query.get(measure, {}).items()}
        if len(expected_members) > 1 and len(records) < len(expected_members):
            partial[(row, column)] = f"{len(records)}/{len(expected_members)} forums"
    if not values:
        found = sorted({name for record in results for name in record.aggregate})
        raise DupMAEEvalError(f"no results for measure {measure!r}" + (
            f"; the results hold {', '.join(found)} (a suite's `measures:` decides what reproduce records)"
            if found else ": no metrics files found"))
    conditions = sorted({column for _, column in values})
    if baseline is not None and baseline not in conditions:
        raise DupMAEEvalError(f"--baseline {baseline!r} is not among the conditions found: {', '.join(conditions)}")
    rows = sorted({row for row, _ in values}, key=unit_order)
    reference_columns = []
    for name, reference in (references or {}).items():
        if reference.get("measure", measure) != measure:
            continue
        reference_columns.append(name)
        for row, value in reference.get("values", {}).items():
            if isinstance(value, dict):
                value = value.get(measure)
            if value is not None:
                values[(row, name)] = float(value)
                if row not in rows:
                    rows.append(row)
    rows.sort(key=unit_order)
    table = Table(measure, rows, conditions + reference_columns, values, per_query, baseline, reference_columns,
                  partial_units=partial)
    if baseline:
        table.p_values = paired_tests(table)
    return table


def _default_split(dataset: str) -> str:
    try:
        return lookup(dataset).default_split
    except DupMAEEvalError:
        return "test"


def paired_tests(table: Table) -> Dict[Tuple[str, str], float]:
    """Paired t-test per (dataset, condition) against the baseline over the same judged queries,
    Holm-Bonferroni-adjusted across every comparison in the table."""
    from scipy.stats import ttest_rel

    raw = {}
    for row in table.rows:
        base = table.per_query.get((row, table.baseline))
        if not base:
            continue
        for column in table.columns:
            other = table.per_query.get((row, column))
            if column == table.baseline or not other:
                continue
            shared = sorted(set(base) & set(other))
            a, b = np.array([other[q] for q in shared]), np.array([base[q] for q in shared])
            if len(shared) < 2 or np.allclose(a, b):
                raw[(row, column)] = 1.0
                continue
            raw[(row, column)] = float(ttest_rel(a, b).pvalue)
    return holm(raw)


def holm(p_values: Dict[Tuple[str, str], float]) -> Dict[Tuple[str, str], float]:
    """Holm-Bonferroni step-down adjusted p-values (monotone, capped at 1)."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[key] = running
    return adjusted


# --------------------------------------------------------------------------- rendering


def _cell(table: Table, row: str, column: str, latex: bool = False) -> str:
    value = table.values.get((row, column))
    if value is None:
        return "–" if not latex else "--"
    text = f"{value:.4f}" if column not in table.references else f"{value:.3f}"
    p = table.p_values.get((row, column))
    if p is not None and p < SIGNIFICANCE_LEVEL:
        text += "$^\\dagger$" if latex else "†"
    if (row, column) in table.partial_units:
        text += f" ({table.partial_units[(row, column)]})"
    return text


def _delta(table: Table, row: str, column: str) -> str:
    a, b = table.values.get((row, column)), table.values.get((row, table.baseline))
    return "–" if a is None or b is None else f"{a - b:+.4f}"


def _grid(table: Table, latex: bool = False) -> Tuple[List[str], List[List[str]]]:
    compared = [c for c in table.columns if table.baseline and c != table.baseline and c not in table.references]
    header = ["dataset"] + table.columns + [f"Δ {c}" for c in compared]
    body = [[row] + [_cell(table, row, c, latex) for c in table.columns] + [_delta(table, row, c) for c in compared]
            for row in table.rows]
    averages = ["average (datasets covered)"]
    for column in table.columns:
        value, label = table.average(column)
        averages.append("–" if value is None else f"{value:.4f} ({label})")
    averages += [""] * len(compared)
    return header, body + [averages]


def _markdown(table: Table) -> str:
    header, body = _grid(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n\n" + _legend(table) + "\n"


def _csv(table: Table) -> str:
    header, body = _grid(table)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def _latex(table: Table) -> str:
    header, body = _grid(table, latex=True)
    escape = lambda text: text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("Δ", "$\\Delta$")  # noqa: E731
    lines = ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
             " & ".join(escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(escape(c) if "$" not in c else c for c in row) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "% " + _legend(table)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TableFormat:
    name: str
    render: Callable[[Table], str | bytes]
    binary: bool            # True: bytes that need an output file (a picture)


TABLE_FORMATS: Registry[TableFormat] = Registry("--format")
register_table_format = TABLE_FORMATS.register


def render(table: Table, fmt: str) -> str | bytes:
    return TABLE_FORMATS.lookup(fmt).render(table)


def _legend(table: Table) -> str:
    text = f"{table.measure}; averages over the datasets each column covers (label in brackets)."
    if table.baseline:
        text += (f" Δ: difference to {table.baseline}; † significant at {SIGNIFICANCE_LEVEL} (paired t-test over "
                 f"per-query scores, Holm-Bonferroni across the table).")
    if table.references:
        text += " Reference columns are published figures (3 decimals as printed)."
    return text


def _chart(table: Table) -> bytes:
    """Horizontal bars: per-dataset delta of each condition to the baseline (or raw scores without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c != table.baseline]
    rows = table.rows
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.45 * len(rows) * max(1, len(columns)) ** 0.5))
    height = 0.8 / max(1, len(columns))
    for index, column in enumerate(columns):
        deltas = []
        for row in rows:
            value, base = table.values.get((row, column)), table.values.get((row, table.baseline)) if table.baseline else 0.0
            deltas.append(np.nan if value is None or base is None else value - base)
        positions = np.arange(len(rows)) + index * height
        bars = axis.barh(positions, deltas, height=height, label=column)
        for row_index, row in enumerate(rows):
            p = table.p_values.get((row, column))
            if p is not None and p < SIGNIFICANCE_LEVEL and not np.isnan(deltas[row_index]):
                axis.text(deltas[row_index], positions[row_index], " †", va="center")
        del bars
    axis.set_yticks(np.arange(len(rows)) + 0.4 - height / 2)
    axis.set_yticklabels(rows)
    axis.invert_yaxis()
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlabel(f"{table.measure} − {table.baseline}" if table.baseline else table.measure)
    axis.set_title(f"Per-dataset {table.measure}" + (f" relative to {table.baseline}" if table.baseline else ""))
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=120)
    plt.close(figure)
    return out.getvalue()


register_table_format(TableFormat("md", _markdown, binary=False))
register_table_format(TableFormat("csv", _csv, binary=False))
register_table_format(TableFormat("latex", _latex, binary=False))
register_table_format(TableFormat("png", _chart, binary=True))
