"""Extension points are registries: a new encoder kind or retrieval mode is one entry, and the CLI,
the suite validation and the runner take it from there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dupmae_eval
from conftest import SPLADE_TINY
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_trec_run
from dupmae_eval.encoding.kinds import ENCODER_KINDS, EncoderKind, register_encoder_kind
from dupmae_eval.retrieval.modes import RETRIEVAL_MODES, RetrievalMode, register_retrieval_mode

pytestmark = [pytest.mark.java]


def _numpy_dense_search(job):
    """Brute-force inner product over the dense half, in numpy (no faiss, no Pyserini)."""
    dense, _ = job.query_halves()
    scores = dense @ job.encoding.dense.T
    run = {}
    for row, qid in enumerate(job.qids):
        best = np.argsort(-scores[row], kind="stable")[:job.hits]
        run[qid] = [(job.encoding.docids[i], float(scores[row, i])) for i in best
                    if not (job.remove_query and job.encoding.docids[i] == qid)]
    return run, {"index": "numpy brute force"}


@pytest.fixture
def registered():
    """One new kind ([CLS], L2-normalised by default) and one new mode, each by a single registry entry."""
    register_encoder_kind(EncoderKind("cls-l2", dense_pooling="cls", sparse=False, defaults={"doc_topk": None,
                                      "normalize": True}, summary="[CLS], L2-normalised"))
    register_retrieval_mode(RetrievalMode("dense-numpy", needs="dense", search=_numpy_dense_search,
                                          summary="dense half, brute force in numpy"))
    yield
    ENCODER_KINDS.pop("cls-l2", None)
    RETRIEVAL_MODES.pop("dense-numpy", None)


def test_a_new_kind_and_mode_run_through_the_cli(registered, tmp_path):
    folder = _small_dataset(tmp_path)
    new, reference = tmp_path / "new.trec", tmp_path / "reference.trec"
    assert main(["run", "--dataset", str(folder), "--model", str(SPLADE_TINY), "--encoder", "cls-l2",
                 "--retrieval", "dense-numpy", "--output", str(new)]) == 0
    assert main(["run", "--dataset", str(folder), "--model", str(SPLADE_TINY), "--encoder", "cls", "--normalize",
                 "--retrieval", "dense", "--output", str(reference)]) == 0
    ours, faiss = read_trec_run(new), read_trec_run(reference)
    assert ours.keys() == faiss.keys()
    for qid in faiss:
        assert [d for d, _ in ours[qid][:10]] == [d for d, _ in faiss[qid][:10]]
        np.testing.assert_allclose([s for _, s in ours[qid][:10]], [s for _, s in faiss[qid][:10]], atol=1e-5)


def test_a_new_kind_and_mode_are_valid_in_a_suite(registered, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"suite: registered\ndatasets: [scifact]\nconditions:\n"
                     f"  new: {{kind: model, model: {SPLADE_TINY}, encoder: cls-l2, retrieval: dense-numpy}}\n"
                     f"  bad: {{kind: model, model: {SPLADE_TINY}, encoder: cls-l2, retrieval: impact}}\n")
    assert main(["reproduce", str(suite), "--dry-run"]) == 2
    sparse_kinds = " or ".join(name for name, kind in ENCODER_KINDS.items() if kind.sparse)   # dupmae, splade, ot
    assert (f"conditions: bad: --retrieval impact needs a sparse half; encoder 'cls-l2' has none (use "
            f"{sparse_kinds})") in capsys.readouterr().err
    suite.write_text("\n".join(suite.read_text().splitlines()[:-1]) + "\n")
    assert main(["reproduce", str(suite), "--dry-run"]) == 0


def test_a_kind_is_named_in_its_registry_entry_only():
    """`grep -rn '"splade"' dupmae_eval/` finds the kind's spec and nothing else in the code."""
    package = Path(dupmae_eval.__file__).parent
    places = [f"{path.relative_to(package)}:{number}" for path in sorted(package.rglob("*.py"))
              for number, line in enumerate(path.read_text().splitlines(), start=1) if '"splade"' in line]
    assert len(places) == 1 and places[0].startswith("encoding/kinds.py:"), places


def _small_dataset(tmp_path):
    """120 SciFact passages (those judged for the first 15 test queries, then others) and those queries."""
    import gzip
    import json

    from dupmae_eval.data.datasets import BUNDLED_DATA

    source = BUNDLED_DATA / "scifact"
    qrels = [line.split("\t") for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:15]
    judged = {d for q, d, _ in qrels if q in qids}
    with gzip.open(source / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for line in corpus]
    chosen = [r for r in records if r["_id"] in judged]
    chosen += [r for r in records if r["_id"] not in judged][:120 - len(chosen)]
    folder = tmp_path / "scifact-120"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    with gzip.open(source / "queries.jsonl.gz", "rt") as queries:
        (folder / "queries.jsonl").write_text("".join(line for line in queries if json.loads(line)["_id"] in qids))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, d, r in qrels if q in qids))
    return folder
