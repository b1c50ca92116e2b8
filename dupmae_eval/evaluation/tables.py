"""Comparison tables over saved results: per-dataset rows, condition columns (in the suite's order) beside the
paper's reference columns, CQADupStack averaged into one unit first, averages labelled by what they cover.
Against a baseline, each condition's Δ stands beside its value with its bootstrap 95 % CI and the p-value of
a paired test over per-query scores (Student's t, Fisher's randomization or Wilcoxon), corrected across
the table's comparisons (Holm, Bonferroni, Benjamini-Hochberg or none); † marks p < alpha.

Several measures render side by side, one table each (each measure is its own family of comparisons).
Formats: Markdown, CSV (one row per cell, every number in its own column), LaTeX, and a PNG chart of
per-dataset deltas for people who would rather look.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dupmae_eval.data.datasets import BEIR_UNITS, coverage_label, unit_order, units_of
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.results import MetricsRecord, cell_key, refuse_other_inputs, table_row
from dupmae_eval.evaluation.statistics import (CORRECTION_NAMES, DEFAULT_ALPHA, TEST_NAMES, Comparison, check_alpha,
                                               check_correction, check_test, compare, correct)
from dupmae_eval.registry import Registry

SIGNIFICANCE_LEVEL = DEFAULT_ALPHA          # the default --alpha


@dataclass
class Table:
    measure: str
    rows: List[str]                                   # dataset units, in the paper's order where known
    columns: List[str]                                # our conditions (suite order), then reference columns
    values: Dict[Tuple[str, str], float]              # (row, column) -> score
    per_query: Dict[Tuple[str, str], Dict[str, float]]
    baseline: Optional[str]
    references: List[str] = field(default_factory=list)
    p_values: Dict[Tuple[str, str], float] = field(default_factory=dict)    # (row, column) -> corrected p
    partial_units: Dict[Tuple[str, str], str] = field(default_factory=dict)
    raw_p_values: Dict[Tuple[str, str], float] = field(default_factory=dict)
    comparisons: Dict[Tuple[str, str], Comparison] = field(default_factory=dict)
    members: Dict[Tuple[str, str], Tuple[int, int]] = field(default_factory=dict)  # forums found, expected
    test: str = "t"
    correction: str = "holm"
    alpha: float = DEFAULT_ALPHA
    described: Dict[str, str] = field(default_factory=dict)  # condition -> what it is (from the suite)

    def average(self, column: str) -> Tuple[Optional[float], str]:
        """Mean over the rows this column covers, and a label saying which: '18', '14 public', 'n of 18'."""
        covered = self.covered(column)
        if not covered:
            return None, "0"
        return float(np.mean([self.values[(row, column)] for row in covered])), coverage_label(self.rows, covered)

    def covered(self, column: str) -> List[str]:
        return [row for row in self.rows if (row, column) in self.values and (row, column) not in self.partial_units]

    def datasets_total(self) -> int:
        """What an average's coverage is counted against: BEIR's 18 units for a BEIR table, else the rows."""
        return len(BEIR_UNITS) if set(self.rows) <= set(BEIR_UNITS) else len(self.rows)

    def compared(self) -> List[str]:
        """Our conditions other than the baseline: the columns with a Δ and a p-value."""
        return [c for c in self.columns if self.baseline and c != self.baseline and c not in self.references]

    def significant(self, row: str, column: str) -> bool:
        p = self.p_values.get((row, column))
        return p is not None and p < self.alpha


def build_table(results: Sequence[MetricsRecord], measure: str = "nDCG@10", baseline: Optional[str] = None,
                references: Optional[Dict[str, dict]] = None, *, test: str = "t", correction: str = "holm",
                alpha: float = DEFAULT_ALPHA, order: Optional[Sequence[str]] = None,
                described: Optional[Dict[str, str]] = None) -> Table:
    """Assemble a table from metrics records (`results.read_metrics`) plus reference columns. `order` is the
    suite's condition order; conditions it does not name follow, by name. `described`: what each condition
    is (`suites.describe_conditions`), for the legend. One cell's result twice, and results of one row made
    from different corpora, queries or judgments (`results.refuse_other_inputs`), are refused here too, for records that did not
    come through `read_metrics` (the API's in-memory runs)."""
    check_test(test)
    check_correction(correction)
    alpha = check_alpha(alpha)
    values: Dict[Tuple[str, str], float] = {}
    per_query: Dict[Tuple[str, str], Dict[str, float]] = {}
    members: Dict[Tuple[str, str], List[MetricsRecord]] = {}
    for record in results:
        if measure not in record.aggregate:
            continue
        cell = members.setdefault((table_row(record), record.condition), [])
        double = next((other for other in cell if cell_key(other) == cell_key(record)), None)
        if double is not None:
            raise DupMAEEvalError(f"two results for condition {record.condition!r} on {record.key}: "
                                  f"{double.run} and {record.run}; give the table one of them")
        cell.append(record)
    refuse_other_inputs((record, record.run) for cell in members.values() for record in cell)
    partial: Dict[Tuple[str, str], str] = {}
    counts: Dict[Tuple[str, str], Tuple[int, int]] = {}
    for (row, column), records in members.items():
        expected_members = units_of(row.split("/")[0])
        values[(row, column)] = float(np.mean([r.aggregate[measure] for r in records]))
        per_query[(row, column)] = {f"{r.dataset}:{qid}": v for r in records
                                    for qid, v in r.per_query.get(measure, {}).items()}
        if len(expected_members) > 1:
            counts[(row, column)] = (len(records), len(expected_members))
            if len(records) < len(expected_members):
                partial[(row, column)] = f"{len(records)}/{len(expected_members)} forums"
    if not values:
        found = sorted({name for record in results for name in record.aggregate})
        raise DupMAEEvalError(f"no results for measure {measure!r}" + (
            f"; the results hold {', '.join(found)} (a suite's `measures:` decides what reproduce records)"
            if found else ": no metrics files found"))
    found_conditions = {column for _, column in values}
    conditions = [c for c in dict.fromkeys(order or ()) if c in found_conditions]
    conditions += sorted(found_conditions - set(conditions))
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
                  partial_units=partial, members=counts, test=test, correction=correction, alpha=alpha,
                  described={name: text for name, text in (described or {}).items() if name in conditions})
    if baseline:
        paired_tests(table)
    return table


def build_tables(results: Sequence[MetricsRecord], measures: Sequence[str], baseline: Optional[str] = None,
                 references: Optional[Dict[str, dict]] = None, **options) -> List[Table]:
    """One table per measure (see `build_table`), to render side by side."""
    return [build_table(results, measure, baseline, references, **options) for measure in measures]


def paired_tests(table: Table) -> Dict[Tuple[str, str], float]:
    """Compare every (dataset, condition) with the baseline over the queries both scored: Δ, its bootstrap
    CI, queries won/lost/tied and the table's test; the p-values corrected across every comparison in the
    table. Scores equal within float noise get p = 1. Returns (and sets) the corrected p-values."""
    raw = {}
    for row in table.rows:
        base = table.per_query.get((row, table.baseline))
        if not base:
            continue
        for column in table.compared():
            other = table.per_query.get((row, column))
            if not other:
                continue
            comparison = compare(other, base, table.test)
            if comparison is None:
                continue
            shared = sorted(set(base) & set(other))
            if len(shared) < 2 or np.allclose([other[q] for q in shared], [base[q] for q in shared]):
                comparison = replace(comparison, p_value=1.0)
            table.comparisons[(row, column)] = comparison
            raw[(row, column)] = comparison.p_value
    table.raw_p_values = raw
    table.p_values = correct(raw, table.correction)
    return table.p_values


# --------------------------------------------------------------------------- rendering

Tables = Union[Table, Sequence[Table]]


def _as_list(tables: Tables) -> List[Table]:
    return [tables] if isinstance(tables, Table) else list(tables)


def _value(table: Table, row: str, column: str, latex: bool = False) -> str:
    value = table.values.get((row, column))
    if value is None:
        return "–" if not latex else "--"
    text = f"{value:.4f}" if column not in table.references else f"{value:.3f}"
    if table.significant(row, column):
        text += "$^\\dagger$" if latex else "†"
    if (row, column) in table.partial_units:
        text += f" ({table.partial_units[(row, column)]})"
    return text


def _delta(table: Table, row: str, column: str) -> str:
    a, b = table.values.get((row, column)), table.values.get((row, table.baseline))
    return "–" if a is None or b is None else f"{a - b:+.4f}"


def _interval(table: Table, row: str, column: str) -> str:
    comparison = table.comparisons.get((row, column))
    if comparison is None or math.isnan(comparison.ci_low):
        return "–"
    return f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"


def format_p(p: Optional[float]) -> str:
    if p is None:
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _grid(tables: Tables, latex: bool = False) -> Tuple[List[str], List[List[str]]]:
    """Header and rows: per measure, each condition's value followed (when compared with the baseline) by its
    Δ, the Δ's 95 % CI and the p-value; then the reference columns; an averages row last."""
    tables = _as_list(tables)
    several = len(tables) > 1
    header = ["dataset"]
    for table in tables:
        compared = table.compared()
        for column in table.columns:
            header.append(f"{column} {table.measure}" if several else column)
            if column in compared:
                header += ["Δ", "95% CI", "p"]
    rows = sorted({row for table in tables for row in table.rows}, key=unit_order)
    body = []
    for row in rows:
        line = [row]
        for table in tables:
            compared = table.compared()
            for column in table.columns:
                line.append(_value(table, row, column, latex))
                if column in compared:
                    line += [_delta(table, row, column), _interval(table, row, column),
                             format_p(table.p_values.get((row, column)))]
        body.append(line)
    averages = ["average (datasets covered)"]
    for table in tables:
        compared = table.compared()
        for column in table.columns:
            value, label = table.average(column)
            averages.append("–" if value is None else f"{value:.4f} ({label})")
            if column in compared:
                averages += ["", "", ""]
    return header, body + [averages]


def _markdown(tables: Tables) -> str:
    header, body = _grid(tables)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n\n" + _legend(tables) + "\n"


CSV_COLUMNS = ("measure", "dataset", "condition", "reference", "value", "delta", "ci_low", "ci_high", "p_value",
               "p_adjusted", "significant", "queries", "won", "lost", "tied", "forums", "forums_expected",
               "datasets_covered", "datasets_total", "coverage", "baseline", "test", "correction", "alpha")


def _csv(tables: Tables) -> str:
    """One row per cell (measure, dataset, condition) and one 'average' row per (measure, condition); every
    number in a column of its own (blank where it does not apply), so a spreadsheet or pandas reads numbers."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table in _as_list(tables):
        compared = table.compared()
        statistics = dict(baseline=table.baseline, test=table.test, correction=table.correction,
                          alpha=table.alpha) if table.baseline else {}
        for row in table.rows:
            for column in table.columns:
                value = table.values.get((row, column))
                if value is None:
                    continue
                cell = dict(measure=table.measure, dataset=row, condition=column,
                            reference=int(column in table.references), value=value, **statistics)
                if (row, column) in table.members:
                    cell["forums"], cell["forums_expected"] = table.members[(row, column)]
                comparison = table.comparisons.get((row, column))
                if column in compared and comparison is not None:
                    cell.update(delta=value - table.values[(row, table.baseline)],
                                ci_low=comparison.ci_low, ci_high=comparison.ci_high,
                                p_value=table.raw_p_values[(row, column)], p_adjusted=table.p_values[(row, column)],
                                significant=int(table.significant(row, column)), queries=comparison.queries,
                                won=comparison.won, lost=comparison.lost, tied=comparison.tied)
                writer.writerow([_csv_number(cell.get(name)) for name in CSV_COLUMNS])
        for column in table.columns:
            value, label = table.average(column)
            if value is None:
                continue
            cell = dict(measure=table.measure, dataset="average", condition=column,
                        reference=int(column in table.references), value=value,
                        datasets_covered=len(table.covered(column)), datasets_total=table.datasets_total(),
                        coverage=label, **statistics)
            writer.writerow([_csv_number(cell.get(name)) for name in CSV_COLUMNS])
    return out.getvalue()


def _csv_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _latex(tables: Tables) -> str:
    header, body = _grid(tables, latex=True)
    escape = lambda text: (text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")  # noqa: E731
                           .replace("Δ", "$\\Delta$").replace("–", "--"))
    lines = ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
             " & ".join(escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(escape(c) if "$" not in c else c for c in row) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "% " + _legend(tables)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TableFormat:
    name: str
    render: Callable[[List[Table]], str | bytes]
    binary: bool            # True: bytes that need an output file (a picture)
    several_measures: bool = True


TABLE_FORMATS: Registry[TableFormat] = Registry("--format")
register_table_format = TABLE_FORMATS.register


def render(tables: Tables, fmt: str) -> str | bytes:
    """Render one table, or several (one per measure) side by side."""
    tables = _as_list(tables)
    chosen = TABLE_FORMATS.lookup(fmt)
    if len(tables) > 1 and not chosen.several_measures:
        raise DupMAEEvalError(f"--format {fmt} draws one measure; give one --measure")
    return chosen.render(tables)


def _legend(tables: Tables) -> str:
    tables = _as_list(tables)
    first = tables[0]
    text = f"{', '.join(t.measure for t in tables)}; averages over the datasets each column covers (label in brackets)."
    if first.baseline:
        family = "the table" if len(tables) == 1 else "each measure's datasets and conditions"
        corrected = ("uncorrected" if first.correction == "none"
                     else f"{CORRECTION_NAMES[first.correction]}-corrected across {family}")
        text += (f" Δ: difference to {first.baseline}, with its 95 % CI (percentile bootstrap over queries);"
                 f" p: {TEST_NAMES[first.test]} over per-query scores, {corrected}; † p < {first.alpha:g}.")
    if any(t.references for t in tables):
        text += " Reference columns are published figures (3 decimals as printed)."
    if first.described:
        text += " Conditions: " + "; ".join(f"{name}: {what}" for name, what in first.described.items()) + "."
    return text


def _chart(tables: List[Table]) -> bytes:
    """Horizontal bars: per-dataset delta of each condition to the baseline (or raw scores without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = tables[0]
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
            if table.significant(row, column) and not np.isnan(deltas[row_index]):
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
register_table_format(TableFormat("png", _chart, binary=True, several_measures=False))
