"""Corpora as they are published: empty passages, repeated or unsafe ids, BOMs, broken archives.

The fixtures are the real Vaswani collection (shipped in tests/data) with passages blanked the
way BEIR's TREC-COVID, FiQA, Signal-1M, TREC-NEWS and Robust04 corpora have them.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import SPLADE_TINY, TEST_DATA
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_trec_run, write_trec_run
from dupmae_eval.errors import DupMAEEvalError

pytestmark = [pytest.mark.java]

VASWANI = TEST_DATA / "vaswani"
BLANK = {"1239": {"title": "", "text": ""},          # judged relevant for query 1: now unfindable
         "2000": {"title": "", "text": "  \t "},     # whitespace only
         "7000": {"title": " ", "text": ""}}
TITLE_ONLY = {"5000": {"title": "a title and no text", "text": ""}}   # in the flat index, not the multifield one


def _vaswani_records():
    with gzip.open(VASWANI / "corpus.jsonl.gz", "rt", encoding="utf-8") as corpus:
        return [json.loads(line) for line in corpus]


def _dataset(folder, records, queries=None, qrels=None):
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if queries is None:
        shutil.copy(VASWANI / "queries.jsonl", folder / "queries.jsonl")
    else:
        (folder / "queries.jsonl").write_text(queries, encoding="utf-8")
    (folder / "qrels").mkdir()
    if qrels is None:
        shutil.copy(VASWANI / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    else:
        (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def _blanked(records):
    return [{**r, **BLANK.get(r["_id"], {}), **TITLE_ONLY.get(r["_id"], {})} for r in records]


@pytest.fixture(scope="module")
def blanked_vaswani(tmp_path_factory):
    """The whole Vaswani corpus with three passages blanked and one left with a title only; and the
    same corpus with the three blank passages removed."""
    root = tmp_path_factory.mktemp("vaswani-real")
    records = _vaswani_records()
    assert set(BLANK) | set(TITLE_ONLY) <= {r["_id"] for r in records}
    blanked = _dataset(root / "blanked", _blanked(records))
    removed = _dataset(root / "removed", [r for r in _blanked(records) if r["_id"] not in BLANK])
    return blanked, removed, len(records)


def _meta(run):
    return json.loads(run.with_name(run.name + ".meta.json").read_text())


@pytest.mark.parametrize("fields, skipped", [("flat", len(BLANK)), ("multifield", len(BLANK) + len(TITLE_ONLY))])
def test_bm25_indexes_a_corpus_with_empty_passages_as_anserini_does(blanked_vaswani, fields, skipped, tmp_path):
    blanked, removed, passages = blanked_vaswani
    with_blanks, without = tmp_path / "blanked.trec", tmp_path / "removed.trec"
    assert main(["bm25", "--dataset", str(blanked), "--fields", fields, "--output", str(with_blanks)]) == 0
    assert main(["bm25", "--dataset", str(removed), "--fields", fields, "--output", str(without)]) == 0
    meta = _meta(with_blanks)
    assert meta["corpus"]["passages"] == passages and meta["corpus"]["empty_passages"] == len(BLANK)
    assert meta["corpus"]["expected_index_documents"] == meta["index_stats"]["documents"] == passages - skipped
    index_meta = json.loads((Path(meta["index"]) / "meta.json").read_text())
    assert index_meta["corpus_passages"] == passages and index_meta["empty_passages_skipped"] == skipped
    if fields == "flat":
        # BM25 cannot retrieve an empty passage, and Anserini leaves it out of the collection statistics:
        # the run is the run of the corpus without those passages, byte for byte
        assert with_blanks.read_bytes() == without.read_bytes()
    else:
        # the title-only passage is in the flat index but not in the multifield one (contents = text)
        hits = {docid for hits in read_trec_run(with_blanks).values() for docid, _ in hits}
        assert "5000" not in hits
    for hits in read_trec_run(with_blanks).values():
        assert not {docid for docid, _ in hits} & set(BLANK)


@pytest.fixture(scope="module")
def blanked_slice(tmp_path_factory):
    """The first 600 Vaswani passages (three blanked, one title-only) with the queries judged on them."""
    records = _blanked(_vaswani_records()[:600])
    records += [{**r, "_id": key} for key, r in {**BLANK, **TITLE_ONLY}.items()
                if key not in {x["_id"] for x in records}]
    records = [{"_id": r["_id"], "title": r.get("title", ""), "text": r.get("text", "")} for r in records]
    ids = {r["_id"] for r in records}
    lines = (VASWANI / "qrels" / "test.tsv").read_text().splitlines()
    kept = [line for line in lines[1:] if line.split("\t")[1] in ids]
    return _dataset(tmp_path_factory.mktemp("slice") / "vaswani-slice", records,
                    qrels="\n".join([lines[0], *kept]) + "\n")


COMBINATIONS = [("dupmae", "dense"), ("dupmae", "impact"), ("dupmae", "dupmae"), ("dupmae", "hybrid"),
                ("cls", "dense"), ("cls", "dupmae"), ("mean", "dense"), ("mean", "dupmae"),
                ("splade", "impact"), ("splade", "dupmae"), ("ot", "impact"), ("ot", "dupmae")]


@pytest.mark.parametrize("encoder, retrieval", COMBINATIONS)
def test_every_encoder_and_retrieval_mode_encodes_empty_passages(blanked_slice, encoder, retrieval, tmp_path):
    run = tmp_path / "run.trec"
    assert main(["run", "--dataset", str(blanked_slice), "--model", str(SPLADE_TINY), "--encoder", encoder,
                 "--retrieval", retrieval, "--output", str(run)]) == 0
    meta = _meta(run)
    assert meta["documents"] == meta["corpus"]["passages"] == 604      # every passage encoded, empty ones too
    assert meta["corpus"]["empty_passages"] == len(BLANK)
    scores = [score for line in run.read_text().splitlines() for score in [line.split()[4]]]
    assert scores and all(math.isfinite(float(score)) for score in scores)


def test_an_empty_passage_is_what_bert_makes_of_cls_sep(blanked_slice, tmp_path):
    """Its dense half is BERT's [CLS] of `[CLS] [SEP]`, computed here with transformers alone; with
    [SEP] left out its OT half pools nothing: an empty vector (no -inf, no NaN)."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel

    from dupmae_eval.encoding.corpus import load_encoding

    run = tmp_path / "run.trec"
    assert main(["run", "--dataset", str(blanked_slice), "--model", str(SPLADE_TINY), "--encoder", "dupmae",
                 "--retrieval", "dupmae", "--exclude-sep", "--output", str(run)]) == 0
    encoding = load_encoding(Path(_meta(run)["encoding"]))
    row = encoding.docids.index("1239")
    tokenizer = AutoTokenizer.from_pretrained(str(SPLADE_TINY))
    bert = BertModel.from_pretrained(str(SPLADE_TINY)).eval()
    with torch.no_grad():
        expected = bert(**tokenizer([""], return_tensors="pt")).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(encoding.dense[row], expected, rtol=1e-4, atol=1e-5)
    sparse = encoding.sparse
    assert sparse.indptr[row + 1] - sparse.indptr[row] == 0
    assert np.isfinite(sparse.data).all()


# --------------------------------------------------------------------------- refusals


def _error(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def _nothing_written(tmp_path, *outputs):
    for output in outputs:
        assert not output.exists()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("verb", ["bm25", "run"])
def test_a_repeated_beir_id_is_refused_naming_both_lines(verb, tmp_path, capsys, cache_home):
    records = _vaswani_records()[:50]
    records.insert(30, {**records[9], "text": "another passage under the same id"})
    folder = _dataset(tmp_path / "dup", records)
    before = sorted(cache_home.glob("indexes/**/*")) + sorted(cache_home.glob("encodings/**/*"))
    out = tmp_path / "out.trec"
    extra = ["--model", str(SPLADE_TINY), "--encoder", "splade", "--retrieval", "dupmae"] if verb == "run" else []
    assert main([verb, "--dataset", str(folder), *extra, "--output", str(out)]) == 2
    assert _error(capsys).endswith(f"{folder / 'corpus.jsonl'}:31: duplicate id '10' (first at line 10): ids must be "
                                   f"unique, or a run could list one document twice")
    _nothing_written(tmp_path, out)
    assert sorted(cache_home.glob("indexes/**/*")) + sorted(cache_home.glob("encodings/**/*")) == before


def test_a_repeated_msmarco_pid_is_refused_naming_both_lines(tmp_path, capsys):
    folder = tmp_path / "msmarco"
    shutil.copytree(TEST_DATA / "msmarco-passage-sample", folder)
    with gzip.open(folder / "collection.tsv.gz", "rt", encoding="utf-8") as packed:
        lines = packed.read().splitlines()
    pid = lines[99].split("\t")[0]
    lines.append(f"{pid}\tthe same pid again")
    with gzip.open(folder / "collection.tsv.gz", "wt", encoding="utf-8") as packed:
        packed.write("\n".join(lines) + "\n")
    out = tmp_path / "out.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    assert f"collection.tsv.gz:{len(lines)}: duplicate id '{pid}' (first at line 100)" in _error(capsys)
    _nothing_written(tmp_path, out)


def test_a_docid_with_whitespace_is_refused(tmp_path, capsys):
    records = _vaswani_records()[:20]
    records[4]["_id"] = "has space"
    folder = _dataset(tmp_path / "space", records)
    out = tmp_path / "out.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    assert _error(capsys).endswith(f"{folder / 'corpus.jsonl'}:5: _id 'has space' contains whitespace (runs and "
                                   f"qrels are whitespace-separated, so it cannot be written or read back)")
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize("queries, message", [
    ('{"_id": "1", "text": "a"}\n{"_id": "q 2", "text": "b"}\n', "queries.jsonl:2: query id 'q 2' contains whitespace "
                                                               "(runs and qrels are whitespace-separated, so it "
                                                               "cannot be written or read back)"),
    ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n{"_id": "1", "text": "c"}\n',
     "queries.jsonl:3: duplicate query id '1' (first at line 1)"),
])
def test_query_ids_with_whitespace_or_repeated_are_refused(queries, message, tmp_path, capsys):
    folder = _dataset(tmp_path / "queries", _vaswani_records()[:20], queries=queries,
                      qrels="query-id\tcorpus-id\tscore\n1\t3\t1\n")
    out = tmp_path / "out.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    assert _error(capsys).endswith(message)
    _nothing_written(tmp_path, out)


def test_a_tsv_query_id_with_whitespace_is_refused(tmp_path, capsys):
    folder = tmp_path / "msmarco"
    shutil.copytree(TEST_DATA / "msmarco-passage-sample", folder)
    path = folder / "queries.dl19-passage.tsv"
    lines = path.read_text().splitlines()
    lines[2] = "q 3\t" + lines[2].split("\t", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.trec"
    assert main(["bm25", "--dataset", str(folder), "--split", "dl19", "--output", str(out)]) == 2
    assert _error(capsys).endswith("queries.dl19-passage.tsv:3: query id 'q 3' contains whitespace (runs and qrels "
                                   "are whitespace-separated, so it cannot be written or read back)")
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "NaN"])
def test_eval_refuses_a_run_with_a_score_that_is_not_finite(score, tmp_path, capsys):
    run = tmp_path / "run.trec"
    run.write_text(f"1 Q0 d1 1 2.5 t\n1 Q0 d2 2 {score} t\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 d1 1\n")
    assert main(["eval", str(qrels), str(run), "nDCG@10"]) == 2
    assert _error(capsys).endswith(f"{run}:2: score '{score}' of document 'd2' for query '1' is not a finite number")
    assert not capsys.readouterr().out


def test_eval_refuses_a_run_that_lists_a_document_twice(tmp_path, capsys):
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 d1 1 2.5 t\n1 Q0 d2 2 2.0 t\n1 Q0 d1 3 1.0 t\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 d1 1\n")
    assert main(["eval", str(qrels), str(run), "nDCG@10"]) == 2
    assert _error(capsys).endswith(f"{run}:3: document 'd1' is listed twice for query '1' (first at line 1)")


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_the_run_writer_refuses_a_score_that_is_not_finite_naming_the_query(score, tmp_path):
    out = tmp_path / "run.trec"
    with pytest.raises(DupMAEEvalError, match=f"query 'q7': score of document 'd2' is {score} \\(not a finite "
                                              f"number\\).*the run was not written"):
        write_trec_run(out, {"q1": [("d1", 1.0)], "q7": [("d1", 1.0), ("d2", score)]}, "tag")
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_gzip_corpus_is_one_line(cut, tmp_path, capsys, cache_home):
    folder = tmp_path / "truncated"
    shutil.copytree(VASWANI, folder)
    data = (folder / "corpus.jsonl.gz").read_bytes()
    (folder / "corpus.jsonl.gz").write_bytes(data[:int(len(data) * cut)])
    out = tmp_path / "out.trec"
    before = sorted(cache_home.glob("indexes/**/*"))
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    message = _error(capsys)
    assert f"{folder / 'corpus.jsonl.gz'}:" in message and "the file is truncated (EOFError" in message
    _nothing_written(tmp_path, out)
    assert sorted(cache_home.glob("indexes/**/*")) == before


def test_a_corrupt_gzip_is_one_line(tmp_path, capsys):
    """A damaged archive whose text still parses is caught by gzip's CRC at the end of the stream."""
    folder = tmp_path / "corrupt"
    shutil.copytree(VASWANI, folder)
    data = bytearray((folder / "corpus.jsonl.gz").read_bytes())
    data[-8:-4] = bytes(4)           # the CRC-32 of the uncompressed data
    (folder / "corpus.jsonl.gz").write_bytes(bytes(data))
    out = tmp_path / "out.trec"
    assert main(["bm25", "--dataset", str(folder), "--output", str(out)]) == 2
    message = _error(capsys)
    assert f"{folder / 'corpus.jsonl.gz'}:11430: the file is corrupt (BadGzipFile: CRC check failed" in message
    _nothing_written(tmp_path, out)


def test_a_byte_order_mark_is_accepted(tmp_path):
    """A corpus, queries file and qrels saved with a UTF-8 BOM read exactly like the files without one."""
    records = _vaswani_records()[:300]
    plain = _dataset(tmp_path / "plain", records)
    marked = _dataset(tmp_path / "marked", records)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = marked / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    runs = []
    for folder in (plain, marked):
        out = tmp_path / f"{folder.name}.trec"
        assert main(["bm25", "--dataset", str(folder), "--output", str(out), "--tag", "t"]) == 0
        runs.append(out.read_bytes())
    assert runs[0] == runs[1] and runs[0]
