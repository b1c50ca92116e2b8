"""Working with other tools' files: topics without judgments, MS MARCO and JSON runs, fusion.

Fast tests read and write small hand-made files; the end-to-end ones share one BM25 search of the
`small_scifact` slice (40 queries, 400 documents) per module."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from pathlib import Path

import pytest

from conftest import TEST_DATA
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_run, read_topics, write_run
from dupmae_eval.errors import InputFormatError
from dupmae_eval.retrieval.fusion import evaluation_order, fuse, fusion_settings

# --------------------------------------------------------------------------- topics


QUERIES = {"301": "international organized crime", "q2": "0-dimensional biomaterials"}

TOPIC_FILES = {
    "queries.tsv": "301\tinternational organized crime\nq2\t0-dimensional biomaterials\n",
    "beir.jsonl": '{"_id": "301", "text": "international organized crime"}\n'
                  '{"_id": "q2", "text": "0-dimensional biomaterials", "metadata": {}}\n',
    "pairs.jsonl": '{"qid": 301, "query": "international organized crime"}\n{"qid": "q2", "query": "0-dimensional '
                   'biomaterials"}\n',
    # the classic TREC layout (no closing tags, `Number:` and a title over two lines), then the tagged one
    "topics.trec": "<top>\n<num> Number: 301\n<title> International Organized\n  Crime\n\n<desc> Description:\n"
                   "Identify organizations.\n</top>\n\n<top><num>q2</num><title>Topic: 0-dimensional biomaterials"
                   "</title><desc>d</desc></top>\n",
}


@pytest.mark.parametrize("name", sorted(TOPIC_FILES))
@pytest.mark.parametrize("packed", [False, True])
def test_every_topics_format_reads_the_same_queries(tmp_path, name, packed):
    path = tmp_path / (name + (".gz" if packed else ""))
    text = TOPIC_FILES[name].encode()
    path.write_bytes(gzip.compress(text) if packed else text)
    queries, fmt = read_topics(path)
    expected = dict(QUERIES, **({"301": "International Organized Crime"} if name.endswith("trec") else {}))
    assert queries == expected and list(queries) == ["301", "q2"]
    assert fmt == {"tsv": "tsv", "jsonl": "jsonl", "trec": "trec"}[name.rsplit(".", 1)[1]]


@pytest.mark.parametrize("text, where, message", [
    ("1\thello\n\n1\tagain\n", 3, "duplicate query id '1' (first at line 1)"),
    ("1\thello\n2\t  \n", 2, "query '2' has empty text"),
    ("just words\n", 1, "not a topics file"),
    ('{"_id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n', 2, 'expected {"_id", "text"} (BEIR) or {"qid", "query"}'),
    ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"\n', 2, "malformed JSON"),
    ("<top>\n<num> 1\n<desc> no title\n</top>\n", 1, "topic without <title>"),
    ("<top><num>1</num><title>a</title></top>\n<top>\n<num> 2\n<title> b\n", 2, "topic is not closed"),
    ("<top><num>1 2</num><title>a</title></top>\n", 1, "topic number '1 2' contains whitespace"),
])
def test_bad_topics_are_one_error_naming_file_and_line(tmp_path, text, where, message):
    path = tmp_path / "topics.txt"
    path.write_text(text)
    with pytest.raises(InputFormatError) as caught:
        read_topics(path)
    assert str(caught.value).startswith(f"{path}:{where}: ") and message in str(caught.value)


# --------------------------------------------------------------------------- run formats

# q1 has a tie (d1, d2 at 2.0): trec_eval ranks tied documents by id, descending, so d2 comes first;
# an MS MARCO copy must rank them so too, or its RR would differ. Hand-worked: with d2 relevant,
# RR = 1 (d2 first); with d1 relevant only, q9's RR = 1/2.
TIED_RUN = {"q1": [("d1", 2.0), ("d2", 2.0), ("d3", 0.5)], "q9": [("d2", 3.0), ("d1", 1.0)]}
TIED_QRELS = "q1 0 d2 1\nq9 0 d1 1\n"


@pytest.mark.parametrize("fmt", ["trec", "msmarco", "json"])
def test_each_format_round_trips_in_evaluation_order(tmp_path, fmt):
    path = tmp_path / f"run.{fmt}"
    write_run(path, TIED_RUN, "tag", fmt)
    read = {qid: evaluation_order(hits) for qid, hits in read_run(path).items()}   # format told from the content
    assert [[doc for doc, _ in read[q]] for q in ("q1", "q9")] == [["d2", "d1", "d3"], ["d2", "d1"]]
    if fmt == "msmarco":                                    # scores 1/rank, as Pyserini's conversion
        assert [score for _, score in read["q1"]] == [1.0, 0.5, pytest.approx(1 / 3)]
        assert path.read_text().splitlines()[:2] == ["q1\td2\t1", "q1\td1\t2"]


def test_a_trec_file_ranks_tied_documents_as_trec_eval_scores_them(tmp_path):
    """q1's d1 and d2 tie at 2.0: trec_eval scores d2 at rank 1, so the file's rank column says so too (a tool
    that reads the ranks, as a conversion to MS MARCO's format does, then scores what trec_eval scores)."""
    path = tmp_path / "run.trec"
    write_run(path, TIED_RUN, "tag")
    assert path.read_text().splitlines()[:3] == ["q1 Q0 d2 1 2.000000 tag", "q1 Q0 d1 2 2.000000 tag",
                                                 "q1 Q0 d3 3 0.500000 tag"]


def test_eval_scores_several_runs_in_any_format_alike_and_prints_json(tmp_path, capsys):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(TIED_QRELS)
    paths = []
    for fmt in ("trec", "msmarco", "json"):
        paths.append(tmp_path / f"run.{fmt}")
        write_run(paths[-1], TIED_RUN, "tag", fmt)
    assert main(["eval", str(qrels), *map(str, paths), "RR", "P@1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{path}\t{line}" for path in paths for line in ("RR\t0.7500", "P@1\t0.5000")]
    assert main(["eval", str(qrels), *map(str, paths), "RR", "--json", "--per-query"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [run["run"] for run in report["runs"]] == list(map(str, paths))
    assert all(run["values"] == {"RR": 0.75} and run["per_query"] == {"RR": {"q1": 1.0, "q9": 0.5}}
               for run in report["runs"])


@pytest.mark.parametrize("name, text, where, message", [
    ("bad.msmarco", "q1\td1\t1\nq1\td2\t1\n", 2, "rank 1 is given twice for query 'q1' (first at line 1)"),
    ("bad.msmarco", "q1\td1\t1\nq1\td2\tsecond\n", 2, "rank 'second' is not a whole number"),
    ("bad.json", '{\n"q1": {"d1": 1.0},\n"q2": {"d1": 1.0, "d2": "high"}\n}\n', 3, "score of document 'd2'"),
    ("bad.json", '{\n"q1": {"d1": 1.0,\n  "d1": 2.0}\n}\n', 3, "document 'd1' is listed twice for query 'q1'"),
    ("bad.json", '{\n"q1": {"d1": 1.0}\n"q2": {}\n}\n', 3, "malformed JSON"),
    ("bad.run", "q1 d1\n", 1, "not a run: expected TREC (6 columns"),
    # numbers Python reads and trec_eval's atof reads otherwise: 1_5 is 15 to Python, 1 to atof (which would
    # rank d2 above d1); other scripts' digits are 15 to Python, 0 to atof
    ("bad.trec", "q1 Q0 d1 1 1_5 t\nq1 Q0 d2 2 2.0 t\n", 1, "rank must be an integer and score a number"),
    ("bad.trec", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 \u0661\u0665 t\n", 2, "rank must be an integer and score a number"),
    ("bad.trec", "q1 Q0 d1 1_0 2.0 t\n", 1, "rank must be an integer and score a number"),
    ("bad.msmarco", "q1\td1\t1_0\n", 1, "rank '1_0' is not a whole number"),
])
def test_eval_refuses_a_bad_run_among_several_before_scoring_any(tmp_path, capsys, name, text, where, message):
    good = tmp_path / "good.trec"
    write_run(good, TIED_RUN, "tag")
    bad = tmp_path / name
    bad.write_text(text)
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(TIED_QRELS)
    assert main(["eval", str(qrels), str(good), str(bad), "RR"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"{bad}:{where}: " in captured.err and message in captured.err


# --------------------------------------------------------------------------- fusion


def test_rrf_by_hand():
    # a: d1 d2 d3 (d2, d3 tied: d3 ranks before d2, ids descending); b: d3 d4
    a = {"q": [("d1", 9.0), ("d2", 5.0), ("d3", 5.0)]}
    b = {"q": [("d3", 0.7), ("d4", 0.1)], "only-b": [("d5", 1.0)]}
    fused = fuse([a, b], fusion_settings("rrf", 2))
    assert fused["q"] == [("d3", 1 / 62 + 1 / 61), ("d1", 1 / 61), ("d4", 1 / 62), ("d2", 1 / 63)]
    assert fused["only-b"] == [("d5", 1 / 61)]
    assert fuse([a, b], fusion_settings("rrf", 2, k=0), hits=1)["q"] == [("d3", 1 / 2 + 1 / 1)]


def test_score_fusion_by_hand():
    a = {"q": [("d1", 4.0), ("d2", 2.0), ("d3", 0.0)]}       # minmax: 1, 0.5, 0
    b = {"q": [("d2", 10.0), ("d4", 6.0)]}                   # minmax: 1, 0
    assert dict(fuse([a, b], fusion_settings("combsum", 2))["q"]) == {"d1": 1.0, "d2": 1.5, "d3": 0.0, "d4": 0.0}
    assert dict(fuse([a, b], fusion_settings("combmnz", 2))["q"]) == {"d1": 1.0, "d2": 3.0, "d3": 0.0, "d4": 0.0}
    wsum = dict(fuse([a, b], fusion_settings("wsum", 2, weights=[0.2, 0.8]))["q"])
    assert wsum == pytest.approx({"d1": 0.2, "d2": 0.9, "d3": 0.0, "d4": 0.0})
    # zmuv of a: mean 2, population sd sqrt(8/3); of b: mean 8, sd 2
    zmuv = dict(fuse([a, b], fusion_settings("combsum", 2, norm="zmuv"))["q"])
    sd = math.sqrt(8 / 3)
    assert zmuv == pytest.approx({"d1": 2 / sd, "d2": 0.0 + 1.0, "d3": -2 / sd, "d4": -1.0})


def _random_run(seed, queries=3, docs=60, pool=100):
    rng = random.Random(seed)
    return {f"q{q}": [(f"d{d}", rng.uniform(-5, 30)) for d in rng.sample(range(pool), docs)] for q in range(queries)}


def _ranx(monkeypatch):
    """ranx with its numba functions run as plain Python (the same code; compiling them takes minutes on a
    two-core machine, and the runs here are small)."""
    import sys

    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    if "numba" in sys.modules and "ranx" not in sys.modules:
        sys.modules["numba"].config.DISABLE_JIT = True
    return pytest.importorskip("ranx")


def test_fusion_equals_ranx(monkeypatch):
    """ranx's fusion of the same runs (no tied scores: ranx orders ties by an unstable sort)."""
    ranx = _ranx(monkeypatch)
    runs = [_random_run(1), _random_run(2), _random_run(3)]
    as_ranx = [ranx.Run({q: dict(hits) for q, hits in run.items()}) for run in runs]
    cases = [("rrf", None, {}, "rrf", None, {"k": 60}), ("rrf", None, {"k": 10}, "rrf", None, {"k": 10}),
             ("combsum", "minmax", {}, "sum", "min-max", {}), ("combmnz", "zmuv", {}, "mnz", "zmuv", {}),
             ("wsum", "minmax", {"weights": [0.5, 0.3, 0.2]}, "wsum", "min-max", {"weights": [0.5, 0.3, 0.2]}),
             ("combsum", "none", {}, "sum", None, {})]
    for method, norm, ours_params, their_method, their_norm, their_params in cases:
        ours = fuse(runs, fusion_settings(method, 3, norm=norm, **ours_params), hits=None)
        theirs = ranx.fuse(as_ranx, norm=their_norm, method=their_method, params=their_params).to_dict()
        assert {q: {d: round(s, 10) for d, s in hits} for q, hits in ours.items()} == \
            {q: {d: round(s, 10) for d, s in hits.items()} for q, hits in theirs.items()}, method


@pytest.mark.parametrize("argv, message", [
    (["--method", "wsum"], "--method wsum needs --weights, one per run (2)"),
    (["--method", "wsum", "--weights", "1"], "--weights: 1 given for 2 runs"),
    (["--method", "rrf", "--norm", "zmuv"], "rrf combines ranks, not scores"),
    (["--method", "combsum", "--k", "10"], "--method combsum has none"),
])
def test_fuse_refuses_bad_settings_in_one_line(tmp_path, capsys, argv, message):
    runs = []
    for name in ("a", "b"):
        runs.append(str(tmp_path / f"{name}.trec"))
        write_run(runs[-1], TIED_RUN, name)
    assert main(["fuse", *runs, *argv, "--output", str(tmp_path / "fused.trec")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "fused.trec").exists()


def test_fuse_refuses_runs_of_other_datasets_in_one_line_before_any_warning(tmp_path, capsys):
    """Sidecars naming other datasets: one line naming both, and no coverage warning first, though the
    second run lacks a query the first has (which alone would be warned about and fused)."""
    runs = []
    for name, dataset, run in (("a", "scifact", TIED_RUN), ("b", "nfcorpus", dict(list(TIED_RUN.items())[:1]))):
        runs.append(tmp_path / f"{name}.trec")
        write_run(runs[-1], run, name)
        Path(f"{runs[-1]}.meta.json").write_text(json.dumps({"condition": name, "dataset": dataset}))
    assert main(["fuse", *map(str, runs), "--method", "rrf", "--output", str(tmp_path / "fused.trec")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{runs[1]} answers another dataset than {runs[0]}" in err[0], err
    assert not (tmp_path / "fused.trec").exists()


# --------------------------------------------------------------------------- end to end on SciFact (BM25)


@pytest.fixture(scope="module")
def judged_bm25(small_scifact, tmp_path_factory):
    """BM25 runs of the SciFact slice's judged queries: TREC, MS MARCO and JSON files of one search, and a
    second TREC run with other parameters (two conditions to fuse)."""
    folder = tmp_path_factory.mktemp("bm25-runs")
    for name, extra in (("bm25.trec", []), ("bm25.msmarco", ["--run-format", "msmarco"]),
                        ("bm25.json", ["--run-format", "json"]), ("bm25-k1.trec", ["--k1", "1.2", "--b", "0.75",
                                                                                    "--tag", "bm25-k1"])):
        assert main(["bm25", "--dataset", str(small_scifact), "--output", str(folder / name), "--threads", "1",
                     *extra]) == 0
    return folder


@pytest.mark.java
def test_topics_without_judgments_give_the_judged_run(small_scifact, judged_bm25, tmp_path, capsys):
    queries = [json.loads(line) for line in (small_scifact / "queries.jsonl").read_text().splitlines()]
    topics = {
        "topics.tsv.gz": gzip.compress("".join(f"{q['_id']}\t{q['text']}\n" for q in queries).encode()),
        "topics.trec": "".join(f"<top>\n<num> Number: {q['_id']}\n<title> {q['text']}\n</top>\n\n"
                               for q in queries).encode(),
        "topics.jsonl": "".join(json.dumps({"qid": q["_id"], "query": q["text"]}) + "\n" for q in queries).encode(),
    }
    judged = (judged_bm25 / "bm25.trec").read_bytes()
    for name, content in topics.items():
        path = tmp_path / name
        path.write_bytes(content)
        out = tmp_path / f"{name}.run"
        assert main(["bm25", "--dataset", str(small_scifact), "--topics", str(path), "--output", str(out),
                     "--threads", "1"]) == 0
        assert out.read_bytes() == judged, name
        meta = json.loads((tmp_path / f"{name}.run.meta.json").read_text())
        assert meta["split"] is None and meta["judgments"].startswith("none")
        assert meta["topics"]["path"] == str(path.resolve()) and meta["queries"] == 40
        assert meta["topics"]["sha256"] == hashlib.sha256(content).hexdigest()
    capsys.readouterr()
    # --eval is refused at once, and a bad topics file names its line, before any search
    refused = tmp_path / "refused.run"
    assert main(["bm25", "--dataset", str(small_scifact), "--topics", str(path), "--eval",
                 "--output", str(refused)]) == 2
    (tmp_path / "bad.tsv").write_text("1\tfine\n2\n")
    assert main(["bm25", "--dataset", str(small_scifact), "--topics", str(tmp_path / "bad.tsv"),
                 "--output", str(refused)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--eval: the queries of --topics" in err[0] and f"{tmp_path / 'bad.tsv'}:2: " in err[1]
    assert not refused.exists()
    # a table of the folder leaves the unjudged runs out; named, one is refused in one line
    assert main(["table", str(tmp_path / "topics.trec.run")]) == 2
    assert "no judgments to score it with" in capsys.readouterr().err


@pytest.mark.java
def test_a_run_in_three_formats_scores_the_same(small_scifact, judged_bm25, capsys):
    runs = [judged_bm25 / name for name in ("bm25.trec", "bm25.msmarco", "bm25.json")]
    assert main(["eval", str(small_scifact / "qrels" / "test.tsv"), *map(str, runs),
                 "nDCG@10", "R@100", "R@1000", "AP", "RR@10", "--json"]) == 0
    values = [run["values"] for run in json.loads(capsys.readouterr().out)["runs"]]
    assert values[0] == values[1] == values[2] and values[0]["nDCG@10"] > 0.5
    # the MS MARCO file's ranks are the order the TREC file is evaluated in
    trec = read_run(runs[0])
    assert {q: [d for d, _ in sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)] for q, hits in trec.items()} \
        == {q: [d for d, _ in hits] for q, hits in read_run(runs[1]).items()}


@pytest.mark.java
def test_fused_run_has_its_sidecar_and_sits_beside_its_inputs_in_the_table(judged_bm25, tmp_path, capsys):
    inputs = [judged_bm25 / "bm25.trec", judged_bm25 / "bm25-k1.trec"]
    fused = tmp_path / "fused.json"
    assert main(["fuse", *map(str, inputs), "--method", "rrf", "--output", str(fused), "--run-format", "json"]) == 0
    meta = json.loads((tmp_path / "fused.json.meta.json").read_text())
    assert meta["fusion"]["method"] == "rrf" and meta["fusion"]["k"] == 60 and meta["condition"] == "fused-rrf"
    assert [(i["path"], i["sha256"], i["condition"]) for i in meta["fusion"]["inputs"]] == [
        (str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest(), c) for p, c in zip(inputs, ("bm25-flat", "bm25-k1"))]
    # RRF by hand from the two files, in trec_eval's order (score descending, ties by id descending)
    by_hand = {}
    for run in map(read_run, inputs):
        for qid, hits in run.items():
            ranked = sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)
            for rank, (docid, _) in enumerate(ranked, start=1):
                by_hand.setdefault(qid, {}).setdefault(docid, 0.0)
                by_hand[qid][docid] += 1 / (60 + rank)
    written = read_run(fused)
    assert all({d: round(s, 6) for d, s in hits} == {d: round(s, 6) for d, s in sorted(
        by_hand[q].items(), key=lambda item: (item[1], item[0]), reverse=True)[:1000]} for q, hits in written.items())
    capsys.readouterr()
    assert main(["table", str(inputs[0]), str(inputs[1]), str(fused)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert all(name in header for name in ("bm25-flat", "bm25-k1", "fused-rrf"))
