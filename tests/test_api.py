"""The Python API: cheap to import, keyword functions that return objects, the docs' tour runs as printed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dupmae_eval
from dupmae_eval.errors import DupMAEEvalError

TOUR = Path(__file__).resolve().parents[1] / "docs" / "examples" / "tour.py"
HEAVY = ("torch", "transformers", "jnius", "pyserini", "pandas", "faiss", "ir_measures")


def test_importing_the_package_and_naming_the_api_loads_nothing_heavy():
    code = ("import sys, dupmae_eval as de\n"
            "de.bm25, de.run, de.table, de.Run, de.DupMAEEvalError\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(dupmae_eval.__all__) >= {"bm25", "run", "evaluate", "table", "encoders", "finetune", "load_run",
                                        "DupMAEEvalError"}
    assert dupmae_eval.DupMAEEvalError is DupMAEEvalError and "DupMAEEvalError" in dir(dupmae_eval)
    try:                                                 # the documented way to catch a refusal
        dupmae_eval.bm25("scifact", b=2)
    except dupmae_eval.DupMAEEvalError as exc:
        assert str(exc).startswith("bm25(): b: 2")


def test_bad_arguments_are_refused_in_one_line_before_any_work(tmp_path):
    with pytest.raises(DupMAEEvalError, match=r"^bm25\(\): k1: -1(\.0)? must be"):
        dupmae_eval.bm25("scifact", k1=-1)
    with pytest.raises(DupMAEEvalError, match=r"^bm25\(\): fields: 'title'"):
        dupmae_eval.bm25("scifact", fields="title")
    with pytest.raises(DupMAEEvalError, match=r"unknown setting 'top_k'"):
        dupmae_eval.run("scifact", "package:cognition/model", top_k=10)
    with pytest.raises(DupMAEEvalError, match=r"^bm25\(\): name 'a b' must not contain whitespace"):
        dupmae_eval.bm25("scifact", name="a b")          # the run's tag: refused before the index, not at writing
    with pytest.raises(DupMAEEvalError, match=r"^run\(\): name 'a\\tb' must not contain whitespace"):
        dupmae_eval.run("scifact", "package:cognition/model", name="a\tb")
    (tmp_path / "file").write_text("")
    with pytest.raises(DupMAEEvalError, match="output"):
        dupmae_eval.bm25("scifact", output=tmp_path / "file" / "run.trec")


def test_the_tour_runs_and_prints_pyserinis_figures():
    """docs/examples/tour.py as a user runs it (docs/api.md shows its output). The BM25 figures are
    Pyserini's published SciFact figures (flat 0.6789, multifield 0.6647 nDCG@10)."""
    done = subprocess.run([sys.executable, str(TOUR)], capture_output=True, text=True, env=os.environ,
                          cwd=TOUR.parent, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^bm25-flat\s+0\.6789\s+0\.9253\s+0\.9767$", out, re.M), out
    assert re.search(r"^bm25-multifield\s+0\.6647\s+0\.9076\s+0\.9800$", out, re.M), out
    assert "| scifact | 0.6789 | 0.6647 | -0.0142 |" in out
    wins, losses, ties = map(int, re.search(r"better on (\d+) queries, worse on (\d+), equal on (\d+)", out).groups())
    assert wins + losses + ties == 300                 # SciFact test: 300 judged queries
    assert out.count("0.6789") >= 4                    # evaluate, concat, table, and the run read back from disk
    top_term = re.search(r"^\[\('(\w+)', \d+\)", out, re.M).group(1)
    assert top_term == "fever"


def test_a_run_saved_in_each_format_loads_back_and_scores_the_same(tmp_path):
    """Run.save in TREC, MS MARCO and JSON; load_run reads each through its sidecar; the three score alike
    (MS MARCO keeps ranks only, so the scores are 1/rank, the order and hence the measures the same)."""
    from dupmae_eval.data.datasets import resolve

    data = resolve("scifact", download=False)
    qrels = data.qrels("test")
    hits = {qid: [(doc, 2.0 - rank / 10) for rank, doc in enumerate(list(qrels[qid]) + ["4983", "5836"])]
            for qid in sorted(qrels)[:5]}
    run = dupmae_eval.Run("hand-made", data, "test", hits, {"dataset": "scifact", "split": "test",
                                                             "condition": "hand-made"})
    with pytest.warns(UserWarning, match="covers 5 of 300"):
        expected = run.evaluate()
    for fmt in ("trec", "msmarco", "json"):
        loaded = dupmae_eval.load_run(run.save(tmp_path / f"run.{fmt}", run_format=fmt))
        assert [doc for doc, _ in loaded.hits[sorted(qrels)[0]]] == [doc for doc, _ in hits[sorted(qrels)[0]]]
        with pytest.warns(UserWarning):
            assert loaded.evaluate().values.tolist() == expected.values.tolist(), fmt
    with pytest.raises(DupMAEEvalError, match="run_format 'csv'"):
        run.save(tmp_path / "run.csv", run_format="csv")


def test_one_measure_may_be_given_as_a_string_wherever_measures_are_taken(tmp_path):
    """`measures="nDCG@10"` is that measure (it used to be read letter by letter: "unknown measure 'n'"), in
    Run.evaluate, evaluate (a Run, and a file with judgments) and table alike."""
    from dupmae_eval.data.datasets import resolve

    data = resolve("scifact", download=False)
    qrels = data.qrels("test")
    hits = {qid: [(doc, 1.0 - rank / 10) for rank, doc in enumerate(list(qrels[qid]) + ["4983"])]
            for qid in sorted(qrels)}
    run = dupmae_eval.Run("all-judged-first", data, "test", hits, {"dataset": "scifact", "split": "test",
                                                                   "condition": "all-judged-first"})
    path = run.save(tmp_path / "run.trec")
    # every judged passage ranked first, each query's own: a perfect ranking, nDCG@10 = 1 for every query
    for frame in (run.evaluate(measures="nDCG@10"), dupmae_eval.evaluate(run, measures="nDCG@10"),
                  dupmae_eval.evaluate(path, measures="nDCG@10"),
                  dupmae_eval.evaluate(path, "scifact", split="test", measures="nDCG@10")):
        assert list(frame.columns) == ["nDCG@10"] and frame.values.tolist() == [[1.0]]
    assert list(dupmae_eval.table([run], measures="nDCG@10").columns) == [("nDCG@10", "all-judged-first")]


def test_a_missing_run_or_sidecar_is_refused_in_the_apis_own_terms(tmp_path):
    """load_run and evaluate name a missing file as such, and for a run without a sidecar point to
    evaluate's `qrels=` (not the command line's --qrels, which no Python function takes)."""
    missing = tmp_path / "nothing.trec"
    for call in (dupmae_eval.load_run, dupmae_eval.evaluate):
        with pytest.raises(DupMAEEvalError, match=r"nothing\.trec: no such file$"):
            call(missing)
    bare = tmp_path / "bare.trec"
    bare.write_text("1 Q0 4983 1 1.0 x\n")
    for call in (dupmae_eval.load_run, dupmae_eval.evaluate):
        with pytest.raises(DupMAEEvalError, match=r"no bare\.trec\.meta\.json beside it") as caught:
            call(bare)
        assert "qrels=" in str(caught.value) and "--qrels" not in str(caught.value)
    with pytest.warns(UserWarning, match="covers 1 of 300"):          # what the message suggests works
        frame = dupmae_eval.evaluate(bare, "scifact", measures="P@1")
    assert list(frame.columns) == ["P@1"]


def test_a_runs_repr_names_its_dataset_and_how_many_queries_it_answers(tmp_path):
    """What a notebook shows for a Run: its name, dataset, split, query count and file."""
    from dupmae_eval.data.datasets import resolve

    data = resolve("scifact", download=False)
    hits = {"1": [("4983", 1.0)], "3": [("4983", 1.0), ("5836", 0.5)]}
    run = dupmae_eval.Run("mine", data, "test", hits, {"dataset": "scifact", "split": "test", "condition": "mine"})
    assert repr(run) == "Run(name='mine', dataset='scifact', split='test', queries=2, path=None)"
    path = run.save(tmp_path / "mine.trec")
    assert repr(dupmae_eval.load_run(path)) == \
        f"Run(name='mine', dataset='scifact', split='test', queries=2, path={path!r})"


def test_finetune_refuses_a_misspelt_setting_before_any_work(tmp_path):
    """finetune(**settings) with a name that is no setting is refused, naming the nearest one, before anything
    is read, mined or written (it used to be dropped, and training began with the default)."""
    output = tmp_path / "out"
    with pytest.raises(DupMAEEvalError, match=r"^finetune\(\): unknown setting 'max_step' \(did you mean "
                                              r"'max_steps'\?\)"):
        dupmae_eval.finetune("package:cognition/model", "scifact", output, max_step=20)
    assert not output.exists()


def test_encoders_take_runs_setting_names_and_refuse_unknown_ones():
    """encoders(**settings) reads the names run() takes (topk=260, exclude_sep=True) as run() reads them, and
    refuses a name that is no encoder setting in one line (it raised a TypeError from a dataclass)."""
    from dupmae_eval.encoding.encoders import EncoderSettings

    _, as_run_names = dupmae_eval.encoders("package:cognition/model", kind="dupmae", topk=260, exclude_sep=True)
    assert (as_run_names.settings.doc_topk, as_run_names.settings.include_sep) == (260, False)
    assert as_run_names.settings == EncoderSettings.for_kind("dupmae", doc_topk=260, include_sep=False)
    with pytest.raises(DupMAEEvalError, match=r"^encoders\(\): unknown setting 'top_k'; the settings are "
                                              r"activation, topk, "):
        dupmae_eval.encoders("package:cognition/model", kind="dupmae", top_k=260)
    with pytest.raises(DupMAEEvalError, match=r"^topk: 0 is not"):
        dupmae_eval.encoders("package:cognition/model", kind="dupmae", topk=0)
