"""A BERT pre-trained here from random weights: shapes built reproducibly from the seed, refused with one line
when unknown, recorded so that a changed config is another run; the held-out masked-LM loss against
transformers' own MLM loss; and scripts/pretrain_small_bert.py's CPU mode end to end (the GPU run's code path
at toy sizes, so the script cannot rot between GPU loans)."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SPLADE_TINY
from dupmae_eval.errors import DupMAEEvalError


def _bert_parameters(layers: int, hidden: int, vocabulary: int = 30522, positions: int = 512) -> int:
    """BertForMaskedLM's parameter count written out from the architecture (no pooler; decoder tied)."""
    embeddings = (vocabulary + positions + 2) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * 4 * hidden + 4 * hidden) \
        + (4 * hidden * hidden + hidden) + 2 * hidden
    head = hidden * hidden + hidden + 2 * hidden + vocabulary
    return embeddings + layers * layer + head


def test_a_shape_is_built_from_the_seed_alone():
    from dupmae_eval.training.pretrain_model import DupMAEForPretraining

    first = DupMAEForPretraining.from_checkpoint("bert-tiny", "mlm", 0.0, True, seed=3).masked_lm
    torch.manual_seed(12345)                                  # the global state must not matter
    again = DupMAEForPretraining.from_checkpoint("shape:bert-tiny", "mlm", 0.0, True, seed=3)
    other = DupMAEForPretraining.from_checkpoint("bert-tiny", "mlm", 0.0, True, seed=4).masked_lm
    a, b, c = first.state_dict(), again.masked_lm.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(a[key], c[key])
    assert abs(float(a[key].std()) - 0.02) < 0.002                # BERT's initializer_range
    assert sum(p.numel() for p in first.parameters()) == _bert_parameters(2, 128)
    assert len(again.tokenizer) == 30522 and again.tokenizer.tokenize("Unbelievable") == ["unbelievable"]


def test_an_unknown_shape_is_refused_before_any_folder_is_made(tmp_path, capsys):
    from dupmae_eval.cli import main

    corpus = tmp_path / "texts.txt"
    corpus.write_text("a text\n")
    code = main(["pretrain", "--model", "shape:bert-mino", "--corpus", str(corpus), "--output",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "unknown model shape 'bert-mino'; choose one of bert-tiny, bert-mini" in err
    assert not (tmp_path / "out").exists()


def test_config_files_are_checked(tmp_path):
    from dupmae_eval.training.shapes import shape_source

    good = tmp_path / "config.json"
    good.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 128}))
    assert shape_source(str(good)).config["hidden_size"] == 64
    assert shape_source(str(SPLADE_TINY)) is None and shape_source("bert-base-uncased") is None   # checkpoints
    cases = {'{"hidden_size": 64,\n "num_hidden_layers": }': r"bad.json:2: not valid JSON",
             '{"vocab_size": 50000}': "vocab_size 50000",
             '{"model_type": "roberta"}': "model_type 'roberta'",
             '{"hidden_size": 100, "num_attention_heads": 3}': "not a multiple"}
    for text, message in cases.items():
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(DupMAEEvalError, match=message):
            shape_source(str(tmp_path / "bad.json"))
    with pytest.raises(DupMAEEvalError, match="no such config file"):
        shape_source(str(tmp_path / "missing.json"))


def test_a_changed_config_file_is_another_run(tmp_path):
    """The record holds the config's content: the same path with another shape is refused, not resumed."""
    from dupmae_eval.training.pretrain import make_pretrain_settings, pretrain

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 64}))
    corpus = tmp_path / "texts.txt.gz"                       # gzipped text is read as text
    with gzip.open(corpus, "wt") as handle:
        handle.write("".join(f"text number {i} about proteins and cells\n" for i in range(16)))
    settings = make_pretrain_settings(objective="mlm", encoder_mask_ratio=0.15, max_steps=1, batch_size=4,
                                      max_length=16, save_steps=10)
    pretrain(str(config), str(corpus), tmp_path / "run", settings)
    record = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert record["finished"] and record["sequences"] == 16 and record["model_config"]["hidden_size"] == 32
    config.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}))
    with pytest.raises(DupMAEEvalError, match="different pre-training run \\(model_config differ"):
        pretrain(str(config), str(corpus), tmp_path / "run", settings)


@pytest.fixture(scope="module")
def abstracts():
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        return [" ".join((record["title"] + " " + record["text"]).split())
                for record in map(json.loads, (line for _, line in zip(range(300), corpus)))]


def test_masked_lm_loss_equals_transformers_mlm_loss(abstracts):
    """Our cloze loss over masked rows only, in batches, equals BertForMaskedLM's own loss (mean CE over the
    labels, through the full logits) on the very same masked inputs; the masks are [MASK] only, about 15 % of
    each text's tokens, and do not depend on the batch size."""
    from dupmae_eval.encoding.checkpoint import read_masked_lm
    from dupmae_eval.training.mlm_loss import cloze_batch, masked_lm_loss
    from dupmae_eval.training.finetune_model import _tokenizer

    model, _ = read_masked_lm(SPLADE_TINY, str(SPLADE_TINY), need_mlm_head=True)
    tokenizer = _tokenizer(SPLADE_TINY)
    texts = abstracts[:24]
    ours = masked_lm_loss(model, tokenizer, texts, ratio=0.15, seed=5, max_length=64, batch_size=7)
    input_ids, attention, labels = cloze_batch(tokenizer, texts, 0, 0.15, 5, 64)
    model.eval()
    with torch.no_grad():
        theirs = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    assert ours.masked_tokens == int((labels != -100).sum()) and ours.texts == 24
    assert abs(ours.nats - float(theirs)) < 1e-4
    masked = labels != -100
    assert (input_ids[masked] == tokenizer.mask_token_id).all()
    maskable = int(attention.sum()) - 2 * len(texts)
    assert abs(ours.masked_tokens / maskable - 0.15) < 0.02
    assert 7.5 < ours.nats < 10.0          # splade-tiny's head is a term-weighting head, not a language model


def test_pretrain_small_bert_cpu_mode(abstracts, tmp_path):
    """The GPU script at toy sizes on the CPU: probe, 3 steps of the bert-mlm recipe from bert-tiny, held-out
    loss at the start (a random model: about ln 30,522 nats) and every 2 steps, and the fp16 export, which
    loads as a checkpoint and equals the trained weights rounded to fp16."""
    from safetensors.torch import load_file

    from dupmae_eval.encoding.checkpoint import read_masked_lm

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    import hashlib
    import lzma

    body = "".join(text + "\n" for text in abstracts[:200]).encode()
    with lzma.open(corpus / "corpus.txt.xz", "wb") as handle:       # as scripts/build_pretrain_corpus.py writes
        handle.write(body)
    (corpus / "heldout.txt").write_text("".join(text + "\n" for text in abstracts[200:240]))
    (corpus / "manifest.json").write_text(json.dumps({"sha256": {"corpus.txt": hashlib.sha256(body).hexdigest()}}))
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_small_bert.py"), "--device", "cpu",
                           "--small", "--max-steps", "3", "--corpus", str(corpus), "--out", str(out), "--work",
                           str(work)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["planned_steps"] == 3 and not summary["stopped_by_time"]
    assert summary["shape"] == "bert-tiny" and summary["probe_steps_per_second"] > 0
    assert summary["settings"]["objective"] == "mlm" and summary["settings"]["encoder_mask_ratio"] == 0.15
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    heldout = {entry["step"]: entry["heldout_nats"] for entry in curve if "heldout_nats" in entry}
    assert sorted(heldout) == [0, 2, 3] and abs(heldout[0] - math.log(30522)) < 0.3
    assert [entry["step"] for entry in curve if "loss" in entry] == [1, 2, 3]
    assert summary["heldout_nats"] == heldout[3]
    shards = sorted((out / "model").glob("*.safetensors"))
    assert shards and all(path.stat().st_size <= 15 * 10 ** 6 for path in shards)
    exported, _ = read_masked_lm(out / "model", "export", need_mlm_head=True)
    trained = load_file(str(work / "run" / "model.safetensors"))
    state = exported.state_dict()
    for key, value in trained.items():
        assert torch.equal(state[key], value.to(torch.float16).to(torch.float32)), key
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_small_bert.py"), "--device", "cpu",
                          "--small", "--corpus", str(tmp_path), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("pretrain_small_bert: error: --corpus")
    assert "no corpus.txt.xz, corpus.txt.gz or corpus.txt" in bad.stderr
    (corpus / "manifest.json").write_text(json.dumps({"sha256": {"corpus.txt": "0" * 64}}))   # a changed corpus
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_small_bert.py"), "--device", "cpu",
                          "--small", "--corpus", str(corpus), "--out", str(tmp_path / "o3")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "corpus.txt SHA-256 000000000000… but the text hashes to" in bad.stderr
