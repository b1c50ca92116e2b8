"""`table` with statistics, several measures, suite order and a numeric CSV, on metrics files written here
(per-query scores drawn from a seeded generator), each number checked against one computed independently
from those scores: numpy means, scipy's tests, corrections by hand."""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import pytest

from dupmae_eval.cli import main
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.results import MetricsRecord, write_metrics

MEASURES = ("nDCG@10", "R@100")
DATASETS = {"scifact": 80, "nfcorpus": 60, "fiqa": 70}     # queries each; as found, not in the paper's order
ROW_ORDER = ["nfcorpus", "fiqa", "cqadupstack", "scifact"]     # the paper's Table 3 order (datasets.BEIR_UNITS)
FORUMS = ("cqadupstack-android", "cqadupstack-gis")         # 2 of CQADupStack's 12 forums, one condition only
SUITE_ORDER = ["zeta-bm25", "alpha-dense", "mid-sparse"]    # the suite's order: not alphabetical, baseline first
SHIFT = {"zeta-bm25": 0.0, "alpha-dense": 0.06, "mid-sparse": -0.01}
SUITE = """suite: order
datasets: [scifact, nfcorpus, fiqa]
conditions:
  zeta-bm25: {kind: bm25, fields: flat}
  alpha-dense: {kind: bm25, fields: multifield}
  mid-sparse: {kind: bm25, k1: 1.2, b: 0.75}
references:
  Paper:
    measure: nDCG@10
    values: {scifact: 0.699, nfcorpus: 0.345}
"""


def _scores(condition, dataset, measure, n):
    """Per-query scores in [0, 1]: the query's difficulty, the condition's shift, noise; mid-sparse ties the
    baseline on its first third of the queries."""
    seed = [zlib.crc32(dataset.encode()), zlib.crc32(measure.encode())]
    base = np.random.default_rng(seed).random(n)
    noise = np.random.default_rng(seed + [zlib.crc32(condition.encode())]).normal(0, 0.15, n)
    scores = np.clip(base + SHIFT[condition] + noise, 0, 1)
    if condition == "mid-sparse":
        scores[: n // 3] = _scores("zeta-bm25", dataset, measure, n)[: n // 3]
    return scores


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{(condition, dataset, measure): {qid: score}} and the folder holding their metrics files."""
    folder = tmp_path_factory.mktemp("results")
    truth = {}
    cells = [(c, d, n) for c in SUITE_ORDER for d, n in DATASETS.items()]
    cells += [("alpha-dense", forum, 25) for forum in FORUMS]
    for condition, dataset, n in cells:
        per_query = {m: {f"q{i}": float(x) for i, x in enumerate(_scores(condition, dataset, m, n))}
                     for m in MEASURES}
        for m in MEASURES:
            truth[(condition, dataset, m)] = per_query[m]
        record = MetricsRecord(suite="order", condition=condition, dataset=dataset, split="test", key=dataset,
                               unit="cqadupstack" if dataset in FORUMS else dataset, run=f"{dataset}.trec",
                               aggregate={m: float(np.mean(list(v.values()))) for m, v in per_query.items()},
                               per_query=per_query)
        write_metrics(folder / condition / f"{dataset}.trec", record)
    suite = folder / "order.yaml"
    suite.write_text(SUITE)
    return truth, folder, suite


def _table(capsys, *arguments):
    assert main(["table", *map(str, arguments)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _csv(capsys, *arguments):
    import pandas as pd

    return pd.read_csv(io.StringIO(_table(capsys, *arguments, "--format", "csv")))


def _paired(truth, condition, dataset, measure, baseline="zeta-bm25"):
    a, b = truth[(condition, dataset, measure)], truth[(baseline, dataset, measure)]
    shared = sorted(set(a) & set(b))
    return np.array([a[q] for q in shared]), np.array([b[q] for q in shared])


def _holm_by_hand(p):
    ordered = sorted(p, key=p.get)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(ordered):
        running = max(running, min(1.0, (len(p) - rank) * p[key]))
        adjusted[key] = running
    return adjusted


def _bh_by_hand(p):
    ordered = sorted(p, key=p.get, reverse=True)
    adjusted, running = {}, 1.0
    for rank, key in enumerate(ordered):
        running = min(running, p[key] * len(p) / (len(p) - rank))
        adjusted[key] = running
    return adjusted


# --------------------------------------------------------------------------- must-show 3


def test_csv_reads_as_numbers_with_the_measure_named_and_counts_in_their_own_columns(results, capsys):
    from scipy.stats import ttest_rel

    truth, folder, suite = results
    frame = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--measure", "nDCG@10,R@100")
    for column in ("value", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "significant", "queries", "won",
                   "lost", "tied", "forums", "forums_expected", "datasets_covered", "datasets_total", "alpha"):
        assert frame[column].dtype.kind in "fi", (column, frame[column].dtype)     # numbers, blanks as NaN
    assert not frame["value"].isna().any()
    assert set(frame["measure"]) == set(MEASURES)
    for measure in MEASURES:
        for dataset in DATASETS:
            for condition in SUITE_ORDER:
                row = frame[(frame.measure == measure) & (frame.dataset == dataset) & (frame.condition == condition)]
                assert len(row) == 1
                a, b = _paired(truth, condition, dataset, measure)
                assert row.value.item() == pytest.approx(a.mean(), abs=1e-12)
                if condition == "zeta-bm25":
                    assert math.isnan(row.delta.item()) and math.isnan(row.p_value.item())
                    continue
                assert row.delta.item() == pytest.approx(a.mean() - b.mean(), abs=1e-12)
                assert row.p_value.item() == pytest.approx(ttest_rel(a, b).pvalue, abs=1e-9)
                assert row.ci_low.item() < row.delta.item() < row.ci_high.item()
                assert (row.won.item(), row.lost.item(), row.tied.item()) == (
                    int(np.sum(a > b)), int(np.sum(a < b)), int(np.sum(a == b)))
                assert row.queries.item() == DATASETS[dataset]
    # CQADupStack: 2 of 12 forums, counted in their own columns; a partial unit stays out of the average
    cqa = frame[(frame.dataset == "cqadupstack") & (frame.measure == "nDCG@10")]
    assert (cqa.condition.item(), cqa.forums.item(), cqa.forums_expected.item()) == ("alpha-dense", 2, 12)
    averages = frame[(frame.dataset == "average") & (frame.measure == "nDCG@10")].set_index("condition")
    assert averages.loc["alpha-dense", "datasets_covered"] == 3 and averages.loc["alpha-dense", "datasets_total"] == 18
    assert averages.loc["alpha-dense", "value"] == pytest.approx(
        np.mean([np.mean(list(truth[("alpha-dense", d, "nDCG@10")].values())) for d in DATASETS]), abs=1e-12)
    assert averages.loc["Paper", "reference"] == 1 and averages.loc["Paper", "datasets_covered"] == 2
    # the reference column is for nDCG@10 only
    assert set(frame[frame.condition == "Paper"].measure) == {"nDCG@10"}


def test_ndcg_and_recall_side_by_side_each_delta_beside_its_value(results, capsys):
    truth, folder, suite = results
    text = _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--measure", "nDCG@10",
                  "--measure", "R@100")
    lines = text.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:10] == ["dataset", "zeta-bm25 nDCG@10", "alpha-dense nDCG@10", "Δ", "95% CI", "p",
                           "mid-sparse nDCG@10", "Δ", "95% CI", "p"]
    assert header[10] == "Paper nDCG@10"
    assert header[11:] == ["zeta-bm25 R@100", "alpha-dense R@100", "Δ", "95% CI", "p",
                           "mid-sparse R@100", "Δ", "95% CI", "p"]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:]
                                          if line.startswith("|"))}
    for measure, value_at in (("nDCG@10", 2), ("R@100", 12)):
        a, b = _paired(truth, "alpha-dense", "scifact", measure)
        assert rows["scifact"][value_at].rstrip("†") == f"{a.mean():.4f}"
        assert rows["scifact"][value_at + 1] == f"{a.mean() - b.mean():+.4f}"
    assert rows["scifact"][10] == "0.699" and rows["fiqa"][10] == "–"
    assert "nDCG@10, R@100;" in text
    # the legend says what each condition is, from the suite's own keys
    assert ("Conditions: zeta-bm25: BM25 flat (k1 0.9, b 0.4); alpha-dense: BM25 multifield (k1 0.9, b 0.4); "
            "mid-sparse: BM25 flat (k1 1.2, b 0.75).") in text
    # report's spelling, several measures after one flag, gives the same table
    assert _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--measures", "nDCG@10",
                  "R@100") == text


def test_conditions_and_rows_follow_the_suite_and_the_paper_not_the_alphabet(results, capsys):
    _, folder, suite = results
    header = _table(capsys, folder, "--suite", suite).splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["dataset", *SUITE_ORDER, "Paper"]
    frame = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25")
    assert list(dict.fromkeys(frame.condition)) == [*SUITE_ORDER, "Paper"]
    assert list(dict.fromkeys(frame.dataset)) == [*ROW_ORDER, "average"]
    # without a suite nothing says the order: by name, as before
    header = _table(capsys, folder).splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["dataset", *sorted(SUITE_ORDER)]


# --------------------------------------------------------------------------- tests and corrections


def _marked(text, column):
    """{dataset: marked?} for one column of a Markdown table."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    at = lines[0].index(column)
    return {cells[0]: cells[at].endswith("†") for cells in lines[2:] if cells[0] in DATASETS}


def test_default_is_the_paired_t_test_holm_corrected_at_0_05(results, capsys):
    from scipy.stats import ttest_rel

    truth, folder, suite = results
    raw = {(c, d): ttest_rel(*_paired(truth, c, d, "nDCG@10")).pvalue
           for c in ("alpha-dense", "mid-sparse") for d in DATASETS}
    holm = _holm_by_hand(raw)
    default = _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25")
    explicit = _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--test", "t",
                      "--correction", "holm", "--alpha", "0.05")
    assert default == explicit
    for condition in ("alpha-dense", "mid-sparse"):
        assert _marked(default, condition) == {d: holm[(condition, d)] < 0.05 for d in DATASETS}
    assert any(p < 0.05 for p in holm.values()) and any(p >= 0.05 for p in holm.values())
    assert "paired t-test over per-query scores, Holm-Bonferroni-corrected across the table; † p < 0.05" in default


@pytest.mark.parametrize("correction", ["bonferroni", "bh", "none"])
def test_corrections_across_the_table(results, capsys, correction):
    from scipy.stats import ttest_rel

    truth, folder, suite = results
    frame = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--correction", correction)
    compared = frame[frame.p_value.notna()]
    raw = {(r.condition, r.dataset): ttest_rel(*_paired(truth, r.condition, r.dataset, "nDCG@10")).pvalue
           for r in compared.itertuples()}
    assert len(raw) == 6                                     # 2 conditions x 3 datasets; cqadupstack: no baseline
    expected = {"bonferroni": {k: min(1.0, 6 * p) for k, p in raw.items()}, "bh": _bh_by_hand(raw),
                "none": raw}[correction]
    for r in compared.itertuples():
        assert r.p_adjusted == pytest.approx(expected[(r.condition, r.dataset)], abs=1e-9)
        assert r.significant == int(expected[(r.condition, r.dataset)] < 0.05)


def test_wilcoxon_and_randomization_and_a_chosen_alpha(results, capsys):
    from scipy.stats import wilcoxon

    truth, folder, suite = results
    frame = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--test", "wilcoxon",
                 "--correction", "none", "--alpha", "0.2")
    for r in frame[frame.p_value.notna()].itertuples():
        a, b = _paired(truth, r.condition, r.dataset, "nDCG@10")
        assert r.p_value == pytest.approx(wilcoxon(a, b).pvalue, abs=1e-9)
        assert r.significant == int(r.p_value < 0.2)
        assert (r.test, r.correction, r.alpha) == ("wilcoxon", "none", 0.2)
    randomized = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--test", "randomization",
                      "--correction", "none")
    t_test = _csv(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--correction", "none")
    both = randomized.p_value.notna()
    assert (randomized.p_value[both] >= 2 / 10_001).all()
    # 60-80 queries: the randomization and t p-values are close, not equal
    assert np.abs(randomized.p_value[both] - t_test.p_value[both]).max() < 0.03
    assert not np.allclose(randomized.p_value[both], t_test.p_value[both], atol=1e-9, rtol=0)
    md = _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--test", "randomization")
    assert "Fisher's randomization test (paired, sign flips) over per-query scores" in md


def test_latex_carries_the_same_columns(results, capsys):
    _, folder, suite = results
    latex = _table(capsys, folder, "--suite", suite, "--baseline", "zeta-bm25", "--measure", "nDCG@10,R@100",
                   "--format", "latex")
    header = latex.splitlines()[2]
    assert header.startswith("dataset & zeta-bm25 nDCG@10 & alpha-dense nDCG@10 & $\\Delta$ & 95\\% CI & p &")
    assert "–" not in latex


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("arguments, message", [
    (["--baseline", "b", "--test", "tukey"], "--test 'tukey': choose one of t, randomization, wilcoxon"),
    (["--baseline", "b", "--correction", "fdr"], "--correction 'fdr': choose one of holm, bonferroni, bh, none"),
    (["--baseline", "b", "--alpha", "5"], "--alpha '5': must lie strictly between 0 and 1"),
    (["--baseline", "b", "--alpha", "five"], "--alpha 'five': not a number"),
    (["--test", "wilcoxon"], "--test needs --baseline (the condition the others are compared with)"),
    (["--measure", "nDCG@10,,R@100"], "--measure 'nDCG@10,,R@100': an empty measure name"),
    (["--measure", "nDCG@10", "--measure", "R@100,nDCG@10"], "--measure nDCG@10 is given twice"),
    (["--measure", "nDCG@10,R@100", "--format", "png", "--output", "x.png"],
     "--format png draws one measure; give one --measure"),
    (["--suite", "nosuch"], "nosuch: no such suite file, and no shipped suite of that name (the shipped suites: "
                            "beir, demo, local, msmarco)"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_is_read(arguments, message, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"                    # reading it would fail with another message
    assert main(["table", str(missing), *arguments]) == 2
    err = capsys.readouterr().err
    assert err == f"dupmae-eval: error: {message}\n"


def test_an_unknown_measure_is_refused_before_anything_is_read(tmp_path, capsys):
    assert main(["table", str(tmp_path / "no-such-folder"), "--measure", "nDCG@10,nDCG@ten"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dupmae-eval: error: unknown measure 'nDCG@ten'") and err.count("\n") == 1


def test_several_measures_from_python_refuse_the_picture(results):
    from dupmae_eval.evaluation.results import read_metrics
    from dupmae_eval.evaluation.tables import build_tables, render

    _, folder, _ = results
    tables = build_tables(read_metrics([folder]), MEASURES, "zeta-bm25")
    with pytest.raises(DupMAEEvalError, match="draws one measure"):
        render(tables, "png")


def test_a_run_covering_part_of_the_judged_queries_is_tabled_with_a_warning(tmp_path, capsys):
    """A bm25/run output read by `table` goes through eval's coverage check: 2 of SciFact's 300 judged
    test queries ranked gives one warning naming the cell and the coverage; a run of no judged query is
    refused in one line."""
    import json

    from dupmae_eval.data.datasets import BUNDLED_DATA, resolve

    root = BUNDLED_DATA / "scifact"                      # the bundled copy, whatever else the name maps to
    qrels = resolve(str(root), download=False).qrels("test")
    chosen = sorted(qrels)[:2]
    run = tmp_path / "two.trec"
    run.write_text("".join(f"{qid} Q0 {doc} 1 1.0 x\n" for qid in chosen for doc in list(qrels[qid])[:1]))
    (tmp_path / "two.trec.meta.json").write_text(json.dumps({"dataset": "scifact", "split": "test",
                                                             "dataset_root": str(root),
                                                             "condition": "two-queries"}))
    assert main(["table", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning: two-queries scifact/test: run covers 2 of 300 judged queries" in err
    run.write_text("no-such-query Q0 d 1 1.0 x\n")
    assert main(["table", str(run)]) == 2
    assert "no query of the run is judged" in capsys.readouterr().err


def test_plain_runs_of_other_tools_are_tabled_and_reported_with_a_judgments_file(tmp_path, capsys):
    """Runs with no sidecar (a TREC and a JSON run, as other tools write them) and `--qrels`: each run file is a
    condition scored against the judgments; nDCG@10 worked by hand: a relevant passage at rank 1 scores 1, at
    rank 2 1/log2(3). Without --qrels such a run is refused in one line naming the flag."""
    import json

    qrels = tmp_path / "mine.qrels"
    qrels.write_text("q1 0 d1 1\nq2 0 d3 1\n")
    (tmp_path / "first.trec").write_text("q1 Q0 d1 1 2.0 a\nq1 Q0 d2 2 1.0 a\nq2 Q0 d4 1 2.0 a\nq2 Q0 d3 2 1.0 a\n")
    (tmp_path / "second.json").write_text(json.dumps({"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d4": 2.0, "d3": 1.0}}))
    runs = [str(tmp_path / "first.trec"), str(tmp_path / "second.json")]
    assert main(["table", *runs, "--qrels", str(qrels), "--baseline", "first"]) == 0
    out, err = capsys.readouterr()
    # the runs are 2 deep: warned about the measure the table shows, not those it scored them with besides
    assert "first mine: nDCG@10: cutoff beyond the run's depth (2 hits per query at most)" in err
    assert "R@100" not in err and "R@1000" not in err
    second_rank = 1 / math.log2(3)
    first = (1 + second_rank) / 2
    assert f"| mine | {first:.4f} | {second_rank:.4f} | {second_rank - first:+.4f} |" in out
    report = tmp_path / "report.html"
    assert main(["report", *runs, "--qrels", str(qrels), "--baseline", "first", "--output", str(report)]) == 0
    assert f"{second_rank:.4f}" in report.read_text()
    assert main(["table", *runs]) == 2
    assert "give the judgments with --qrels FILE" in capsys.readouterr().err


def test_a_plain_run_and_a_reproduce_record_of_one_cell_are_refused_naming_both(tmp_path, capsys):
    """A run scored with --qrels has no split (its dataset's default), a reproduce record of SciFact has
    "test", SciFact's default: both land in the one cell `scifact` × X, so the table refuses them in one line
    naming both files instead of printing their mean. The same pair from Python is refused alike; a record of
    another split is another row and tables beside it."""
    import json

    from dupmae_eval import api
    from dupmae_eval.evaluation.results import read_metrics
    from dupmae_eval.evaluation.tables import build_table

    def record(split, value, run):
        return MetricsRecord(suite="s", condition="X", dataset="scifact", split=split,
                             key="scifact" if split in ("", "test") else f"scifact/{split}", unit="scifact", run=run,
                             aggregate={"nDCG@10": value}, per_query={"nDCG@10": {"q1": value}})

    write_metrics(tmp_path / "scifact.trec", record("test", 0.8, "scifact.trec"))
    qrels = tmp_path / "scifact.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    plain = tmp_path / "X.trec"
    plain.write_text("q1 Q0 d2 1 2.0 X\nq1 Q0 d1 2 1.0 X\n")
    metrics = tmp_path / "scifact.metrics.json"
    assert main(["table", str(metrics), str(plain), "--qrels", str(qrels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"dupmae-eval: error: two results for condition 'X' on scifact: {metrics} and {plain}; "
                       f"give the table one of them")
    with pytest.raises(DupMAEEvalError, match="two results for condition 'X' on scifact: scifact.trec and X.trec"):
        build_table([record("test", 0.8, "scifact.trec"), record("", 1 / math.log2(3), "X.trec")])
    with pytest.raises(DupMAEEvalError, match="two results for condition 'X' on scifact: scifact.trec and X.trec"):
        api._refuse_duplicates([record("test", 0.8, "scifact.trec"), record("", 0.6, "X.trec")])
    table = build_table([record("test", 0.8, "a.trec"), record("train", 0.6, "b.trec")])
    assert table.values == {("scifact", "X"): 0.8, ("scifact/train", "X"): 0.6}
    assert json.loads(metrics.read_text())["split"] == "test" and len(read_metrics([metrics])) == 1


def _tiny(folder, documents):
    """A BEIR folder of `documents` with two queries, one judged passage each."""
    import json

    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in documents.items()))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n{"_id": "q2", "text": "cherry"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


@pytest.mark.java
def test_results_of_one_row_from_different_corpora_are_refused_naming_both(tmp_path, capsys):
    """Two BM25 runs of folders both named `tiny`, over different documents: their rows meet under one name and
    the same query ids, so the table refuses to compare them, naming both files and the two corpora's SHA-256
    (hashed here from the files). A copy of the same corpus in another folder tables; so does a reproduce
    record (which carries its corpus, or takes it from its run's sidecar when an older version wrote it without)
    against a run of its own corpus, while one of the other corpus is refused. A run of another tool, scored
    with --qrels, records no corpus and is tabled beside either."""
    import hashlib
    import json
    import shutil

    from dupmae_eval.evaluation.tables import build_table

    a = _tiny(tmp_path / "a" / "tiny", {"d1": "apple banana", "d2": "banana cherry", "d3": "cherry date"})
    b = _tiny(tmp_path / "b" / "tiny", {"d1": "apple", "d2": "banana cherry date", "d3": "apple cherry"})
    c = tmp_path / "c" / "tiny"
    shutil.copytree(a, c)
    digest = {f: hashlib.sha256((f / "corpus.jsonl").read_bytes()).hexdigest()[:12] for f in (a, b)}
    runs = {}
    for name, folder in (("a", a), ("b", b), ("c", c)):
        runs[name] = tmp_path / f"runs-{name}" / "tiny.trec"
        assert main(["bm25", "--dataset", str(folder), "--tag", f"bm25-{name}", "--output", str(runs[name])]) == 0
    capsys.readouterr()
    assert main(["table", str(runs["a"].parent), str(runs["b"].parent), "--baseline", "bm25-a"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dupmae-eval: error: {runs['a']} and {runs['b']}: results for tiny made from different corpora (corpus "
        f"SHA-256 {digest[a]} and {digest[b]}), which one row cannot compare; give the table the results of one "
        f"corpus")
    assert main(["table", str(runs["a"]), str(runs["c"]), "--baseline", "bm25-a"]) == 0
    assert "| tiny |" in capsys.readouterr().out

    suite = tmp_path / "tiny.yaml"
    suite.write_text("suite: s\ndatasets: [tiny]\nconditions:\n  bm25-r: {kind: bm25, fields: flat}\n")
    reproduced = tmp_path / "reproduced"
    assert main(["reproduce", str(suite), "--data", f"tiny={a}", "--runs", str(reproduced)]) == 0
    metrics = reproduced / "s" / "bm25-r" / "tiny.metrics.json"
    assert json.loads(metrics.read_text())["corpus_sha256"][:12] == digest[a]
    capsys.readouterr()
    assert main(["table", str(reproduced), str(runs["c"])]) == 0
    assert main(["table", str(reproduced), str(runs["b"])]) == 2
    refused = (f"dupmae-eval: error: {metrics} and {runs['b']}: results for tiny made from different corpora "
               f"(corpus SHA-256 {digest[a]} and {digest[b]})")
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(refused)
    older = json.loads(metrics.read_text())
    del older["corpus_sha256"]                                    # as the version before wrote it
    metrics.write_text(json.dumps(older))
    assert main(["table", str(reproduced), str(runs["b"])]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(refused)

    plain = tmp_path / "plain" / "other-tool.trec"
    plain.parent.mkdir()
    shutil.copy(runs["b"], plain)
    qrels = shutil.copy(b / "qrels" / "test.tsv", tmp_path / "tiny.tsv")
    for run in (runs["a"], runs["b"]):
        assert main(["table", str(run), str(plain), "--qrels", str(qrels)]) == 0

    def record(condition, corpus):
        return MetricsRecord(suite="", condition=condition, dataset="tiny", split="test", key="tiny", unit="tiny",
                             run=f"{condition}.trec", aggregate={"nDCG@10": 0.5}, per_query={"nDCG@10": {"q1": 0.5}},
                             corpus_sha256=corpus)

    with pytest.raises(DupMAEEvalError, match="x.trec and y.trec: results for tiny made from different corpora"):
        build_table([record("x", "1" * 64), record("y", "2" * 64)])
    assert build_table([record("x", "1" * 64), record("y", "")]).values == {("tiny", "x"): 0.5, ("tiny", "y"): 0.5}


@pytest.mark.java
def test_results_of_one_row_for_other_queries_or_judgments_are_refused_naming_both(tmp_path, capsys):
    """Three copies of one `tiny` folder (same corpus): one with a query's text edited, one with a query judged
    on another passage. BM25 runs of each are tabled beside the first: the edited queries are refused as
    "made for different queries", the other judgments as "scored against different judgments", each with the
    two digests computed here from the files as read; `fuse` refuses the runs of other queries alike. A
    reproduce record scored against the first folder's judgments is refused beside a run of the third, and
    tables beside a run of the first. An untouched copy tables."""
    import json
    import shutil

    from dupmae_eval.data.formats import judgments_digest, queries_digest, read_beir_qrels, read_beir_queries

    documents = {"d1": "apple banana", "d2": "banana cherry", "d3": "cherry date"}
    first = _tiny(tmp_path / "first" / "tiny", documents)
    same, edited, rejudged = (tmp_path / name / "tiny" for name in ("same", "edited", "rejudged"))
    for folder in (same, edited, rejudged):
        shutil.copytree(first, folder)
    (edited / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n{"_id": "q2", "text": "date"}\n')
    (rejudged / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    runs = {}
    for folder in (first, same, edited, rejudged):
        runs[folder] = tmp_path / "runs" / folder.parent.name / "tiny.trec"
        assert main(["bm25", "--dataset", str(folder), "--tag", folder.parent.name, "--output",
                     str(runs[folder])]) == 0
    capsys.readouterr()

    def queries(folder):
        return queries_digest(read_beir_queries(folder / "queries.jsonl"))[:12]

    def judgments(folder):
        return judgments_digest(read_beir_qrels(folder / "qrels" / "test.tsv"))[:12]

    assert queries(first) != queries(edited) and judgments(first) != judgments(rejudged)
    assert main(["table", str(runs[first]), str(runs[same])]) == 0
    assert "| tiny |" in capsys.readouterr().out
    assert main(["table", str(runs[first]), str(runs[edited])]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dupmae-eval: error: {runs[first]} and {runs[edited]}: results for tiny made for different queries (other "
        f"ids or texts) (queries digest {queries(first)} and {queries(edited)}), which one row cannot compare; "
        f"make every run of the row for the same queries")
    assert main(["table", str(runs[first]), str(runs[rejudged])]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dupmae-eval: error: {runs[first]} and {runs[rejudged]}: results for tiny scored against different "
        f"judgments (judgments digest {judgments(first)} and {judgments(rejudged)}), which one row cannot "
        f"compare; score them against the same judgments (`reproduce` rescores its runs when run again)")
    fused = tmp_path / "fused.trec"
    assert main(["fuse", str(runs[first]), str(runs[edited]), "--method", "rrf", "--output", str(fused)]) == 2
    assert f"{runs[edited]} answers another queries digest than {runs[first]}" in capsys.readouterr().err
    assert not fused.exists()
    assert main(["fuse", str(runs[first]), str(runs[rejudged]), "--method", "rrf", "--output", str(fused)]) == 0
    assert json.loads(fused.with_name("fused.trec.meta.json").read_text())["queries_digest"][:12] == queries(first)

    suite = tmp_path / "tiny.yaml"
    suite.write_text("suite: s\ndatasets: [tiny]\nconditions:\n  bm25-r: {kind: bm25, fields: flat}\n")
    reproduced = tmp_path / "reproduced"
    assert main(["reproduce", str(suite), "--data", f"tiny={first}", "--runs", str(reproduced)]) == 0
    metrics = reproduced / "s" / "bm25-r" / "tiny.metrics.json"
    record = json.loads(metrics.read_text())
    assert (record["queries_digest"][:12], record["judgments_digest"][:12]) == (queries(first), judgments(first))
    capsys.readouterr()
    assert main(["table", str(metrics), str(runs[rejudged])]) == 2
    assert "scored against different judgments" in capsys.readouterr().err
    assert main(["table", str(metrics), str(runs[same])]) == 0

def test_runs_with_sidecars_are_tabled_with_any_measure_asked_for(tmp_path, capsys):
    """A bm25/run output holds a run, not scores: `table --measure RR@10` scores it with RR@10 (as `eval`
    would) instead of refusing a measure outside the dataset's own; `report --measures` alike. RR@10 worked
    by hand: each query's first relevant passage at rank 1, 2 or 3 in turn."""
    import csv
    import json

    from dupmae_eval.data.datasets import BUNDLED_DATA, resolve

    root = BUNDLED_DATA / "scifact"
    qrels = resolve(str(root), download=False).qrels("test")
    lines, ranks = [], []
    for index, qid in enumerate(sorted(qrels)):
        rank = 1 + index % 3
        ranked = [f"filler{n}" for n in range(rank - 1)] + [next(d for d, r in qrels[qid].items() if r > 0)]
        lines += [f"{qid} Q0 {doc} {n + 1} {10.0 - n} mine\n" for n, doc in enumerate(ranked)]
        ranks.append(rank)
    run = tmp_path / "mine.trec"
    run.write_text("".join(lines))
    (tmp_path / "mine.trec.meta.json").write_text(json.dumps({"dataset": "scifact", "split": "test",
                                                              "dataset_root": str(root), "condition": "mine"}))
    expected = sum(1 / rank for rank in ranks) / len(ranks)
    assert main(["table", str(run), "--measure", "RR@10", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["measure"], row["dataset"], round(float(row["value"]), 12)) for row in rows] == \
        [("RR@10", "scifact", round(expected, 12)), ("RR@10", "average", round(expected, 12))]
    assert main(["report", str(run), "--measures", "RR@10", "--output", str(tmp_path / "r.html")]) == 0
    assert f"{expected:.4f}" in (tmp_path / "r.html").read_text()


def test_a_plain_run_scored_against_a_datasets_judgments_joins_that_datasets_row(tmp_path, capsys):
    """`table ours.trec theirs.trec --qrels data/scifact/qrels/test.tsv`: a run with a sidecar (SciFact, test)
    and another tool's run scored against SciFact's own judgments file meet in the row `scifact`, compared
    with a delta, instead of rows `scifact` and `test`. Values by hand from RR@10: ours finds every query's
    first relevant passage at rank 1, theirs at rank 2. Judgments that only look alike (a copy missing one
    query) leave the plain run in a row of its own."""
    import csv
    import json

    from dupmae_eval.data.datasets import BUNDLED_DATA, resolve

    root = BUNDLED_DATA / "scifact"
    judged = resolve(str(root), download=False).qrels("test")
    first = {qid: next(d for d, grade in docs.items() if grade > 0) for qid, docs in judged.items()}
    ours, theirs = tmp_path / "ours.trec", tmp_path / "theirs.trec"
    ours.write_text("".join(f"{qid} Q0 {doc} 1 2.0 ours\n" for qid, doc in first.items()))
    theirs.write_text("".join(f"{qid} Q0 filler 1 2.0 t\n{qid} Q0 {doc} 2 1.0 t\n" for qid, doc in first.items()))
    (tmp_path / "ours.trec.meta.json").write_text(json.dumps({"dataset": "scifact", "split": "test",
                                                              "dataset_root": str(root), "condition": "ours"}))
    qrels = root / "qrels" / "test.tsv"
    assert main(["table", str(ours), str(theirs), "--qrels", str(qrels), "--measure", "RR@10", "--baseline", "ours",
                 "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = {(row["dataset"], row["condition"]): float(row["value"])
            for row in csv.DictReader(io.StringIO(out)) if row["dataset"] != "average"}
    assert rows == {("scifact", "ours"): 1.0, ("scifact", "theirs"): 0.5}
    # one hit a query: warned about the measure shown, not about the dataset's R@1000 scored besides
    assert "ours scifact/test: RR@10: cutoff beyond the run's depth (1 hit per query at most)" in err
    assert "R@1000" not in err and "nDCG@10" not in err, err

    lacking = tmp_path / "test.tsv"
    lines = qrels.read_text().splitlines(keepends=True)
    lacking.write_text("".join(line for line in lines if not line.startswith(f"{sorted(judged)[0]}\t")))
    assert main(["table", str(ours), str(theirs), "--qrels", str(lacking), "--measure", "RR@10", "--format",
                 "csv"]) == 0
    rows = {row["dataset"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows == {"scifact", "test", "average"}
