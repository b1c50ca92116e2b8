"""DupMAE pre-training against the formulas: whole-word masking on hand-worked WordPiece, the decoder's
attention mask, and each loss (MLM, [CLS] decoding, bag of words) against an independent computation
through the full logits, on a tiny random BERT in double precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from dupmae_eval.training import masking
from dupmae_eval.training.pretrain_model import (OBJECTIVES, DupMAEForPretraining, EnhancedDecoder, init_like_bert,
                                                 linear_cross_entropy)
from dupmae_eval.training.pretrain import make_pretrain_settings
from dupmae_eval.errors import DupMAEEvalError

# "[CLS] un ##believ ##able cats run ##s [SEP]": three words, of 3, 1 and 2 tokens
TOKENS = ["[CLS]", "un", "##believ", "##able", "cats", "run", "##s", "[SEP]"]
CONTINUATION = np.array([t.startswith("##") for t in TOKENS])
SPECIAL = np.array([t in ("[CLS]", "[SEP]") for t in TOKENS])


def test_words_of_a_wordpiece_text():
    words, lengths = masking.word_index(CONTINUATION, SPECIAL)
    assert words.tolist() == [-1, 0, 0, 0, 1, 2, 2, -1]
    assert lengths.tolist() == [3, 1, 2]


def test_whole_word_masks_cover_whole_words_only():
    """ratio 0.5 of 6 maskable tokens: at most 3 tokens, whole words; the prefix rule allows exactly
    {un ##believ ##able}, {cats}, {run ##s}, {cats, run ##s}."""
    words, lengths = masking.word_index(CONTINUATION, SPECIAL)
    masks = masking.whole_word_masks(words, lengths, 0.5, 2000, np.random.default_rng(0))
    seen = {tuple(np.flatnonzero(row)) for row in masks}
    assert seen == {(1, 2, 3), (4,), (5, 6), (4, 5, 6)}
    assert not masks[:, [0, 7]].any()


def test_whole_word_masking_ratio_over_many_draws():
    rng = np.random.default_rng(1)
    fractions = []
    for _ in range(300):
        lengths = rng.integers(1, 4, size=rng.integers(40, 120))      # words of 1-3 tokens
        continuation = np.concatenate([[False] + [True] * (n - 1) for n in lengths])
        continuation = np.concatenate([[False], continuation, [False]])
        special = np.zeros(len(continuation), dtype=bool)
        special[[0, -1]] = True
        words, word_lengths = masking.word_index(continuation, special)
        mask = masking.whole_word_masks(words, word_lengths, 0.3, 1, rng)[0]
        starts = np.flatnonzero(~continuation & ~special)
        for start, length in zip(starts, word_lengths):              # whole words: all or nothing
            assert mask[start:start + length].all() or not mask[start:start + length].any()
        fractions.append(mask.sum() / (~special).sum())
    assert abs(np.mean(fractions) - 0.3) < 0.015


def test_bert_replacement_is_80_10_10():
    rng = np.random.default_rng(2)
    ids = rng.integers(1000, 2000, 200_000)
    masked = rng.random(200_000) < 0.3
    inputs, labels = masking.replace_masked(ids, masked, 103, 30522, rng)
    assert (labels[masked] == ids[masked]).all() and (labels[~masked] == -100).all()
    assert (inputs[~masked] == ids[~masked]).all()
    share_mask = np.mean(inputs[masked] == 103)
    share_same = np.mean(inputs[masked] == ids[masked])
    assert abs(share_mask - 0.8) < 0.01 and abs(share_same - 0.1 - 0.1 * 1000 / 30522) < 0.01


def test_decoder_attention_hand_worked():
    words, lengths = masking.word_index(CONTINUATION, SPECIAL)
    allowed = masking.decoder_attention(words, lengths, 0.0, np.random.default_rng(0))
    assert (allowed == ~np.eye(8, dtype=bool)).all()                    # ratio 0: everything but itself
    allowed = masking.decoder_attention(words, lengths, 0.5, np.random.default_rng(3))
    assert not allowed.diagonal().any()
    assert allowed[1:, 0].all() and allowed[:-1, 7].all()                # [CLS] and [SEP] always seen
    for row in range(1, 7):
        hidden = set(np.flatnonzero(~allowed[row])) - {row}
        # what a row does not see, besides itself, is one of the whole-word masks of ratio 0.5
        assert any(set(mask) - {row} == hidden for mask in ((1, 2, 3), (4,), (5, 6), (4, 5, 6)))


# ----------------------------------------------------------------------------- the losses

def _tiny(objective="dupmae", bow_normalize=True, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=997, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    lm = BertForMaskedLM(config).double().eval()
    with torch.no_grad():   # the padding row starts at zero: its logit would tie across every position, and a
        lm.bert.embeddings.word_embeddings.weight[0].normal_(std=0.02)   # max's gradient may go to any of them
    decoder = EnhancedDecoder(config).double().eval()
    init_like_bert(decoder, 0.02, torch.Generator().manual_seed(seed))
    return DupMAEForPretraining(lm, decoder, objective, 0.1, bow_normalize)


def _batch(seed=1):
    rng = np.random.default_rng(seed)
    lengths = [12, 5, 9]
    width = max(lengths)
    ids = torch.zeros(3, width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    allowed = torch.zeros(3, width, width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        body = rng.integers(5, 997, n - 2)
        body[1] = body[0]                                                 # a repeated token: counted once
        ids[row, :n] = torch.tensor([1, *body, 2])
        attention[row, :n] = 1
        special = np.zeros(n, dtype=bool)
        special[[0, n - 1]] = True
        words, lengths_ = masking.word_index(np.zeros(n, dtype=bool), special)
        allowed[row, :n, :n] = torch.from_numpy(masking.decoder_attention(words, lengths_, 0.5, rng))
        allowed[row, n:, 0] = True                                        # padding rows: see [CLS], predict nothing
    masked = (torch.from_numpy(rng.random(ids.shape)) < 0.3) & attention.bool()
    masked[:, 0] = False
    masked[[0, 1, 2], [3, 2, 4]] = True
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, 4), ids)
    bow_mask = attention.bool() & (ids != 1) & (ids != 2)
    decoder_labels = torch.where(bow_mask, ids, torch.full_like(ids, -100))
    return dict(input_ids=inputs, attention_mask=attention, labels=labels, original_ids=ids, bow_mask=bow_mask,
                decoder_allowed=allowed, decoder_labels=decoder_labels)


def _reference_losses(model, batch):
    """The three losses written out over the full logits, with explicit attention (no fused kernels)."""
    lm = model.masked_lm
    hidden = lm.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = lm.cls(hidden)                                              # B x L x V
    labels = batch["labels"]
    mlm = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
    # [CLS] decoding, attention spelt out
    emb = lm.bert.embeddings
    ids = batch["original_ids"]
    batch_size, length = ids.shape
    sentence = hidden[:, 0]
    context = torch.cat([sentence[:, None], emb(input_ids=ids)[:, 1:]], dim=1)
    query = emb(inputs_embeds=sentence[:, None].repeat(1, length, 1))
    dec = model.decoder
    heads, size = dec.heads, 32 // dec.heads
    q = dec.query(query).view(batch_size, length, heads, size).transpose(1, 2)
    k = dec.key(context).view(batch_size, length, heads, size).transpose(1, 2)
    v = dec.value(context).view(batch_size, length, heads, size).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(size)
    scores = scores.masked_fill(~batch["decoder_allowed"][:, None], float("-inf"))
    attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch_size, length, 32)
    attended = dec.attention_output.LayerNorm(dec.attention_output.dense(attended) + query)
    out = dec.output.LayerNorm(dec.output.dense(dec.intermediate(attended)) + attended)
    dec_logits = lm.cls(out)
    decoder = torch.nn.functional.cross_entropy(dec_logits.view(-1, dec_logits.shape[-1]),
                                                batch["decoder_labels"].view(-1), ignore_index=-100)
    # bag of words: max over positions 1.. (padding out), -Σ over the distinct ordinary tokens of (1/n) log softmax
    pool_mask = batch["attention_mask"].bool().clone()
    pool_mask[:, 0] = False
    mu = logits.masked_fill(~pool_mask[..., None], float("-inf")).amax(dim=1)
    total = 0.0
    for row in range(batch_size):
        tokens = [int(t) for t, keep in zip(ids[row], batch["bow_mask"][row]) if keep]
        log_p = torch.log_softmax(mu[row], dim=0)
        total = total - sum(log_p[t] for t in set(tokens)) / len(tokens)
    return mlm, decoder, total / batch_size


def test_each_loss_equals_the_full_logits_computation():
    model, batch = _tiny(), _batch()
    ours = model(**batch)["loss"]
    parts = model.last_parts
    mlm, decoder, bow = _reference_losses(model, batch)
    mlm, decoder, bow = (float(x.detach()) for x in (mlm, decoder, bow))
    assert parts["mlm"] == pytest.approx(mlm, abs=1e-5)
    assert parts["decoder"] == pytest.approx(decoder, abs=1e-5)
    assert parts["bow"] == pytest.approx(bow, abs=1e-5)
    assert float(ours.detach()) == pytest.approx(mlm + decoder + 0.1 * bow, abs=1e-5)
    assert decoder > 0 and bow > 0


def test_gradients_equal_autograd_through_the_full_logits():
    model, batch = _tiny(), _batch()
    model.zero_grad()
    model(**batch)["loss"].backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    mlm, decoder, bow = _reference_losses(model, batch)
    (mlm + decoder + 0.1 * bow).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        torch.testing.assert_close(ours[name], expected, rtol=1e-6, atol=1e-8, msg=name)


class _OpCounter:
    """Counts the aten ops a block dispatches (forward and backward, recomputation included)."""

    def __enter__(self):
        import collections

        from torch.utils._python_dispatch import TorchDispatchMode

        counts = self.counts = collections.Counter()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counts[func.__name__] += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


# the tiny encoder: 2 layers, each 6 linear layers (addmm), one GELU, two LayerNorms, three dropouts
@pytest.mark.parametrize("mode, first, extra_ops, layer_runs", [
    ("layers", -1, {"addmm.default": 12, "gelu.default": 2, "native_layer_norm.default": 4, "bernoulli_.float": 6},
     [2, 2]),
    ("elementwise", -1, {"addmm.default": 0, "gelu.default": 2, "native_layer_norm.default": 4,
                         "bernoulli_.float": 6}, [2, 2]),
    ("layers", 1, {"addmm.default": 6, "gelu.default": 1, "native_layer_norm.default": 2, "bernoulli_.float": 3},
     [2, 1]),
    ("layers", 0, {"addmm.default": 0, "gelu.default": 0, "native_layer_norm.default": 0, "bernoulli_.float": 0},
     [1, 1])])
def test_recompute_leaves_loss_and_gradients_unchanged(mode, first, extra_ops, layer_runs):
    """Training mode with dropout on: a recomputing encoder reruns each layer (or its elementwise ops) with
    the RNG state it first ran with, so the loss and every gradient equal the plain run's (float64). The
    recomputation is really on, and only where the mode says: counted at the dispatcher, `layers` runs each
    encoder layer's products, GELU, LayerNorms and dropouts again; `elementwise` all but the products. With
    `recompute_first` 1 only the first layer runs again (its feed-forward block is called twice, the second
    layer's once), with 0 none does."""
    def step(mode, first=-1):
        model = _tiny()
        model.train()
        model.recompute_encoder(mode, first)
        runs = [0] * len(model.masked_lm.bert.encoder.layer)
        for index, layer in enumerate(model.masked_lm.bert.encoder.layer):
            layer.intermediate.register_forward_hook(lambda *_, index=index: runs.__setitem__(index, runs[index] + 1))
        torch.manual_seed(7)
        with _OpCounter() as ops:
            loss = model(**_batch())["loss"]
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return float(loss.detach()), grads, ops.counts, runs

    plain_loss, plain, plain_ops, plain_runs = step("none")
    loss, grads, ops, runs = step(mode, first)
    assert plain_runs == [1, 1] and runs == layer_runs
    assert {op: ops[op] - plain_ops[op] for op in extra_ops} == extra_ops
    assert loss == pytest.approx(plain_loss, abs=1e-12)
    assert grads.keys() == plain.keys()
    for name, expected in plain.items():
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12, msg=name)
    assert make_pretrain_settings(recompute=mode, recompute_first=first).recompute_first == first


def test_unknown_recompute_mode_is_refused():
    with pytest.raises(DupMAEEvalError, match="activation recompute mode 'everything'; choose one of none"):
        make_pretrain_settings(recompute="everything")


def test_recompute_first_out_of_range_is_refused():
    """More layers than the encoder has, or below -1: one line naming the setting and the range."""
    with pytest.raises(DupMAEEvalError, match=r"^recompute_first -2: -1 \(every layer\) or 0 or more layers$"):
        make_pretrain_settings(recompute="layers", recompute_first=-2)
    with pytest.raises(DupMAEEvalError, match=r"^recompute_first 3: -1 \(every layer\) or 0 to 2 layers$"):
        _tiny().recompute_encoder("layers", 3)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_sums_its_terms(objective):
    model, batch = _tiny(objective), _batch()
    loss = float(model(**batch)["loss"].detach())
    mlm, decoder, bow = (float(x) for x in _reference_losses(_tiny(), batch))
    entry = OBJECTIVES[objective]
    expected = mlm + (decoder if entry.decoder else 0.0) + (0.1 * bow if entry.bag_of_words else 0.0)
    assert loss == pytest.approx(expected, abs=1e-5)


def test_bag_of_words_as_the_paper_writes_it():
    """bow_normalize off: Eq. 9's plain sum over set(X) (the released code divides by the length)."""
    normalized, plain = _tiny(bow_normalize=True), _tiny(bow_normalize=False)
    batch = _batch()
    normalized(**batch), plain(**batch)
    lengths = batch["bow_mask"].sum(dim=1).double()
    hidden = plain.masked_lm.bert(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).last_hidden_state
    logits = plain.masked_lm.cls(hidden)
    pool_mask = batch["attention_mask"].bool().clone()
    pool_mask[:, 0] = False
    log_p = torch.log_softmax(logits.masked_fill(~pool_mask[..., None], float("-inf")).amax(dim=1), dim=1)
    per_text = [-sum(log_p[r, t] for t in set(batch["original_ids"][r][batch["bow_mask"][r]].tolist()))
                for r in range(3)]
    assert plain.last_parts["bow"] == pytest.approx(float(sum(per_text) / 3), abs=1e-5)
    assert normalized.last_parts["bow"] == pytest.approx(float(sum(p / n for p, n in zip(per_text, lengths)) / 3),
                                                         abs=1e-5)


def test_linear_cross_entropy_in_blocks_equals_autograd():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(37, 8, dtype=torch.double, generator=generator, requires_grad=True)
    weight = torch.randn(101, 8, dtype=torch.double, generator=generator, requires_grad=True)
    bias = torch.randn(101, dtype=torch.double, generator=generator, requires_grad=True)
    labels = torch.randint(0, 101, (37,), generator=generator)
    ours = linear_cross_entropy(x, weight, bias, labels, block=5)
    (ours * 3.0).backward()
    got = [t.grad.clone() for t in (x, weight, bias)]
    for t in (x, weight, bias):
        t.grad = None
    reference = torch.nn.functional.cross_entropy(x @ weight.T + bias, labels, reduction="sum")
    (reference * 3.0).backward()
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), rel=1e-12)
    for mine, theirs in zip(got, (x.grad, weight.grad, bias.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_linear_cross_entropy_in_fp32_matches_float64_autograd():
    """In fp32 on a CPU the blocks' logits go through oneDNN (`onednn.vocabulary_linear`); the loss and the
    gradients still equal float64 autograd to fp32 precision."""
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(300, 64, generator=generator)
    weight, bias = torch.randn(2000, 64, generator=generator) * 0.1, torch.randn(2000, generator=generator)
    labels = torch.randint(0, 2000, (300,), generator=generator)
    leaves32 = [t.clone().requires_grad_() for t in (x, weight, bias)]
    leaves64 = [t.double().requires_grad_() for t in (x, weight, bias)]
    ours = linear_cross_entropy(*leaves32, labels, block=128)
    ours.backward()
    reference = torch.nn.functional.cross_entropy(leaves64[0] @ leaves64[1].T + leaves64[2], labels, reduction="sum")
    reference.backward()
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    for mine, theirs in zip(leaves32, leaves64):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the verb, resume, torchrun

@pytest.fixture(scope="module")
def abstracts(tmp_path_factory):
    """A text file of 48 SciFact abstracts, one per line (the corpus the CPU recipe pre-trains on)."""
    import gzip
    import json

    from conftest import REPO

    path = tmp_path_factory.mktemp("pretrain-corpus") / "abstracts.txt"
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        texts = [json.loads(line)["text"] for _, line in zip(range(48), corpus)]
    path.write_text("\n".join(" ".join(text.split()) for text in texts) + "\n")
    return path


def _pretrain_command(corpus, output, steps=6, objective="dupmae"):
    import sys

    from conftest import SPLADE_TINY

    return [sys.executable, "-m", "dupmae_eval", "pretrain", "--model", str(SPLADE_TINY), "--corpus", str(corpus),
            "--output", str(output), "--objective", objective, "--max-steps", str(steps), "--save-steps", "2",
            "--batch-size", "4", "--max-length", "48", "--warmup-ratio", "0", "--learning-rate", "1e-3"]


def test_pretrain_writes_a_masked_lm_that_run_reads(abstracts, tmp_path):
    import json
    import subprocess

    from safetensors.torch import load_file

    from conftest import SPLADE_TINY
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings

    output = tmp_path / "pt"
    done = subprocess.run(_pretrain_command(abstracts, output, steps=2), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((output / "pretrain.json").read_text())
    assert record["finished"] and record["steps"] == 2 and record["sequences"] == 48
    assert (output / "dupmae_decoder.safetensors").is_file()
    before, after = load_file(str(SPLADE_TINY / "model.safetensors")), load_file(str(output / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])
    encoded = DupMAEDocumentEncoder(str(output), EncoderSettings.for_kind("dupmae")).encode_texts(["a protein fold"])
    assert encoded.dense.shape == (1, 128) and len(encoded.sparse.row(0)[0]) == 384
    # the same command on the finished folder trains nothing and leaves the record (its loss) and weights as
    # they were; a zero-step "resume" used to rewrite training_loss as 0
    written = {name: (output / name).read_bytes() for name in ("pretrain.json", "model.safetensors")}
    again = subprocess.run(_pretrain_command(abstracts, output, steps=2), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-2000:]
    assert {name: (output / name).read_bytes() for name in written} == written
    assert record["training_loss"] > 0


def test_a_killed_pretraining_resumes_to_the_same_weights(abstracts, tmp_path):
    """SIGKILL after a checkpoint, run the same command again: the weights (encoder, MLM head and decoder)
    equal an uninterrupted run's (CPU, fixed seed, dropout on, masks drawn per example and epoch)."""
    import json
    import subprocess

    from safetensors.torch import load_file

    from conftest import kill_after_first_checkpoint

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_pretrain_command(abstracts, whole), check=True, timeout=900, capture_output=True)
    kill_after_first_checkpoint(_pretrain_command(abstracts, killed), killed)
    assert not json.loads((killed / "pretrain.json").read_text())["finished"]
    subprocess.run(_pretrain_command(abstracts, killed), check=True, timeout=900, capture_output=True)
    assert json.loads((killed / "pretrain.json").read_text())["steps"] == 6
    for name in ("model.safetensors", "dupmae_decoder.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name


def test_two_processes_equal_one_on_the_same_global_batch(abstracts, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import SPLADE_TINY
    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.training.pretrain_data import TokenStore

    store = TokenStore.build(str(abstracts), load_model(str(SPLADE_TINY)).tokenizer, tmp_path / "store")
    probe = Path(__file__).with_name("ddp_pretrain_probe.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(probe), str(SPLADE_TINY), str(store.folder), str(one)], check=True,
                   timeout=600)
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(port), str(probe), str(SPLADE_TINY), str(store.folder), str(two)], check=True, timeout=600)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert abs(single["loss"] - double["loss"]) < 1e-5
    for name, values in single["grad"].items():
        assert len(values) > 0 and np.allclose(values, double["grad"][name], rtol=1e-5, atol=1e-8), name


def test_recipes_load_and_unknown_settings_are_refused(tmp_path):
    from dupmae_eval.errors import DupMAEEvalError
    from dupmae_eval.training.pretrain import load_pretrain_recipe, make_pretrain_settings

    for name in ("dupmae-wiki-book", "dupmae-msmarco", "splade-tiny-scifact"):
        settings = make_pretrain_settings(load_pretrain_recipe(name))
        assert settings.objective == "dupmae" and settings.encoder_mask_ratio == 0.3
    assert make_pretrain_settings(load_pretrain_recipe("dupmae-msmarco"), max_length="64").max_length == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: dupmae\nmask_ratio: 0.3\n")
    with pytest.raises(DupMAEEvalError, match=r"bad.yaml:2: unknown setting 'mask_ratio'"):
        load_pretrain_recipe(bad)
    with pytest.raises(DupMAEEvalError, match="unknown pre-training objective 'cls'"):
        make_pretrain_settings(objective="cls")


def test_pretrain_bench_runs_and_both_routes_agree():
    """scripts/pretrain_bench.py at its smoke size: ours and the full-logits route give the same loss, and
    each recompute mode (on the first of the two layers: `--recompute-first 1`) leaves ours' loss unchanged."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_bench.py"), "--quick", "--steps", "1",
                           "--recompute-first", "1"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    difference = float(re.search(r"\|loss difference\| ([0-9.e+-]+)", done.stdout).group(1))
    assert difference < 1e-4
    assert "ours / full-logits: step time" in done.stdout
    assert "recompute sides on the first 1 layers" in done.stdout
    for mode in ("elementwise", "layers"):          # recomputation leaves ours' loss as it was
        recomputed = float(re.search(rf"ours-{mode} / full-logits: .*\|loss difference\| to ours ([0-9.e+-]+)",
                                     done.stdout).group(1))
        assert recomputed < 1e-6, mode


def test_max_steps_is_minus_one_or_a_count(capsys):
    from dupmae_eval.cli import main
    from conftest import SPLADE_TINY

    assert make_pretrain_settings(max_steps="-1").max_steps == -1
    assert make_pretrain_settings(max_steps="3").max_steps == 3
    for bad in ("0", "-2"):
        with pytest.raises(DupMAEEvalError, match=rf"--max-steps \(max_steps\) {bad}: give -1"):
            make_pretrain_settings(max_steps=bad)
    # on the command line: one line, before any folder is made
    assert main(["pretrain", "--model", str(SPLADE_TINY), "--corpus", "x.txt", "--output", "never",
                 "--max-steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-steps (max_steps) 0" in err[0]


def test_a_corpus_too_small_for_one_step_does_not_lock_the_folder(abstracts, tmp_path, capsys):
    """An empty corpus, or fewer sequences than one batch, is refused once tokenized, naming the flags; the
    token store of that start is not left behind, so the corrected command (another corpus, a smaller batch)
    takes the folder over instead of being told it holds a different run."""
    from dupmae_eval.cli import main

    output = tmp_path / "pt"

    def pretrain(corpus, batch):
        code = main(["pretrain", "--model", "bert-tiny", "--corpus", str(corpus), "--output", str(output),
                     "--max-steps", "1", "--batch-size", str(batch), "--max-length", "16", "--objective", "mlm"])
        captured = capsys.readouterr()
        return code, captured.out, [line for line in captured.err.splitlines() if line.startswith("dupmae-eval")]

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = pretrain(empty, 2)
    assert code == 2 and err == [f"dupmae-eval: error: --corpus {empty}: 0 sequences cannot fill one step of "
                                 f"1 process(es) x --batch-size (batch_size) 2"]
    assert [p.name for p in output.rglob("*") if p.is_file()] == ["pretrain.json"]
    one = tmp_path / "one.txt"
    one.write_text("a single text\n")
    code, out, err = pretrain(one, 2)                                    # taken over, refused again: 1 < 2
    assert code == 2 and "takes the folder over" in out and "1 sequences cannot fill" in err[0]
    code, out, _ = pretrain(one, 1)                                      # the corrected batch size
    assert code == 0 and "takes the folder over" in out and (output / "model.safetensors").is_file()


def test_a_resumed_run_records_the_mean_loss_of_all_its_steps(abstracts, tmp_path, capsys):
    """The record's (and card's) training loss of a run resumed from a checkpoint (here: a finished run
    continued to more steps, the same resume as after a kill) is the mean over every step, as for a run
    never stopped: with a log line each step, the mean of the logged losses. The Trainer's own figure
    averages the steps after the resume only. Fine-tuning records its loss through the same code."""
    import json

    from dupmae_eval.cli import main

    output = tmp_path / "pt"
    for steps in (2, 4):
        assert main(["pretrain", "--model", "bert-tiny", "--corpus", str(abstracts), "--output", str(output),
                     "--max-steps", str(steps), "--save-steps", "1", "--logging-steps", "1", "--batch-size", "2",
                     "--max-length", "16", "--objective", "mlm"]) == 0
    capsys.readouterr()
    record = json.loads((output / "pretrain.json").read_text())
    losses = [entry["loss"] for entry in record["log"]]
    assert record["steps"] == 4 and len(losses) == 4
    assert record["training_loss"] == pytest.approx(sum(losses) / 4, rel=1e-6)


def test_a_failed_start_does_not_lock_the_folder_and_a_finished_run_takes_more_steps(abstracts, tmp_path, capsys):
    """A command refused for its input leaves no record (bad path, no MLM head) or, when the input fails
    only once read (a line that is not UTF-8), a record and no partial token files: the corrected command
    takes the folder over. The finished run then continues to a larger --max-steps from its last
    checkpoint; any other change, or fewer steps, stays refused. In process: a few seconds."""
    import json

    from safetensors.torch import load_file
    from transformers import BertModel

    from conftest import SPLADE_TINY
    from dupmae_eval.cli import main

    output = tmp_path / "pt"

    def pretrain(corpus, steps, model=SPLADE_TINY, *extra, folder=output):
        code = main(["pretrain", "--model", str(model), "--corpus", str(corpus), "--output", str(folder),
                     "--max-steps", str(steps), "--save-steps", "1", "--batch-size", "4", "--max-length", "48",
                     "--warmup-ratio", "0", "--learning-rate", "1e-3", *extra])
        captured = capsys.readouterr()
        return code, captured.out, [line for line in captured.err.splitlines() if line.startswith("dupmae-eval")]

    code, _, err = pretrain(tmp_path / "missing.txt", 1)
    assert code == 2 and err == [f"dupmae-eval: error: --corpus {tmp_path / 'missing.txt'}: no such file or folder"]
    bare = tmp_path / "bare"
    BertModel.from_pretrained(str(SPLADE_TINY)).save_pretrained(bare)
    code, _, err = pretrain(abstracts, 1, bare)
    assert code == 2 and len(err) == 1 and "no MLM head" in err[0]
    assert not output.exists()

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a first text\nanother one\nthird \xff\xfe text\n")
    code, _, err = pretrain(bad, 1)
    assert code == 2 and err == [f"dupmae-eval: error: {bad}:3: not UTF-8 text"]
    assert [p.name for p in output.rglob("*") if p.is_file()] == ["pretrain.json"]    # no .partial left

    code, out, _ = pretrain(abstracts, 1)
    assert code == 0 and "takes the folder over" in out
    record = json.loads((output / "pretrain.json").read_text())
    assert record["data"] == str(abstracts) and record["finished"] and record["steps"] == 1
    one_step = load_file(str(output / "model.safetensors"))
    from huggingface_hub import ModelCard

    card = ModelCard.load(output / "README.md")      # the hub's parser: the YAML block is valid card metadata
    assert card.data.library_name == "transformers" and "dupmae-eval" in card.data.tags
    assert card.data.base_model is None and card.data.datasets is None   # a local folder, a text file: no hub names
    assert f"dupmae-eval pretrain --model {SPLADE_TINY} --corpus {abstracts} --output {output} --max-steps 1 " \
           f"--save-steps 1" in card.text and "- steps: 1," in card.text

    code, out, _ = pretrain(abstracts, 2)
    assert code == 0 and "continuing the finished pre-training run" in out
    record = json.loads((output / "pretrain.json").read_text())
    assert record["finished"] and record["steps"] == 2 and record["settings"]["max_steps"] == 2
    assert record["extended"] == [{"from_max_steps": 1, "to_max_steps": 2}]
    assert "- steps: 2," in ModelCard.load(output / "README.md").text      # the card follows the continued run
    (output / "README.md").unlink()          # as a stop between the finished record and the card leaves it
    code, out, _ = pretrain(abstracts, 2)
    assert code == 0 and "already finished" in out and "- steps: 2," in ModelCard.load(output / "README.md").text
    state = json.loads((output / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # warm-up 0, linear decay: the first step's rate is the peak whatever the count, and the second's is the
    # new count's (the schedule is set from it on resume); so the continued run is an uninterrupted 2-step run
    assert pretrain(abstracts, 2, folder=tmp_path / "whole")[0] == 0
    whole, continued = (load_file(str(folder / "model.safetensors")) for folder in (tmp_path / "whole", output))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(one_step[key], continued[key])
    assert whole.keys() == continued.keys() and all(torch.equal(whole[k], continued[k]) for k in whole)

    for steps, extra in ((1, ()), (3, ("--seed", "7"))):         # fewer steps; more steps and another seed
        code, _, err = pretrain(abstracts, steps, SPLADE_TINY, *extra)
        assert code == 2 and len(err) == 1 and "already holds a different pre-training run" in err[0]
    # the same file name with other texts in it: not this run, though its record names the same file
    moved = tmp_path / "whole-elsewhere"
    (tmp_path / "whole").rename(moved)           # the finished run, recorded as made from `abstracts`
    record = json.loads((moved / "pretrain.json").read_text())
    (moved / "pretrain.json").write_text(json.dumps({**record, "data": str(tmp_path / "texts.txt")}))
    (tmp_path / "texts.txt").write_text(abstracts.read_text() + "one more text, written after the run\n")
    code, out, err = pretrain(tmp_path / "texts.txt", 2, folder=moved)
    assert code == 2 and len(err) == 1 and "(content of the data differ)" in err[0] and "finished" not in out
