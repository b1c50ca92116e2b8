"""BM25 end to end through Pyserini's Lucene, checked against Pyserini's published figures and
against Anserini's own Java command-line tools run on the same data (an independent pipeline)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from conftest import TEST_DATA
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_trec_run
from dupmae_eval.evaluation.suites import load_suite
from dupmae_eval.shipped import suite_path

pytestmark = [pytest.mark.java, pytest.mark.slow]


def _eval_lines(capsys, *args):
    capsys.readouterr()
    assert main(["eval", *map(str, args)]) == 0
    return dict(line.split("\t") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("fields", ["flat", "multifield"])
def test_scifact_matches_pyserini_published_figures(fields, tmp_path, capsys):
    run = tmp_path / f"{fields}.trec"
    assert main(["bm25", "--dataset", "scifact", "--fields", fields, "--output", str(run)]) == 0
    printed = _eval_lines(capsys, "scifact", run, "nDCG@10", "R@100", "R@1000")
    published = load_suite(suite_path("demo")).conditions[f"bm25-{fields}"].expected["scifact"]   # Pyserini's 2CR
    assert printed == {m: f"{v:.4f}" for m, v in published.items()}
    assert (tmp_path / f"{fields}.trec.meta.json").is_file()


def _trec_eval(anserini, qrels, run, *options):
    """Anserini's bundled trec_eval (the C program); returns {measure: value string}."""
    out = anserini("trec_eval", "-c", *options, qrels, run)
    return {line.split()[0]: line.split()[2] for line in out.splitlines() if line.strip()}


def _comparable(run_path):
    return {qid: sorted(hits) for qid, hits in read_trec_run(run_path).items()}


def test_vaswani_equals_anserini_cli(tmp_path, anserini, capsys):
    """Any BEIR-layout folder works unchanged: Vaswani, vs Anserini's own indexer and searcher."""
    ours = tmp_path / "ours.trec"
    assert main(["bm25", "--dataset", str(TEST_DATA / "vaswani"), "--output", str(ours)]) == 0

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(TEST_DATA / "vaswani" / "corpus.jsonl.gz", "rb") as packed:
        (corpus / "corpus.jsonl").write_bytes(packed.read())
    topics = tmp_path / "topics.tsv"
    with open(TEST_DATA / "vaswani" / "queries.jsonl") as queries, open(topics, "w") as out:
        for line in queries:
            record = json.loads(line)
            out.write(f"{record['_id']}\t{record['text']}\n")
    anserini("io.anserini.index.IndexCollection", "-collection", "BeirFlatCollection", "-input", corpus,
             "-index", tmp_path / "index", "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1")
    theirs = tmp_path / "anserini.trec"
    anserini("io.anserini.search.SearchCollection", "-index", tmp_path / "index", "-topics", topics,
             "-topicReader", "TsvString", "-output", theirs, "-bm25", "-bm25.k1", "0.9", "-bm25.b", "0.4",
             "-hits", "1000", "-removeQuery", "-threads", "2")
    assert _comparable(ours) == _comparable(theirs)
    assert len(read_trec_run(ours)) == 93

    qrels = TEST_DATA / "vaswani" / "qrels" / "test.tsv"
    trec_qrels = tmp_path / "qrels.txt"
    trec_qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in
                                  (l.split("\t") for l in qrels.read_text().splitlines()[1:])))
    printed = _eval_lines(capsys, qrels, ours, "nDCG@10", "R@100", "R@1000", "AP")
    reference = _trec_eval(anserini, trec_qrels, ours, "-m", "ndcg_cut.10", "-m", "recall.100,1000", "-m", "map")
    assert printed == {"nDCG@10": reference["ndcg_cut_10"], "R@100": reference["recall_100"],
                       "R@1000": reference["recall_1000"], "AP": reference["map"]}


@pytest.mark.parametrize("split", ["dl19", "dl20"])
def test_msmarco_layout_dl_runs_and_trec_dl_measures(split, tmp_path, anserini, capsys):
    folder = TEST_DATA / "msmarco-passage-sample"
    ours = tmp_path / f"{split}.trec"
    assert main(["bm25", "--dataset", str(folder), "--split", split, "--output", str(ours)]) == 0

    collection = tmp_path / "collection"
    collection.mkdir()
    with gzip.open(folder / "collection.tsv.gz", "rt") as packed, open(collection / "docs.jsonl", "w") as out:
        for line in packed:  # the conversion Pyserini's MS MARCO guide does before indexing
            pid, text = line.rstrip("\n").split("\t", 1)
            out.write(json.dumps({"id": pid, "contents": text}) + "\n")
    anserini("io.anserini.index.IndexCollection", "-collection", "JsonCollection", "-input", collection,
             "-index", tmp_path / "index", "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1")
    theirs = tmp_path / "anserini.trec"
    anserini("io.anserini.search.SearchCollection", "-index", tmp_path / "index", "-topics",
             folder / f"queries.{split}-passage.tsv", "-topicReader", "TsvInt", "-output", theirs,
             "-bm25", "-bm25.k1", "0.9", "-bm25.b", "0.4", "-hits", "1000")
    assert _comparable(ours) == _comparable(theirs)

    qrels = folder / f"qrels.{split}-passage.txt"
    printed = _eval_lines(capsys, qrels, ours, "nDCG@10", "AP(rel=2)", "R(rel=2)@1000")
    graded = _trec_eval(anserini, qrels, ours, "-m", "ndcg_cut.10")
    binary = _trec_eval(anserini, qrels, ours, "-l", "2", "-m", "map", "-m", "recall.1000")
    assert printed == {"nDCG@10": graded["ndcg_cut_10"], "AP(rel=2)": binary["map"],
                       "R(rel=2)@1000": binary["recall_1000"]}


def test_bm25_eval_flag_uses_the_dataset_measures(tmp_path, capsys):
    run = tmp_path / "dl19.trec"
    assert main(["bm25", "--dataset", str(TEST_DATA / "msmarco-passage-sample"), "--split", "dl19",
                 "--output", str(run), "--eval"]) == 0
    measures = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert measures == ["nDCG@10", "AP(rel=2)", "R(rel=2)@1000"]


def test_malformed_corpus_leaves_no_run_and_no_index(tmp_path, cache_home, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(TEST_DATA / "vaswani", folder)
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as packed:
        lines = packed.read().splitlines()
    lines[41] = '{"_id": "42", "title": "", "text": "unterminated'
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as packed:
        packed.write("\n".join(lines) + "\n")
    before = sorted(cache_home.rglob("*"))
    out = tmp_path / "run.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corpus.jsonl.gz:42: malformed JSON" in err[0]
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    assert sorted(cache_home.rglob("*")) == before


def test_unknown_dataset_and_empty_query_exit_nonzero(tmp_path, capsys):
    assert main(["bm25", "--dataset", "no-such-set", "--output", str(tmp_path / "r.trec")]) == 2
    assert "unknown dataset 'no-such-set'" in capsys.readouterr().err
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "hello world"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "  "}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert main(["bm25", "--dataset", str(folder), "--output", str(tmp_path / "r.trec")]) == 2
    err = capsys.readouterr().err
    assert "query 'q1' has empty text" in err and not (tmp_path / "r.trec").exists()


def test_bm25_writes_only_its_own_notice_to_stderr(small_scifact, tmp_path):
    """No JVM log lines among the toolkit's: neither SLF4J's "Connected with provider" on the first index nor
    Lucene's dated INFO note ("to disable start with -D...") when a cached index is searched."""
    import os
    import subprocess
    import sys

    for attempt in ("indexes", "reuses the index"):
        run = tmp_path / f"{attempt.split()[0]}.trec"
        done = subprocess.run([sys.executable, "-m", "dupmae_eval", "bm25", "--dataset", str(small_scifact),
                               "--output", str(run)], capture_output=True, text=True, env=os.environ, timeout=600)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [f"wrote {run} (40 queries)"], attempt
