"""An encoding is computed once and read wherever it serves: its vectors do not depend on the shard size
(shards are storage), so `encode --shard-size N` then `run` encodes nothing more; and an encoding of
`--encoder ot` or `cls` reads the halves of a finished `dupmae` encoding of the same model and settings,
which are the very arrays it would compute (checked against encodings made from scratch in another cache)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SPLADE_TINY, TEST_DATA
from dupmae_eval.encoding import corpus as encode
from dupmae_eval.cli import main
from dupmae_eval.data.datasets import resolve
from dupmae_eval.encoding.corpus import encode_corpus, load_encoding
from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings

LENGTH = "96"          # Vaswani abstracts run from a few to ~150 tokens: batches of unequal widths


def _slice(folder: Path, corpus: Path, documents: int) -> Path:
    with gzip.open(corpus, "rt") as source:
        (folder / "corpus.jsonl").write_text("".join(line for _, line in zip(range(documents), source)))
    shutil.copy(TEST_DATA / "vaswani" / "queries.jsonl", folder / "queries.jsonl")
    shutil.copytree(TEST_DATA / "vaswani" / "qrels", folder / "qrels")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """60 Vaswani abstracts of unequal lengths (BEIR layout)."""
    return _slice(tmp_path_factory.mktemp("vaswani-60"), TEST_DATA / "vaswani" / "corpus.jsonl.gz", 60)


def _encode(corpus, kind, batch_size=4, shard_size=10_000, **overrides):
    settings = EncoderSettings.for_kind(kind, max_passage_length=int(LENGTH), **overrides)
    encoder = DupMAEDocumentEncoder(str(SPLADE_TINY), settings)
    return load_encoding(encode_corpus(resolve(str(corpus)), encoder, batch_size, shard_size, progress=False),
                         settings)


def _no_encoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a shard was encoded")

    monkeypatch.setattr(encode, "_write_shard", refuse)


def _same_sparse(a, b) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in ("indptr", "indices", "data")) \
        and a.shape == b.shape


def test_vectors_do_not_depend_on_the_shard_size(tmp_path, monkeypatch, capsys):
    """60 SciFact passages up to 256 tokens, batches of 8: formed within each 7-passage shard, 10 of the 60
    dense rows differed in their last bits from a one-shard encoding; formed within sort windows, none."""
    corpus = _slice(tmp_path, REPO / "data" / "scifact" / "corpus.jsonl.gz", 60)
    options = ["--dataset", str(corpus), "--model", str(SPLADE_TINY), "--encoder", "dupmae", "--batch-size", "8"]
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "whole"))
    assert main(["encode", *options]) == 0
    whole = load_encoding(Path(capsys.readouterr().out.strip()))
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "sharded"))
    assert main(["encode", *options, "--shard-size", "7"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    sharded = load_encoding(folder)
    assert sharded.meta["shards"] == 9 and whole.meta["shards"] == 1
    assert sharded.docids == whole.docids
    assert sharded.dense.tobytes() == whole.dense.tobytes()          # every bit, not close
    assert _same_sparse(sharded.sparse, whole.sparse)
    # `run` at the default shard size reads that encoding: nothing is encoded again
    _no_encoding(monkeypatch)
    run = tmp_path / "run.trec"
    assert main(["run", *options, "--retrieval", "dupmae", "--hits", "5", "--output", str(run)]) == 0
    assert json.loads(Path(f"{run}.meta.json").read_text())["encoding"] == str(folder)
    assert [p.name for p in (tmp_path / "sharded" / "encodings").iterdir()] == [folder.name]


def test_an_unfinished_encoding_resumes_with_its_own_shard_size(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "reference"))
    reference = _encode(corpus, "splade", shard_size=7)
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "killed"))
    folder = _encode(corpus, "splade", shard_size=7).folder
    (folder / "manifest.json").unlink()                     # as a kill leaves it: some shards, no manifest
    for shard in sorted(folder.glob("shard-*.npz"))[4:]:
        shard.unlink()
    resumed = _encode(corpus, "splade", shard_size=25)       # another --shard-size: the started one is kept
    assert resumed.folder == folder and resumed.meta["shards"] == 9
    for ours, theirs in zip(sorted(folder.glob("shard-*.npz")), sorted(reference.folder.glob("shard-*.npz"))):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name


def test_ot_and_cls_read_a_dupmae_encoding_of_the_same_settings(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "fresh"))
    fresh_ot, fresh_cls = _encode(corpus, "ot"), _encode(corpus, "cls")
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "shared"))
    dupmae = _encode(corpus, "dupmae", shard_size=13)
    capsys.readouterr()
    with monkeypatch.context() as patched:
        _no_encoding(patched)
        ot = _encode(corpus, "ot", query_topk=50)                    # a query-only setting does not matter
        cls = _encode(corpus, "cls")
    assert ot.folder == cls.folder == dupmae.folder
    assert f"the dupmae encoding {dupmae.folder} holds this ot encoding's vectors" in capsys.readouterr().err
    assert ot.has_sparse and not ot.has_dense and cls.has_dense and not cls.has_sparse
    assert ot.dense is None and _same_sparse(ot.sparse, fresh_ot.sparse)
    assert cls.sparse is None and cls.dense.tobytes() == fresh_cls.dense.tobytes()
    # a setting that changes the numbers (here the document top-k) makes an encoding of its own
    other_topk = _encode(corpus, "ot", doc_topk=16)
    assert other_topk.folder != dupmae.folder and other_topk.sparse.getnnz(axis=1).max() == 16
    # a damaged dupmae encoding is never read for another kind
    shard = sorted(dupmae.folder.glob("shard-*.npz"))[1]
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    again = _encode(corpus, "ot")
    assert again.folder != dupmae.folder and _same_sparse(again.sparse, fresh_ot.sparse)


def test_an_encoding_made_when_the_tokenizer_split_text_otherwise_is_not_reused(corpus, tmp_path, monkeypatch):
    """The checkpoint's files are hashed into an encoding's key, but turning them into token ids is the
    tokenizer library's code, which an upgrade can change. Here the same files are read by a tokenizer that
    keeps case (splade-tiny's lowercases): the probe texts get other ids, so the key differs and the
    encoding is made anew, not reused; the original tokenizer reuses its own. Reproduce's identity, which
    loads the tokenizer alone, names the folder the encoder uses."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "home"))
    settings = EncoderSettings.for_kind("cls", max_passage_length=int(LENGTH))
    data = resolve(str(corpus))
    first = DupMAEDocumentEncoder(str(SPLADE_TINY), settings)
    made = encode_corpus(data, first, 4, progress=False)
    assert made == encode.encoding_folder_of(data, encode.folder_fingerprint(first.model.folder), settings, 4,
                                             tokenization=encode.folder_tokenization_digest(first.model.folder))
    cased = DupMAEDocumentEncoder(str(SPLADE_TINY), settings)
    cased.model.tokenizer = AutoTokenizer.from_pretrained(str(cased.model.folder), do_lower_case=False)
    assert cased.model.tokenizer("ANTIDISESTABLISHMENTARIANISM")["input_ids"] != \
        first.model.tokenizer("ANTIDISESTABLISHMENTARIANISM")["input_ids"]
    assert encode.model_fingerprint(cased.model) == encode.model_fingerprint(first.model)
    other = encode.encoding_folder(data, cased.model, settings, 4)
    assert other != made and not other.exists()
    _no_encoding(monkeypatch)
    assert encode_corpus(data, DupMAEDocumentEncoder(str(SPLADE_TINY), settings), 4, progress=False) == made
    with pytest.raises(AssertionError, match="a shard was encoded"):
        encode_corpus(data, cased, 4, progress=False)
