"""`irds:<id>` dataset names read through ir_datasets, offline: a local ir_datasets cache is laid out the
way ir_datasets' BEIR handler keeps SciFact (IR_DATASETS_HOME/beir/scifact/source.zip, the archive with
scifact/corpus.jsonl, scifact/queries.jsonl, scifact/qrels/test.tsv), made from the bundled SciFact, so
ir_datasets reads it without downloading. ir_datasets fixes its BEIR folder when it is imported, so every
check that reads data runs in a fresh process with IR_DATASETS_HOME set."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO
from dupmae_eval.cli import main
from dupmae_eval.data.datasets import lookup
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation.suites import load_suite
from dupmae_eval.shipped import suite_path

pytest.importorskip("ir_datasets")

BUNDLED = REPO / "data" / "scifact"


@pytest.fixture(scope="module")
def irds_home(tmp_path_factory):
    """An ir_datasets home holding beir/scifact's source archive, built from the bundled copy."""
    home = tmp_path_factory.mktemp("ir-datasets-home")
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("scifact/corpus.jsonl", gzip.decompress((BUNDLED / "corpus.jsonl.gz").read_bytes()))
        archive.writestr("scifact/queries.jsonl", gzip.decompress((BUNDLED / "queries.jsonl.gz").read_bytes()))
        archive.write(BUNDLED / "qrels" / "test.tsv", "scifact/qrels/test.tsv")
    return home


def _python(home, code: str) -> str:
    environment = {**os.environ, "IR_DATASETS_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          timeout=600, cwd=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class _Served:
    """Stands for ir_datasets' dataset object (what `irds._load` returns), serving records made by hand."""

    def __init__(self, docs, queries, qrels):
        self.docs, self.queries, self.qrels = docs, queries, qrels

    def has_docs(self):
        return True

    has_queries = has_qrels = has_docs

    def docs_iter(self):
        return iter(self.docs)

    def queries_iter(self):
        return iter(self.queries)

    def qrels_iter(self):
        return iter(self.qrels)


@pytest.fixture
def served(monkeypatch, tmp_path):
    """`serve(docs=..., queries=..., qrels=...)` makes `irds:beir/scifact/test` read those records (ir_datasets'
    own record types, given as tuples), in process: nothing downloaded, nothing read from ir_datasets' cache.
    Unset, a part is three documents, two queries and their judgments, all well-formed."""
    import ir_datasets
    from ir_datasets.datasets.beir import BeirTitleDoc
    from ir_datasets.formats import GenericQuery, TrecQrel

    from dupmae_eval.data import irds

    monkeypatch.setattr(ir_datasets.util, "home_path", lambda: tmp_path)     # no corpus files of its own there

    def serve(docs=(("d1", "one text", ""), ("d2", "two text", "T"), ("d3", "three", "")),
              queries=(("1", "one"), ("2", "two")), qrels=(("1", "d1", 1, "0"), ("2", "d3", 2, "0"))):
        handle = _Served([BeirTitleDoc(*doc) for doc in docs], [GenericQuery(*query) for query in queries],
                         [TrecQrel(*qrel) for qrel in qrels])
        monkeypatch.setattr(irds, "_load", lambda name: handle)
        return irds.resolve_irds("irds:beir/scifact/test")

    return serve


def test_a_pair_judged_twice_with_different_grades_is_refused(served):
    """As the file readers refuse it; the same grade twice changes no score and is kept once."""
    dataset = served(qrels=(("1", "d1", 1, "0"), ("2", "d3", 2, "0"), ("1", "d1", 0, "0")))
    with pytest.raises(DupMAEEvalError) as refused:
        dataset.qrels("test")
    assert str(refused.value) == ("irds:beir/scifact/test: ir_datasets judges document 'd1' twice for query '1' "
                                  "with different grades: 1, then 0")
    dataset = served(qrels=(("1", "d1", 1, "0"), ("2", "d3", 2, "0"), ("1", "d1", 1, "0")))
    assert dataset.qrels("test") == {"1": {"d1": 1}, "2": {"d3": 2}}


def test_fine_tuning_refuses_a_repeated_document_id(served):
    """The corpus census runs before the training passages are gathered, as it does before retrieval."""
    from dupmae_eval.training.finetune_data import from_dataset

    dataset = served(docs=(("d1", "one text", ""), ("d2", "two text", ""), ("d1", "one again", "")))
    with pytest.raises(DupMAEEvalError, match=r"^irds:beir/scifact:3: duplicate id 'd1' \(first at line 1\)"):
        from_dataset(dataset, "test")


_WHITESPACE = "contains whitespace (runs and qrels are whitespace-separated, so it cannot be written or read back)"


@pytest.mark.parametrize("records, read, message", [
    ({"docs": (("d1", "one", ""), ("d 2", "two", ""))}, lambda data: list(data.passages()),
     f"document id 'd 2' {_WHITESPACE}"),
    ({"queries": (("1", "one"), ("q 2", "two"))}, lambda data: data.queries("test"), f"query id 'q 2' {_WHITESPACE}"),
    ({"queries": (("1", "one"), ("2", "two"), ("1", "one again"))}, lambda data: data.queries("test"),
     "duplicate query id '1' (ir_datasets lists it as query 1 and again as query 3)"),
    ({"queries": (("1", "one"), ("", "no id"))}, lambda data: data.queries("test"), "empty query id"),
    ({"qrels": (("1", "d1", 1, "0"), ("2", "d 3", 1, "0"))}, lambda data: data.qrels("test"),
     f"document id 'd 3' {_WHITESPACE}"),
])
def test_ids_are_checked_as_the_file_readers_check_them(served, records, read, message):
    """One line naming the dataset and the id, where the files' readers name the file and the line."""
    with pytest.raises(DupMAEEvalError) as refused:
        read(served(**records))
    assert str(refused.value) == f"irds:beir/scifact/test: {message}"


@pytest.mark.parametrize("records, message", [
    ({"docs": (("d1", "one text", ""), ("d 2", "two text", ""), ("d3", "three", ""))},
     f"document id 'd 2' {_WHITESPACE}"),
    ({"queries": (("1", "one"), ("2", "two"), ("1", "one again"))},
     "duplicate query id '1' (ir_datasets lists it as query 1 and again as query 3)"),
])
def test_a_bad_id_stops_bm25_before_any_work(served, records, message, tmp_path, capsys, cache_home):
    """Not when the run is written: nothing is indexed, searched or written."""
    served(**records)
    before = sorted(cache_home.glob("indexes/**/*"))
    out = tmp_path / "run.trec"
    assert main(["bm25", "--dataset", "irds:beir/scifact/test", "--output", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].endswith(f"irds:beir/scifact/test: {message}"), err
    assert not out.exists() and sorted(cache_home.glob("indexes/**/*")) == before


def test_measures_and_splits_follow_the_matching_registry_dataset():
    assert lookup("irds:beir/scifact/test").measures == {"test": ("nDCG@10", "R@100", "R@1000")}
    assert lookup("irds:beir/arguana").default_split == "test"
    assert lookup("irds:beir/cqadupstack/android").measures == {"test": ("nDCG@10", "R@100", "R@1000")}
    assert lookup("irds:msmarco-passage/trec-dl-2019/judged").measures == {
        "dl19": ("nDCG@10", "AP(rel=2)", "R(rel=2)@1000")}
    assert lookup("irds:msmarco-passage/dev/small").measures == {"dev-subset": ("RR@10", "R@1000")}
    other = lookup("irds:vaswani")                 # no registry dataset: the documented default
    assert other.default_split == "vaswani" and other.measures == {"vaswani": ("nDCG@10", "R@100", "R@1000")}


def test_bad_names_are_one_line_before_any_work(tmp_path, capsys):
    assert main(["bm25", "--dataset", "irds:beir/scifactt", "--output", str(tmp_path / "r.trec")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'beir/scifactt'" in err and "irds:beir/scifact/test" in err
    assert main(["eval", "irds:", str(tmp_path / "r.trec")]) == 2
    assert "irds:<ir_datasets id>" in capsys.readouterr().err
    assert not (tmp_path / "r.trec").exists()


def test_corpus_queries_and_judgments_equal_the_bundled_copy(irds_home):
    """Read through ir_datasets (no copy of the corpus in the toolkit's cache), they are the bundled files',
    and fine-tuning reads the same training queries and passage texts from either."""
    printed = _python(irds_home, """
import json
from dupmae_eval.data.datasets import resolve
irds, bundled = resolve("irds:beir/scifact/test"), resolve("scifact")
same = lambda ps: [(p.docid, p.title, p.text) for p in ps]
print(json.dumps({"passages": same(irds.passages()) == same(bundled.passages()),
                  "queries": irds.queries("test") == bundled.queries("test"),
                  "qrels": irds.qrels("test") == bundled.qrels("test"), "count": len(irds.queries("test")),
                  "split": irds.default_split, "measures": irds.measures("test"),
                  "cache_name": irds.cache_name, "fingerprint": irds.corpus_fingerprint() == irds.corpus_fingerprint()}))
from dupmae_eval.training.finetune_data import from_dataset
(irds_queries, irds_store), (queries, store) = from_dataset(irds, "test"), from_dataset(bundled, "test")
print(json.dumps({"training_queries": [q.__dict__ for q in irds_queries] == [q.__dict__ for q in queries],
                  "texts": all(irds_store.text(d) == store.text(d) for q in queries for d in q.positives)}))
""")
    assert json.loads(printed.splitlines()[-1]) == {"training_queries": True, "texts": True}   # finetune's reading
    result = json.loads(printed.splitlines()[-2])
    assert result == {"passages": True, "queries": True, "qrels": True, "count": 300, "split": "test",
                      "measures": ["nDCG@10", "R@100", "R@1000"], "cache_name": "irds-beir-scifact",
                      "fingerprint": True}
    assert not (irds_home / "downloads").exists()


@pytest.mark.java
@pytest.mark.slow
def test_bm25_on_irds_scifact_gives_the_published_figures(irds_home, tmp_path):
    """`bm25 --dataset irds:beir/scifact/test --eval`, from the local ir_datasets cache: Pyserini's published
    BM25 flat figures for SciFact (nDCG@10 0.6789), as the bundled route gives; `eval` with the irds name
    reads the same judgments; the sidecar names ir_datasets as the source."""
    run = tmp_path / "bm25.trec"
    published = load_suite(suite_path("demo")).conditions["bm25-flat"].expected["scifact"]   # Pyserini's 2CR
    suite = tmp_path / "suite.yaml"        # a suite names the dataset the same way; its cell reuses the index
    suite.write_text("suite: irds\nmeasures: [nDCG@10]\nprecision: 4\ndatasets: [irds:beir/scifact/test]\n"
                     "conditions:\n  bm25-flat:\n    kind: bm25\n    expected:\n      irds:beir/scifact/test: "
                     f"{{nDCG@10: {published['nDCG@10']}}}\n")
    printed = _python(irds_home, f"""
import sys
from dupmae_eval.cli import main
code = main(["bm25", "--dataset", "irds:beir/scifact/test", "--output", {str(run)!r}, "--eval"])
code = code or main(["eval", "irds:beir/scifact/test", {str(run)!r}])
code = code or main(["reproduce", {str(suite)!r}, "--runs", {str(tmp_path / "runs")!r}])
sys.exit(code)
""")
    lines = [line.split("\t") for line in printed.splitlines()[:6]]
    expected = [[measure, f"{value:.4f}"] for measure, value in published.items()]
    assert expected[0] == ["nDCG@10", "0.6789"]
    assert lines == expected + expected
    assert printed.splitlines()[6:] == [f"OK    {'bm25-flat':<26}{'irds:beir/scifact/test':<28}{'nDCG@10':<16}"
                                        f"0.6789  expected 0.6789", "1 OK, 0 FAIL"]
    sidecar = json.loads((tmp_path / "bm25.trec.meta.json").read_text())
    assert sidecar["dataset"] == "irds:beir/scifact/test" and sidecar["split"] == "test"
    assert sidecar["corpus_source"]["ir_datasets"] == "beir/scifact/test"
    assert sidecar["corpus"]["passages"] == 5183
    assert "/irds-beir-scifact-" in sidecar["index"]
    assert not (irds_home / "downloads").exists()
