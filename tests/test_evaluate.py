"""Evaluation: hand-worked examples, trec_eval -c semantics, and trec_eval's own test fixture."""

from __future__ import annotations

import math
import re

import pytest

from conftest import REPO, TEST_DATA
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_qrels, read_trec_run
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.measures import evaluate, named_values

# trec_eval's measure names in out.test -> ir-measures' spelling.
TREC_EVAL_NAMES = {"map": "AP", "Rprec": "Rprec", "bpref": "Bpref", "recip_rank": "RR",
                   "num_ret": "NumRet", "num_rel": "NumRel", "num_rel_ret": "NumRelRet", "num_q": "NumQ"}


def _trec_eval_expected():
    expected = {}
    for line in (TEST_DATA / "trec_eval" / "out.test").read_text().splitlines():
        name, _, value = line.split()
        if name.startswith("P_"):
            expected[f"P@{name[2:]}"] = value
        elif name.startswith("iprec_at_recall_"):
            expected[f"IPrec@{float(name.rsplit('_', 1)[1]):g}"] = value
        elif name in TREC_EVAL_NAMES:
            expected[TREC_EVAL_NAMES[name]] = value
    return expected


def test_eval_prints_what_trec_eval_printed(capsys):
    expected = _trec_eval_expected()
    assert {"AP", "P@10", "IPrec@0.1", "Rprec", "Bpref", "RR"} <= set(expected)
    code = main(["eval", str(TEST_DATA / "trec_eval" / "qrels.test"),
                 str(TEST_DATA / "trec_eval" / "results.test"), *expected])
    assert code == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    for measure, value in expected.items():
        if measure.startswith("Num"):
            assert float(printed[measure]) == float(value), measure
        else:
            assert printed[measure] == value, measure
    assert printed["AP"] == "0.1785" and printed["P@10"] == "0.3000"


def test_eval_takes_measures_after_its_flags(capsys):
    """`eval QRELS RUN --per-query AP` scores AP, as with the flag at the end; an unknown flag still fails."""
    qrels, run = str(TEST_DATA / "trec_eval" / "qrels.test"), str(TEST_DATA / "trec_eval" / "results.test")
    assert main(["eval", qrels, run, "AP", "P@10", "--per-query"]) == 0
    last = capsys.readouterr().out
    assert main(["eval", qrels, run, "--per-query", "AP", "P@10"]) == 0
    first = capsys.readouterr().out
    assert first == last and "AP\t0.1785" in first and "P@10\t0.3000" in first
    with pytest.raises(SystemExit):
        main(["eval", qrels, run, "--per-query", "AP", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_hand_worked_example():
    # q1: relevant d1 (grade 2) and d3 (grade 1); ranking d2, d1, d3.
    qrels = {"q1": {"d1": 2, "d3": 1, "d2": 0}}
    run = {"q1": [("d2", 3.0), ("d1", 2.0), ("d3", 1.0)]}
    result = evaluate(qrels, run, ["nDCG@10", "RR@10", "AP", "R@2", "P@1", "AP(rel=2)"]).aggregate
    dcg = (2 ** 2 - 1) / math.log2(3) + (2 ** 1 - 1) / math.log2(4)
    ideal = (2 ** 2 - 1) / math.log2(2) + (2 ** 1 - 1) / math.log2(3)
    # trec_eval's ndcg uses the grade itself as gain, not 2^grade - 1:
    dcg_linear = 2 / math.log2(3) + 1 / math.log2(4)
    ideal_linear = 2 / math.log2(2) + 1 / math.log2(3)
    assert result["nDCG@10"] == pytest.approx(dcg_linear / ideal_linear)
    assert result["nDCG@10"] != pytest.approx(dcg / ideal)
    assert result["RR@10"] == pytest.approx(1 / 2)
    assert result["AP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["R@2"] == pytest.approx(1 / 2)
    assert result["P@1"] == 0.0
    assert result["AP(rel=2)"] == pytest.approx(1 / 2)


def test_judged_queries_missing_from_the_run_count_as_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": [("d1", 1.0)], "q9": [("d2", 1.0)]}
    evaluation = evaluate(qrels, run, ["nDCG@10", "R@1000"])
    assert evaluation.aggregate == {"nDCG@10": 0.5, "R@1000": 0.5}
    assert evaluation.per_query["nDCG@10"] == {"q1": 1.0, "q2": 0.0}


def test_a_judged_query_missing_from_the_run_keeps_its_relevant_documents_in_num_rel():
    """trec_eval -c scores a missing query on an empty ranking: num_rel still counts its relevant documents
    (2 for q1: grades 1 and 2, not the 0) and num_q counts it, as `trec_eval -c -q` prints for these files."""
    qrels = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"d": 1}}
    names = ["NumRel", "NumQ", "NumRelRet", "P@1"]
    evaluation = evaluate(qrels, {"q2": [("d", 1.0)]}, names)
    assert evaluation.per_query["NumRel"] == {"q1": 2.0, "q2": 1.0}
    assert named_values(evaluation, names) == {"NumRel": 3.0, "NumQ": 2.0, "NumRelRet": 1.0, "P@1": 0.5}


def test_iprec_judged_only_ranks_the_judged_documents_alone():
    """trec_eval -J drops unjudged documents before ranking: x a y b c becomes a b c, so the relevant a and c
    stand at ranks 1 and 3 (precision 1 and 2/3) instead of 2 and 5 (1/2 and 2/5); `trec_eval -J -m
    iprec_at_recall.0.5,1.0` prints 1.0000 and 0.6667 for these files, without -J 0.5000 and 0.4000."""
    qrels = {"q": {"a": 1, "b": 0, "c": 1}}
    run = {"q": [("x", 5.0), ("a", 4.0), ("y", 3.0), ("b", 2.0), ("c", 1.0)]}
    names = ["IPrec@0.5", "IPrec@1.0", "IPrec(judged_only=True)@0.5", "IPrec(judged_only=True)@1.0",
             "P(judged_only=True)@3"]
    values = named_values(evaluate(qrels, run, names), names)
    assert values == {"IPrec@0.5": 0.5, "IPrec@1.0": pytest.approx(2 / 5), "IPrec(judged_only=True)@0.5": 1.0,
                      "IPrec(judged_only=True)@1.0": pytest.approx(2 / 3),
                      "P(judged_only=True)@3": pytest.approx(2 / 3)}      # pytrec_eval's -J, for comparison
    # a query whose retrieved documents are all unjudged scores 0
    assert evaluate(qrels, {"q": [("x", 1.0)]}, ["IPrec(judged_only=True)@0.5"]).aggregate == {
        "IPrec(judged_only=True)@0.5": 0.0}


def test_rr_at_10_is_cut_at_10():
    qrels = {"q": {"d11": 1}}
    run = {"q": [(f"d{i}", 100.0 - i) for i in range(1, 12)]}
    assert evaluate(qrels, run, ["RR@10", "RR"]).aggregate == {"RR@10": 0.0, "RR": pytest.approx(1 / 11)}


def test_tied_scores_rank_by_doc_id_descending_in_every_measure():
    """trec_eval ranks tied scores by doc id, descending: q1's b before a, q2's z before c. RR@k and Judged@k
    come from ir-measures' own code, not pytrec_eval's, and ranked ties the other way (RR@10 1.0, RR 0.5)."""
    qrels = {"q1": {"a": 1, "b": 0}, "q2": {"c": 1}}
    run = {"q1": [("a", 1.0), ("b", 1.0)], "q2": [("c", 2.0), ("z", 2.0)]}
    result = evaluate(qrels, run, ["RR", "RR@10", "RR@1", "P@1", "Judged@1", "Judged@2"]).per_query
    # by hand, in trec_eval's order (q1: b a; q2: z c): the relevant document second, the top one judged in q1 only
    assert result["RR"] == result["RR@10"] == {"q1": 0.5, "q2": 0.5}
    assert result["RR@1"] == result["P@1"] == {"q1": 0.0, "q2": 0.0}
    assert result["Judged@1"] == {"q1": 1.0, "q2": 0.0}
    assert result["Judged@2"] == {"q1": 1.0, "q2": 0.5}


def test_unknown_measure_is_one_clear_error():
    with pytest.raises(DupMAEEvalError, match="unknown measure 'nDCG@ten'"):
        evaluate({"q": {"d": 1}}, {"q": [("d", 1.0)]}, ["nDCG@ten"])


@pytest.mark.parametrize("name, says", [
    ("nDCG@0", "the cutoff must be at least 1"),                 # pytrec_eval aborted the whole process
    ("IPrec@1.5", "the recall level must lie within [0, 1]"),    # was printed as 0.0000
    ("INST", "unknown measure 'INST'"),                          # a parameter it needs, not given
    ("P@10.5", "unknown measure 'P@10.5'"),
    ("NumRel(rel=2)", "no evaluator"),                           # parsed, but nothing computes it
])
def test_a_measure_ir_measures_cannot_compute_is_refused_in_one_line_before_the_runs_are_read(
        tmp_path, capsys, name, says):
    from dupmae_eval.evaluation.measures import parse_measures

    with pytest.raises(DupMAEEvalError, match=re.escape(says)):
        parse_measures([name])
    bad_run = tmp_path / "bad.trec"
    bad_run.write_text("not a run line\n")
    assert main(["eval", str(TEST_DATA / "trec_eval" / "qrels.test"), str(bad_run), "AP", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "bad.trec" not in err[0]


def test_iprec_at_recall_levels_zero_and_one_and_judged_only_stay_accepted():
    from dupmae_eval.evaluation.measures import parse_measures

    assert [str(m) for m in parse_measures(["IPrec@0", "IPrec@1", "IPrec(judged_only=True)@0.5"])] == [
        "IPrec@0", "IPrec@1", "IPrec(judged_only=True)@0.5"]


def test_eval_takes_a_registry_name_for_shipped_qrels(tmp_path, capsys):
    qrels = read_qrels(REPO / "qrels" / "qrels.beir-v1.0.0-scifact.test.txt.gz")
    # a perfect run: every judged document first
    run_path = tmp_path / "perfect.trec"
    run_path.write_text("".join(f"{qid} Q0 {doc} 1 1.0 x\n" for qid, docs in qrels.items() for doc in docs))
    assert main(["eval", "scifact", str(run_path), "nDCG@10", "R@100"]) == 0
    assert capsys.readouterr().out.splitlines() == ["nDCG@10\t1.0000", "R@100\t1.0000"]


def test_eval_bad_run_exits_nonzero_with_one_line(tmp_path, capsys):
    run_path = tmp_path / "bad.trec"
    run_path.write_text("1 Q0 d1 1 1.0 x\nnot a run line\n")
    assert main(["eval", str(TEST_DATA / "trec_eval" / "qrels.test"), str(run_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run_path}:2: not TREC run format" in err[0]


def test_read_results_fixture_keeps_every_line():
    run = read_trec_run(TEST_DATA / "trec_eval" / "results.test")
    assert sum(len(hits) for hits in run.values()) == 1500


def _run_of(tmp_path, qrels, name="run.trec", depth=None):
    """A run that ranks each query's judged documents (all, or the first `depth`) in file order."""
    path = tmp_path / name
    path.write_text("".join(f"{qid} Q0 {doc} {rank} {100 - rank} x\n" for qid, docs in qrels.items()
                            for rank, doc in enumerate(list(docs)[:depth], 1)))
    return path


def test_eval_refuses_a_run_that_shares_no_query_with_the_judgments(tmp_path, capsys):
    # a DL19 run scored against msmarco-passage's default (dev-subset) judgments
    dl19 = read_qrels(TEST_DATA / "msmarco-passage-sample" / "qrels.dl19-passage.txt")
    run = _run_of(tmp_path, dl19)
    assert main(["eval", "msmarco-passage", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dupmae-eval: error: no query of the run is judged")
    assert f"run's {len(dl19)} queries" in err[0] and "6980 queries" in err[0] and "--split dl19" in err[0]
    # the same run with the split it belongs to is scored
    assert main(["eval", "msmarco-passage", str(run), "--split", "dl19"]) == 0
    assert "covers" not in capsys.readouterr().err


def test_eval_refuses_a_run_of_another_collection_given_a_qrels_file(tmp_path, capsys):
    vaswani = read_qrels(TEST_DATA / "vaswani" / "qrels" / "test.tsv")
    run = _run_of(tmp_path, {f"vaswani-{qid}": docs for qid, docs in vaswani.items()})
    assert main(["eval", str(REPO / "data" / "scifact" / "qrels" / "test.tsv"), str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none in common" in err[0] and "300 queries" in err[0]


def test_eval_warns_once_about_partial_coverage_and_still_scores(tmp_path, capsys):
    scifact = read_qrels(REPO / "data" / "scifact" / "qrels" / "test.tsv")
    two = dict(list(scifact.items())[:2])
    run = _run_of(tmp_path, two)
    assert main(["eval", str(REPO / "data" / "scifact" / "qrels" / "test.tsv"), str(run), "P@1"]) == 0
    captured = capsys.readouterr()
    # two perfect queries of 300: 2/300 on average
    assert captured.out.splitlines() == [f"P@1\t{2 / 300:.4f}"]
    assert captured.err.splitlines() == ["dupmae-eval: warning: run covers 2 of 300 judged queries; "
                                         "trec_eval -c scores the 298 missing as 0"]


def test_eval_warns_about_a_run_whose_ranks_run_against_its_scores(tmp_path, capsys):
    """q1's scores are distances (lower is better): its rank column puts a first, trec_eval's score order b.
    The run is scored as trec_eval scores it (RR 1/2 for q1), with one warning; a file whose lines are merely
    out of rank order (trec_eval's own results.test, sorted by document) is not warned about."""
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 a 1\nq2 0 c 1\n")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 a 1 0.1 t\nq1 Q0 b 2 0.5 t\nq2 Q0 d 2 1.0 t\nq2 Q0 c 1 3.0 t\n")
    assert main(["eval", str(qrels), str(run), "RR"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"RR\t{(1 / 2 + 1) / 2:.4f}"]
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("dupmae-eval: warning: 1 of 2 queries list documents in a rank "
                                               "order their scores run against")
    assert main(["eval", str(TEST_DATA / "trec_eval" / "qrels.test"), str(TEST_DATA / "trec_eval" / "results.test"),
                 "AP"]) == 0
    assert capsys.readouterr().err == ""


def test_eval_warns_when_a_cutoff_is_beyond_the_run_depth(tmp_path, capsys):
    qrels = {"q1": {f"d{i}": 1 for i in range(5)}}
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("".join(f"q1 0 d{i} 1\n" for i in range(5)))
    run = _run_of(tmp_path, qrels, depth=3)
    assert main(["eval", str(qrels_path), str(run), "R@3", "R@1000"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["R@3\t0.6000", "R@1000\t0.6000"]
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("dupmae-eval: warning: R@1000: cutoff beyond the run's depth (3 ")


def test_gdeval_measures_are_hand_worked_and_refused_for_ids_or_grades_it_misreads():
    """ERR@k and nDCG(dcg='exp-log2')@k come from ir-measures' gdeval (TREC Web's gdeval.pl, grades up to 4).
    By hand: query 1 has its tied pair in trec_eval's order (d2, unjudged-as-0, first; d1, grade 1, second):
    ERR = (2^1 - 1) / 2^4 / 2 = 1/32, nDCG = (2^1 - 1) / log2(3) / 1; query 2 finds its grade-2 passage
    second: ERR = 3/16 / 2. gdeval reads "PLAIN-1" as "1", so its value came back under another id and the
    query counted as 0 without a word; such ids, and a grade above 4, are refused in one line."""
    qrels = {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}
    run = {"1": [("d1", 1.0), ("d2", 1.0)], "2": [("d4", 3.0), ("d3", 2.0)]}
    found = evaluate(qrels, run, ["ERR@10", "nDCG(dcg='exp-log2')@10"]).per_query
    assert found["ERR@10"] == pytest.approx({"1": 1 / 32, "2": 3 / 32})
    assert found["nDCG(dcg='exp-log2')@10"] == pytest.approx({"1": 1 / math.log2(3), "2": 3 / math.log2(3) / 3},
                                                             abs=1e-5)         # gdeval prints 5 decimals
    named = {f"PLAIN-{qid}": judged for qid, judged in qrels.items()}
    with pytest.raises(DupMAEEvalError, match="ERR@10: computed by gdeval, which reads numeric query ids only; "
                                              "query id 'PLAIN-1' is not one"):
        evaluate(named, {f"PLAIN-{qid}": hits for qid, hits in run.items()}, ["nDCG@10", "ERR@10"])
    with pytest.raises(DupMAEEvalError, match="takes grades up to 4; query '2' judges 'd3' 5"):
        evaluate({**qrels, "2": {"d3": 5}}, run, ["ERR@10"])

def test_eval_takes_a_dataset_folder_or_a_mapped_name_for_its_judgments(tmp_path, capsys, monkeypatch):
    """A BEIR folder (Vaswani, not in the registry) as QRELS: its test judgments and BEIR's measures, as
    `bm25 --eval` scores it; a name DUPMAE_EVAL_DATA maps to the folder alike."""
    folder = TEST_DATA / "vaswani"
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    run_path = tmp_path / "perfect.trec"          # every judged document first: a perfect run
    run_path.write_text("".join(f"{qid} Q0 {doc} 1 1.0 x\n" for qid, docs in qrels.items() for doc in docs))
    assert main(["eval", str(folder), str(run_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["nDCG@10\t1.0000", "R@100\t1.0000", "R@1000\t1.0000"]
    monkeypatch.setenv("DUPMAE_EVAL_DATA", f"vaswani={folder}")
    assert main(["eval", "vaswani", str(run_path), "P@1", "--json"]) == 0
    assert '"split": "test"' in capsys.readouterr().out
    assert main(["eval", str(folder), str(run_path), "--split", "train"]) == 2
    assert "no judgments for split 'train'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing"), str(run_path)]) == 2
    assert "neither a qrels file, a dataset folder nor a registry dataset name" in capsys.readouterr().err


def test_eval_warns_when_the_runs_sidecar_names_another_dataset(tmp_path, capsys):
    """A Vaswani run (query ids 1, 2, 3, ... as SciFact's) scored against SciFact's judgments shares some
    query ids, so it is not refused; its sidecar says what it is a run of, and eval says so. A run of the
    dataset it is scored against gets no such warning."""
    import json

    run = tmp_path / "vaswani.trec"
    run.write_text("".join(f"{qid} Q0 {qid}0 1 1.0 x\n" for qid in range(1, 94)))
    (tmp_path / "vaswani.trec.meta.json").write_text(json.dumps({"dataset": "vaswani", "split": "test",
                                                                 "condition": "x"}))
    assert main(["eval", "scifact", str(run), "P@1"]) == 0
    err = capsys.readouterr().err
    assert (f"warning: {run}: its sidecar says it is a run of vaswani (split test); it is scored here against "
            f"scifact (split test)") in err
    assert main(["eval", str(TEST_DATA / "vaswani"), str(run), "P@1"]) == 0
    assert "sidecar" not in capsys.readouterr().err
    # a run of a copy or sample under another name that answers every judged query is not warned about
    (tmp_path / "vaswani.trec.meta.json").write_text(json.dumps({"dataset": "vaswani-sample", "split": "test",
                                                                 "condition": "x"}))
    assert main(["eval", str(TEST_DATA / "vaswani"), str(run), "P@1"]) == 0
    assert "sidecar" not in capsys.readouterr().err


def test_eval_says_when_its_arguments_come_in_the_wrong_order(capsys):
    """The run given where the judgments belong, or a measure where the run belongs: the one line says which
    way round they go."""
    qrels, run = TEST_DATA / "trec_eval" / "qrels.test", TEST_DATA / "trec_eval" / "results.test"
    assert main(["eval", str(run), str(qrels)]) == 2
    assert "found 6 (a TREC run's 6 columns: are the judgments and the run the other way round?)" in \
        capsys.readouterr().err
    assert main(["eval", str(qrels), "P@10", str(run)]) == 2
    assert capsys.readouterr().err.strip() == ("dupmae-eval: error: P@10: a measure where a run file belongs; give "
                                               "the runs first, then the measures (eval QRELS RUN [RUN ...] "
                                               "[MEASURE ...])")


@pytest.mark.parametrize("given, meant", [("ndcg@10", "nDCG@10"), ("rr@10", "RR@10"), ("ap(rel=2)", "AP(rel=2)")])
def test_a_measure_in_the_wrong_case_is_refused_naming_its_spelling(given, meant):
    with pytest.raises(DupMAEEvalError, match=rf"unknown measure '{re.escape(given)}' .*did you mean "
                                              rf"'{re.escape(meant)}'\?"):
        evaluate({"q": {"d": 1}}, {"q": [("d", 1.0)]}, [given])
    with pytest.raises(DupMAEEvalError) as caught:
        evaluate({"q": {"d": 1}}, {"q": [("d", 1.0)]}, ["foo@3"])
    assert "did you mean" not in str(caught.value)


def test_per_query_lines_name_each_measure_as_asked(tmp_path, capsys):
    """`eval --per-query MRR@10 NumRelRet`: the per-query lines use the names typed, as the aggregate lines do
    (ir-measures calls them RR@10 and NumRet(rel=1)). By hand: query 1's relevant passage at rank 1, query 2's
    at rank 2."""
    qrels, run = tmp_path / "q.txt", tmp_path / "r.trec"
    qrels.write_text("1 0 d1 1\n2 0 d3 1\n")
    run.write_text("1 Q0 d1 1 2.0 a\n2 Q0 d4 1 2.0 a\n2 Q0 d3 2 1.0 a\n")
    assert main(["eval", str(qrels), str(run), "MRR@10", "NumRelRet", "--per-query"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "MRR@10\t0.7500", "NumRelRet\t2.0000", "MRR@10\t1\t1.0000", "MRR@10\t2\t0.5000",
        "NumRelRet\t1\t1.0000", "NumRelRet\t2\t1.0000"]
