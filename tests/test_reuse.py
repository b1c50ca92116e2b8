"""reproduce reuses a cell's run only when what made it is identical: another corpus behind the same dataset
name, other query texts, or a changed condition, is redone (and `--dry-run` says why); a suite's `measures:`
reach the metrics and the table; a model folder that does not exist is refused before any work; when a cell fails, the
verdicts of the cells finished before it are still printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dupmae_eval.cli import main

pytestmark = [pytest.mark.java]

SUITE = """suite: reuse
measures: [nDCG@10, AP, P@10]
precision: 4
datasets: [scifact]
conditions:
  bm25-flat:
    kind: bm25
    fields: flat
    k1: {k1}
"""


@pytest.fixture(scope="module")
def corpora(small_scifact, tmp_path_factory):
    """Two corpora behind the name `scifact`: the 400-document slice and the same without its last 150."""
    smaller = tmp_path_factory.mktemp("scifact-250")
    shutil.copytree(small_scifact, smaller, dirs_exist_ok=True)
    lines = (small_scifact / "corpus.jsonl").read_text().splitlines(keepends=True)
    (smaller / "corpus.jsonl").write_text("".join(lines[:250]))
    return small_scifact, smaller


def _suite(tmp_path, k1="0.9"):
    path = tmp_path / "reuse.yaml"
    path.write_text(SUITE.format(k1=k1))
    return path


def _metrics(runs):
    return json.loads((runs / "reuse" / "bm25-flat" / "scifact.metrics.json").read_text())["aggregate"]


def test_a_changed_corpus_or_condition_is_redone_not_reused(corpora, tmp_path, capsys):
    large, small = corpora
    runs, fresh = tmp_path / "runs", tmp_path / "fresh"
    suite = _suite(tmp_path)
    assert main(["reproduce", str(suite), "--data", f"scifact={large}", "--runs", str(runs)]) == 0
    first = _metrics(runs)
    assert set(first) == {"nDCG@10", "AP", "P@10"}                  # the suite's measures, not the dataset's
    capsys.readouterr()
    assert main(["reproduce", str(suite), "--data", f"scifact={large}", "--runs", str(runs), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("reuse bm25-flat")
    from dupmae_eval.data.datasets import dataset_roots_from_env

    assert "scifact" not in dataset_roots_from_env()     # --data held for that command only, not what follows

    assert main(["reproduce", str(suite), "--data", f"scifact={small}", "--runs", str(runs), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    # the index is the corpus's too: its folder, part of the identity, changes with it
    assert line.startswith("redo  bm25-flat") and line.endswith("(corpus_sha256, index changed since it was made)")
    assert main(["reproduce", str(suite), "--data", f"scifact={small}", "--runs", str(runs)]) == 0
    assert "redo  bm25-flat" in capsys.readouterr().out
    # the redone cell equals a run made from scratch on the smaller corpus (not the old run re-scored)
    assert main(["reproduce", str(suite), "--data", f"scifact={small}", "--runs", str(fresh)]) == 0
    assert _metrics(runs) == _metrics(fresh) and _metrics(runs) != first
    ours = runs / "reuse" / "bm25-flat" / "scifact.trec"
    assert ours.read_bytes() == (fresh / "reuse" / "bm25-flat" / "scifact.trec").read_bytes()

    capsys.readouterr()
    changed = _suite(tmp_path, k1="1.2")
    assert main(["reproduce", str(changed), "--data", f"scifact={small}", "--runs", str(runs), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("(k1 changed since it was made)")
    assert main(["reproduce", str(suite), "--data", f"scifact={small}", "--runs", str(runs), "--dry-run",
                 "--force"]) == 0
    assert capsys.readouterr().out.strip().endswith("(--force)")
    # a run without a record of what made it (an older version's sidecar) is redone, never trusted
    sidecar = ours.with_name(ours.name + ".meta.json")
    record = json.loads(sidecar.read_text())
    del record["cell_identity"]
    sidecar.write_text(json.dumps(record))
    assert main(["reproduce", str(suite), "--data", f"scifact={small}", "--runs", str(runs), "--dry-run"]) == 0
    assert "no record of what made it" in capsys.readouterr().out


def test_changed_query_texts_are_redone_and_changed_judgments_rescored_on_the_reused_run(corpora, tmp_path,
                                                                                          capsys):
    """The queries a run searched are part of what made it: other texts under the same ids redo the cell, and
    the redone run equals one made from scratch for the new texts; a sidecar an older version wrote, without
    the queries' digest, is redone, saying so. The judgments are not: another relevance grade leaves the run
    reused, and its metrics are those of the new judgments (`eval`'s)."""
    large, _ = corpora
    folder, runs, fresh = tmp_path / "scifact", tmp_path / "runs", tmp_path / "fresh"
    shutil.copytree(large, folder)
    suite = _suite(tmp_path)
    args = ["--data", f"scifact={folder}"]
    assert main(["reproduce", str(suite), *args, "--runs", str(runs)]) == 0
    first = _metrics(runs)
    run = runs / "reuse" / "bm25-flat" / "scifact.trec"
    made = run.read_bytes()

    qrels = folder / "qrels" / "test.tsv"
    header, *lines = qrels.read_text().splitlines(keepends=True)
    qrels.write_text(header + "".join(line.replace("\t1\n", "\t2\n", 1) if i % 2 else line
                                      for i, line in enumerate(lines)))
    capsys.readouterr()
    assert main(["reproduce", str(suite), *args, "--runs", str(runs), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("reuse bm25-flat")
    assert main(["reproduce", str(suite), *args, "--runs", str(runs)]) == 0
    assert run.read_bytes() == made
    capsys.readouterr()
    assert main(["eval", str(qrels), str(run), "AP"]) == 0
    assert f"{_metrics(runs)['AP']:.4f}" == capsys.readouterr().out.split()[-1]
    assert _metrics(runs)["nDCG@10"] != first["nDCG@10"]            # graded now: rescored, not the old record

    records = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    records[0]["text"] = records[1]["text"]                           # same ids, one text changed
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    assert main(["reproduce", str(suite), *args, "--runs", str(runs), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("(queries changed since it was made)")
    assert main(["reproduce", str(suite), *args, "--runs", str(runs)]) == 0
    assert "redo  bm25-flat" in capsys.readouterr().out
    assert main(["reproduce", str(suite), *args, "--runs", str(fresh)]) == 0
    assert run.read_bytes() == (fresh / "reuse" / "bm25-flat" / "scifact.trec").read_bytes() != made

    sidecar = run.with_name("scifact.trec.meta.json")
    meta = json.loads(sidecar.read_text())
    del meta["cell_identity"]["queries"]                              # as an older version wrote it
    sidecar.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["reproduce", str(suite), *args, "--runs", str(runs), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("(its record lacks queries (an older version made it))")


def test_table_of_a_suite_measure_and_of_a_missing_one(corpora, tmp_path, capsys):
    large, _ = corpora
    runs = tmp_path / "runs"
    assert main(["reproduce", str(_suite(tmp_path)), "--data", f"scifact={large}", "--runs", str(runs)]) == 0
    run = runs / "reuse" / "bm25-flat" / "scifact.trec"
    capsys.readouterr()
    assert main(["eval", str(large / "qrels" / "test.tsv"), str(run), "AP"]) == 0
    by_eval = float(capsys.readouterr().out.split()[-1])
    assert main(["table", str(runs), "--measure", "AP", "--baseline", "bm25-flat"]) == 0
    assert f"{by_eval:.4f}" in capsys.readouterr().out
    assert main(["table", str(runs), "--measure", "R@100", "--baseline", "bm25-flat"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("dupmae-eval: error: no results for measure 'R@100'; the results hold AP, P@10, nDCG@10 "
                   "(a suite's `measures:` decides what reproduce records)")


def test_a_missing_model_folder_is_refused_before_any_work(tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text(SUITE.format(k1=0.9) + f"""  mine:
    kind: model
    model: {tmp_path / 'no-such-model'}
    encoder: dupmae
    retrieval: dupmae
""")
    assert main(["reproduce", str(suite), "--runs", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert f"conditions: mine: model '{tmp_path / 'no-such-model'}': no such folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_finished_cells_are_reported_when_a_later_cell_fails(corpora, tmp_path, capsys):
    large, _ = corpora
    suite = tmp_path / "late.yaml"
    suite.write_text(SUITE.format(k1=0.9) + """    expected: {scifact: {nDCG@10: 0.1}}
  hub-model:
    kind: model
    model: no-such-org/no-such-model
    encoder: dupmae
    retrieval: dupmae
""")
    assert main(["reproduce", str(suite), "--data", f"scifact={large}", "--runs", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    assert "FAIL  bm25-flat" in captured.out and "expected 0.1000" in captured.out
    assert "no-such-org/no-such-model" in captured.err


def test_table_reads_runs_from_bm25_and_refuses_doubles_and_bare_runs(corpora, tmp_path, capsys):
    """A run written by `bm25` (sidecar, no metrics file) is scored from its dataset's judgments: the table's
    value equals `eval`'s; the same condition twice is refused, naming both files; a run without its sidecar
    and a hyphenated suite key get one line each."""
    large, _ = corpora
    run = tmp_path / "bm25" / "scifact.trec"
    assert main(["bm25", "--dataset", str(large), "--output", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(large / "qrels" / "test.tsv"), str(run), "nDCG@10"]) == 0
    by_eval = capsys.readouterr().out.split()[-1]
    assert main(["table", str(tmp_path / "bm25")]) == 0
    assert f"| {by_eval} |" in capsys.readouterr().out
    copy = tmp_path / "again" / "scifact.trec"
    copy.parent.mkdir()
    shutil.copy(run, copy)
    shutil.copy(f"{run}.meta.json", f"{copy}.meta.json")
    assert main(["table", str(tmp_path / "bm25"), str(copy)]) == 2
    assert f"two results for condition 'bm25-flat' on {large.name}: {run} and {copy}" in capsys.readouterr().err
    bare = tmp_path / "bare.trec"
    shutil.copy(run, bare)
    assert main(["table", str(bare)]) == 2
    assert "no bare.trec.meta.json beside it" in capsys.readouterr().err
    suite = tmp_path / "hyphen.yaml"
    suite.write_text(SUITE.format(k1=0.9) + """  m:
    kind: model
    model: package:cognition/model
    encoder: splade
    retrieval: dupmae
    shard-size: 100
""")
    assert main(["reproduce", str(suite), "--dry-run"]) == 2
    assert "unknown key 'shard-size' for a model condition (suite keys are spelt with underscores: 'shard_size' " \
           "for --shard-size)" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [("k1", "-1", "k1: -1 must be"), ("b", "1.5", "b: 1.5 must be between 0 and 1"),
                                                 ("hits", "0", "hits: 0 must be at least 1")])
def test_bm25_condition_values_are_range_checked_at_load(key, value, message, tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text(SUITE.format(k1=0.9) + f"    {key}: {value}\n" if key != "k1" else SUITE.format(k1=value))
    assert main(["reproduce", str(suite), "--runs", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert f"conditions: bm25-flat: {message}" in capsys.readouterr().err


def test_bm25_eval_and_reproduce_warn_and_refuse_as_eval_does(corpora, tmp_path, capsys):
    """`bm25 --eval` and `reproduce` score through the same coverage check as `eval`: a judged query the run
    ranks nothing for, and a cutoff deeper than the run, give one warning each (the same lines `eval` prints
    for the run file); a run that ranks no judged query is refused with one line."""
    large, _ = corpora
    folder = tmp_path / "stopwords"
    shutil.copytree(large, folder)
    records = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    records[0]["text"] = "the of and"               # Lucene's English analyser leaves nothing to search for
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    judged = len({line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]})
    run = tmp_path / "run.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(run), "--hits", "50", "--eval"]) == 0
    by_bm25 = capsys.readouterr()
    warnings = [line for line in by_bm25.err.splitlines() if line.startswith("dupmae-eval: warning:")]
    assert main(["eval", str(folder / "qrels" / "test.tsv"), str(run)]) == 0
    by_eval = capsys.readouterr()
    assert by_bm25.out == by_eval.out and warnings == by_eval.err.splitlines()
    assert warnings == [f"dupmae-eval: warning: run covers {judged - 1} of {judged} judged queries; trec_eval -c "
                        f"scores the 1 missing as 0",
                        "dupmae-eval: warning: R@100, R@1000: cutoff beyond the run's depth (50 hits per query at "
                        "most); the value is that of the run's depth"]

    suite = tmp_path / "shallow.yaml"
    suite.write_text(SUITE.format(k1=0.9).replace("measures: [nDCG@10, AP, P@10]", "measures: [nDCG@10, R@100]")
                     + "    hits: 50\n")
    assert main(["reproduce", str(suite), "--data", f"scifact={folder}", "--runs", str(tmp_path / "runs")]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == [
        f"dupmae-eval: warning: bm25-flat scifact: run covers {judged - 1} of {judged} judged queries; trec_eval -c "
        f"scores the 1 missing as 0",
        "dupmae-eval: warning: bm25-flat scifact: R@100: cutoff beyond the run's depth (50 hits per query at most); "
        "the value is that of the run's depth"]

    for record in records:
        record["text"] = "the of and"
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    before = run.read_bytes(), Path(f"{run}.meta.json").read_bytes()
    assert main(["bm25", "--dataset", str(folder), "--output", str(run), "--eval"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1] == (
        f"dupmae-eval: error: {folder} (split test): none of the {len(records)} queries retrieved a document, so "
        f"there is no run to write")
    assert (run.read_bytes(), Path(f"{run}.meta.json").read_bytes()) == before     # refused: nothing touched


def test_a_run_in_which_no_query_retrieved_anything_is_refused_and_never_reused(tmp_path, capsys):
    """A tiny corpus and queries none of whose words it holds: `reproduce` refuses the run in one line before
    writing it, so no empty run file and no sidecar are left to be reused; the cell stays to be made
    (`--dry-run`: run), and once a query finds a document it is made, the empty query warned about."""
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    documents = {"d1": "apple banana cherry", "d2": "dog elephant fox", "d3": "grape honeydew kiwi"}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in documents.items()))
    queries = {"q1": "zebra quokka", "q2": "walrus xylophone", "q3": "narwhal"}       # no word of the corpus
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    runs = tmp_path / "runs"
    args = [str(_suite(tmp_path)), "--data", f"scifact={folder}", "--runs", str(runs)]
    run = runs / "reuse" / "bm25-flat" / "scifact.trec"
    assert main(["reproduce", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (f"dupmae-eval: error: {folder} (split test): none of the 3 queries "
                                             f"retrieved a document, so there is no run to write")
    assert not run.exists() and not run.with_name("scifact.trec.meta.json").exists()
    assert main(["reproduce", *args, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("run   bm25-flat")

    queries["q2"] = "elephant"                      # one query finds d2: a run, with the other two missing
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in queries.items()))
    assert main(["reproduce", *args]) == 0
    assert "run covers 1 of 3 judged queries" in capsys.readouterr().err
    assert [line.split()[:3] for line in run.read_text().splitlines()] == [["q2", "Q0", "d2"]]
    assert _metrics(runs)["P@10"] == pytest.approx(0.1 / 3)          # q2's one relevant hit; q1, q3 score 0


def test_an_interrupted_redo_leaves_no_sidecar_so_the_old_condition_redoes_rather_than_reuses(corpora, tmp_path,
                                                                                              capsys, monkeypatch):
    """A redo stopped after the new run's rename and before its sidecar is written (the worst moment): the old
    sidecar, which records the old condition, was removed before the work began, so going back to the old
    condition redoes the cell instead of reusing a run made with other settings, and no metrics record of the
    old run is left beside the new one for `table` to show."""
    import dupmae_eval.retrieval.jobs as jobs
    from dupmae_eval.errors import DupMAEEvalError

    large, _ = corpora
    runs = tmp_path / "runs"
    args = ["--data", f"scifact={large}", "--runs", str(runs)]
    assert main(["reproduce", str(_suite(tmp_path)), *args]) == 0
    run = runs / "reuse" / "bm25-flat" / "scifact.trec"
    first = run.read_bytes()
    real = jobs.write_run

    def write_then_die(*arguments, **keywords):
        real(*arguments, **keywords)
        raise DupMAEEvalError("killed between the run's rename and its sidecar")

    monkeypatch.setattr(jobs, "write_run", write_then_die)
    assert main(["reproduce", str(_suite(tmp_path, k1="1.2")), *args]) == 2
    monkeypatch.undo()
    assert run.read_bytes() != first                              # the k1=1.2 run is there ...
    assert not run.with_name("scifact.trec.meta.json").exists()   # ... with nothing saying it is k1=0.9's
    assert not run.with_name("scifact.metrics.json").exists()
    capsys.readouterr()
    assert main(["reproduce", str(_suite(tmp_path)), *args, "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("(no record of what made it (sidecar missing, unreadable or "
                                                    "from an older version))")
    assert main(["reproduce", str(_suite(tmp_path)), *args]) == 0
    assert run.read_bytes() == first


def test_a_run_made_again_over_a_reproduce_output_is_tabled_with_its_own_scores(corpora, tmp_path, capsys):
    """`bm25 --output` over a run that reproduce wrote removes its metrics record (the table scores the new run
    from its sidecar: eval's value); a metrics record whose run has other bytes than it scored, or that an older
    version wrote without the run's SHA-256, is refused in one line while the run is there; with the run gone
    the record is all there is, and is tabled."""
    large, _ = corpora
    runs = tmp_path / "runs"
    assert main(["reproduce", str(_suite(tmp_path)), "--data", f"scifact={large}", "--runs", str(runs)]) == 0
    run = runs / "reuse" / "bm25-flat" / "scifact.trec"
    metrics = run.with_name("scifact.metrics.json")
    reproduced = json.loads(metrics.read_text())["aggregate"]["nDCG@10"]
    assert main(["bm25", "--dataset", str(large), "--k1", "2.5", "--b", "0.2", "--tag", "bm25-flat",
                 "--output", str(run)]) == 0
    assert not metrics.exists()
    capsys.readouterr()
    assert main(["eval", str(large / "qrels" / "test.tsv"), str(run), "nDCG@10"]) == 0
    by_eval = capsys.readouterr().out.split()[-1]
    assert float(by_eval) != round(reproduced, 4)
    assert main(["table", str(runs)]) == 0
    assert f"| {by_eval} |" in capsys.readouterr().out

    assert main(["reproduce", str(_suite(tmp_path)), "--data", f"scifact={large}", "--runs", str(runs)]) == 0
    assert json.loads(metrics.read_text())["aggregate"]["nDCG@10"] == reproduced
    record = json.loads(metrics.read_text())
    lines = run.read_text().splitlines(keepends=True)
    run.write_text("".join(lines[:-1]))                           # another run under the same name
    capsys.readouterr()
    assert main(["table", str(runs)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dupmae-eval: error: {metrics}: scores another run than {run} holds now (its SHA-256 differs: made again "
        f"or replaced since); run `dupmae-eval reproduce` again or remove the file")
    run.write_text("".join(lines))
    del record["run_sha256"]
    metrics.write_text(json.dumps(record))
    assert main(["table", str(metrics)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"dupmae-eval: error: {metrics}: records no SHA-256 of "
                                                      f"scifact.trec (an older version wrote it)")
    run.unlink()
    assert main(["table", str(metrics)]) == 0
    assert f"| {reproduced:.4f} |" in capsys.readouterr().out


MODEL_SUITE = SUITE + """  tiny:
    kind: model
    model: package:cognition/model
    encoder: splade
    retrieval: impact
    precision: auto
"""


def test_what_the_parameters_resolve_to_is_part_of_the_identity(corpora, tmp_path, capsys, monkeypatch):
    """A cell's identity holds what its parameters resolve to here: `precision: auto` resolved on this CPU, the
    encoding and index folders the run is made from (the ones its sidecar names), the checkpoint's revision.
    Another CPU, another encoding format, another Anserini, another hub revision: each is redone, naming what
    changed; an older sidecar without these fields is redone, saying so; a hub model missing from the local
    cache cannot be checked, and is redone. (The model cell's run and sidecar are written here by hand, with
    the identity the encoding route of `run_model` is checked against: encoding it would take minutes.)"""
    from dupmae_eval.data.datasets import LOCAL_FOLDERS, resolve
    from dupmae_eval.encoding import checkpoint, corpus, precision
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings
    from dupmae_eval.evaluation.runner import cell_identity, run_path_for
    from dupmae_eval.evaluation.suites import load_suite
    from dupmae_eval.retrieval import indexes

    large, _ = corpora
    suite = tmp_path / "model.yaml"
    suite.write_text(MODEL_SUITE.format(k1=0.9))
    args = ["--data", f"scifact={large}", "--runs", str(tmp_path / "runs")]
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)          # a CPU without bf16: auto is fp32
    assert main(["reproduce", str(suite), *args, "--conditions", "bm25-flat"]) == 0
    bm25 = json.loads((tmp_path / "runs" / "reuse" / "bm25-flat" / "scifact.trec.meta.json").read_text())
    assert bm25["cell_identity"]["index"] == Path(bm25["index"]).name

    monkeypatch.setitem(LOCAL_FOLDERS, "scifact", large)                  # as --data maps it
    loaded = checkpoint.load_model("package:cognition/model", need_mlm_head=True)   # run_model's own route
    settings = EncoderSettings.for_checkpoint("splade", loaded.folder)
    encoder = DupMAEDocumentEncoder(loaded, settings, None, "auto")
    data = resolve("scifact")
    encoding = corpus.encoding_folder(data, loaded, settings, 32, encoder.precision).name
    loaded_suite = load_suite(suite)
    cell = loaded_suite.cells(conditions=["tiny"])[0]
    identity = cell_identity(loaded_suite, cell)
    assert identity["precision"] == encoder.precision == "fp32" and identity["model_revision"] == "package"
    assert identity["encoding"] == encoding
    assert identity["index"] == indexes.impact_index_folder(encoding, 100.0).name
    monkeypatch.delitem(LOCAL_FOLDERS, "scifact")
    run = run_path_for(tmp_path / "runs", loaded_suite, cell)
    run.parent.mkdir(parents=True)
    run.write_text("1 Q0 d1 1 1.000000 tiny\n")
    meta = {"condition": "tiny", "dataset": "scifact", "split": "test", "cell_identity": identity}
    run.with_name("scifact.trec.meta.json").write_text(json.dumps(meta))

    def dry_run():
        capsys.readouterr()
        assert main(["reproduce", str(suite), *args, "--dry-run"]) == 0
        return {line.split()[1]: line.split("  (", 1)[-1][:-1] if "  (" in line else line.split()[0]
                for line in capsys.readouterr().out.splitlines()}

    assert dry_run() == {"bm25-flat": "reuse", "tiny": "reuse"}
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)           # the same suite on a bf16 CPU
    assert dry_run()["tiny"] == "encoding, index, precision changed since it was made"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(corpus, "FORMAT_VERSION", corpus.FORMAT_VERSION + 1)   # encodings are made anew
    assert dry_run()["tiny"] == "encoding, index changed since it was made"
    monkeypatch.undo()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(indexes, "anserini_version", lambda: "0.0.1")        # every Lucene index is rebuilt
    assert dry_run() == {"bm25-flat": "index changed since it was made", "tiny": "index changed since it was made"}
    monkeypatch.undo()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    found = checkpoint.cached_checkpoint("package:cognition/model")
    monkeypatch.setattr(checkpoint, "cached_checkpoint", lambda name: (found[0], "0123abc"))   # another commit
    assert dry_run()["tiny"] == "model_revision changed since it was made"
    monkeypatch.setattr(checkpoint, "cached_checkpoint", lambda name: None)    # a hub model not cached here
    assert dry_run()["tiny"] == ("package:cognition/model is not in the local Hugging Face cache, so nothing says "
                                 "the run was made from the model it would fetch")
    monkeypatch.undo()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    sidecar = run.with_name("scifact.trec.meta.json")
    for key in ("precision", "encoding", "index", "model_revision"):          # as an older version wrote it
        del meta["cell_identity"][key]
    sidecar.write_text(json.dumps(meta))
    assert dry_run()["tiny"] == "its record lacks encoding, index, model_revision, precision (an older version " \
                                "made it)"
