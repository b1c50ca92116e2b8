"""One DupMAE pre-training step, ours vs the same objective through the full logits (and vs PyPI pretense's
DupMAE step when it is installed), side by side in one run.

One pre-training step's time and memory: BERT-base size with random weights (12 x 768, 30,522 vocabulary), a batch of 16
sequences x 256 tokens, objective dupmae (MLM at 30 % whole-word masking + [CLS] decoding with half the
positions hidden per row + 0.1 x bag of words), one AdamW step. Each side runs in its own subprocess, so
its peak memory (VmHWM) is its own:

- ours: `DupMAEForPretraining` as `pretrain` runs it (MLM and decoder cross-entropies block by block with
  their gradients formed in the forward, the bag of words through the bounded max-pool);
- full-logits: the same model and batch, the three losses computed from B x L x V logits (what the released
  code does), so the two losses must agree;
- pretense: pretense 0.1.1's DupMAEForPretraining on the same BERT and the same ids, masks and bag-of-words
  weights (its own decoder layer, so its loss differs);
- ours-elementwise, full-logits-elementwise: the first two with the encoder recomputing its elementwise ops
  in the backward (`pretrain --recompute elementwise`: products and attention kept);
- ours-layers, full-logits-layers: the first two with the encoder's layers recomputed whole
  (`pretrain --recompute layers`: gradient checkpointing).
Each recompute mode runs on both routes, so its trade is shown like for like. `--recompute-first N` applies
the recompute sides' mode to the encoder's first N layers only, on both routes (`pretrain --recompute-first`).

Dropout is set to 0 and the models are in training mode (recomputation acts only in training mode), so
every side computes the same function. Every side runs under the same heap policy (`--heap`, the
`pretrain --heap` setting: `glibc`, the default, leaves the C library as it is; `release` hands freed tensors
back), applied before its model is built, as the trainer applies it before the first step.

    python scripts/pretrain_bench.py            # BERT-base size, about 15 minutes on 2 cores
    python scripts/pretrain_bench.py --heap release --sides ours,full-logits,ours-layers
    python scripts/pretrain_bench.py --heap release --sides ours,full-logits,ours-layers --recompute-first 9
    python scripts/pretrain_bench.py --quick    # a 2-layer, 128-wide BERT (the smoke test's size)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUTES = ("ours", "full-logits")
RECOMPUTE_MODES = ("elementwise", "layers")            # beside "none", the plain sides
SIDES = ROUTES + ("pretense",) + tuple(f"{route}-{mode}" for mode in RECOMPUTE_MODES for route in ROUTES)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])


def _config(quick: bool):
    from transformers import BertConfig

    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if quick:
        return BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=512, **no_dropout)
    return BertConfig(vocab_size=30522, **no_dropout)          # bert-base-uncased's shape


def _batch(batch: int, length: int):
    """Random token ids, each its own word, masked and collated as `pretrain` does (seeded)."""
    import numpy as np

    from dupmae_eval.training import masking
    from dupmae_eval.training.pretrain_data import PretrainCollator

    rng = np.random.default_rng(1)
    items = []
    for _ in range(batch):
        ids = np.concatenate([[101], rng.integers(1000, 30000, length - 2), [102]])
        special = np.zeros(length, dtype=bool)
        special[[0, -1]] = True
        words, lengths = masking.word_index(np.zeros(length, dtype=bool), special)
        masked = masking.whole_word_masks(words, lengths, 0.3, 1, rng)[0]
        inputs, labels = masking.replace_masked(ids, masked, 103, 30522, rng)
        items.append({"input_ids": inputs, "labels": labels, "original_ids": ids,
                      "decoder_allowed": masking.decoder_attention(words, lengths, 0.5, rng)})
    return PretrainCollator(0)(items)


def _full_logits_loss(net, batch):
    """The objective from full B x L x V logits: HF's MLM loss, a masked max for μ, the decoder's logits."""
    import torch

    lm = net.masked_lm
    out = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
             output_hidden_states=True)
    hidden = out.hidden_states[-1]
    pool = batch["attention_mask"].bool().clone()
    pool[:, 0] = False
    mu = out.logits.masked_fill(~pool[..., None], float("-inf")).amax(dim=1)
    bow = net.bow_loss(mu, batch["original_ids"], batch["bow_mask"])
    emb = lm.bert.embeddings
    length = batch["original_ids"].shape[1]
    sentence = hidden[:, 0]
    context = torch.cat([sentence[:, None], emb(input_ids=batch["original_ids"])[:, 1:]], dim=1)
    query = emb(inputs_embeds=sentence[:, None].expand(-1, length, -1).contiguous())
    logits = lm.cls(net.decoder(query, context, batch["decoder_allowed"]))
    dec = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), batch["decoder_labels"].view(-1))
    return out.loss + dec + net.bow_weight * bow


def child(side: str, quick: bool, steps: int, heap: str, recompute_first: int = -1) -> dict:
    import torch
    from transformers import BertForMaskedLM

    from dupmae_eval.runtime.heap import use_heap

    use_heap(heap)
    torch.manual_seed(0)
    config = _config(quick)
    batch = _batch(4 if quick else 16, 64 if quick else 256)
    if side == "pretense":
        try:
            from pretense.config import MethodConfig
            from pretense.modeling import DupMAEForPretraining as PretenseDupMAE
        except ImportError:
            return {"skipped": "pretense is not installed (pip install pretense==0.1.1)"}
        model = PretenseDupMAE(BertForMaskedLM(config), MethodConfig(name="dupmae"))
        counts = batch["bow_mask"].sum(dim=1, keepdim=True).float()
        weights = torch.zeros(batch["original_ids"].shape[0], config.vocab_size)
        weights.scatter_(1, torch.where(batch["bow_mask"], batch["original_ids"], 0),
                         torch.where(batch["bow_mask"], 1.0 / counts, 0.0))
        inputs = {"encoder_input_ids": batch["input_ids"], "encoder_attention_mask": batch["attention_mask"],
                  "encoder_labels": batch["labels"], "decoder_input_ids": batch["original_ids"],
                  "decoder_attention_mask": ~batch["decoder_allowed"], "decoder_labels": batch["decoder_labels"],
                  "bag_word_weight": weights}

        def loss_of():
            return model(**inputs).loss
    else:
        from dupmae_eval.training.pretrain_model import DupMAEForPretraining, EnhancedDecoder, init_like_bert

        decoder = EnhancedDecoder(config)
        init_like_bert(decoder, 0.02, torch.Generator().manual_seed(0))
        model = DupMAEForPretraining(BertForMaskedLM(config), decoder, "dupmae", 0.1, True)
        route = "ours" if side.startswith("ours") else "full-logits"
        model.recompute_encoder(side[len(route) + 1:] or "none", recompute_first)   # "ours-layers" -> "layers"

        def loss_of():
            return model(**batch)["loss"] if route == "ours" else _full_logits_loss(model, batch)
    model.train()                                    # dropout is 0: every side computes the same function
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times, losses = [], []
    for _ in range(steps + 1):                       # the first is a warm-up
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
        losses.append(float(loss.detach()))
    return {"step_s": statistics.median(times[1:]), "peak_mb": _status_kb("VmHWM") / 1024, "loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side after one warm-up")
    parser.add_argument("--heap", default="glibc", help="heap policy of every side (dupmae_eval.runtime.heap.HEAPS)")
    parser.add_argument("--recompute-first", type=int, default=-1,
                        help="the recompute sides' mode on the encoder's first N layers only (-1: all)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides to run (ours and "
                                                                 "full-logits always run: the ratios need them)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.quick, args.steps, args.heap, args.recompute_first)
        Path(args.out).write_text(json.dumps(result))
        return
    import tempfile

    import torch

    from dupmae_eval.runtime.heap import HEAPS

    HEAPS.lookup(args.heap)
    wanted = set(args.sides.split(",")) | set(ROUTES)
    unknown = wanted - set(SIDES)
    if unknown:
        raise SystemExit(f"--sides: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")

    size = "2 x 128 BERT, 4 x 64 tokens" if args.quick else "BERT-base (12 x 768), 16 x 256 tokens"
    print(f"pre-training step, objective dupmae, {size}, vocabulary 30,522, AdamW; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; heap {args.heap}; recompute sides on "
          f"{'every layer' if args.recompute_first < 0 else f'the first {args.recompute_first} layers'}; "
          f"one process per side, median of {args.steps} steps after a warm-up", flush=True)
    results = {}
    for side in (side for side in SIDES if side in wanted):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "--child", side, "--out", out.name, "--steps", str(args.steps),
                       "--heap", args.heap, "--recompute-first", str(args.recompute_first)]
            done = subprocess.run(command + (["--quick"] if args.quick else []), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
            results[side] = json.loads(Path(out.name).read_text())
        row = results[side]
        print(f"  {side:25s} " + (row["skipped"] if "skipped" in row else
                                  f"step {row['step_s']:8.2f} s   peak memory {row['peak_mb']:8,.0f} MB   "
                                  f"loss {row['loss']:.6f}"), flush=True)
    ours, full = results["ours"], results["full-logits"]
    print(f"ours / full-logits: step time {ours['step_s'] / full['step_s']:.2f}x, peak memory "
          f"{ours['peak_mb'] / full['peak_mb']:.2f}x (target: memory <= 0.5x, time not slower); "
          f"|loss difference| {abs(ours['loss'] - full['loss']):.2e}")
    for mode in RECOMPUTE_MODES:
        mine, peer = results.get(f"ours-{mode}"), results.get(f"full-logits-{mode}")
        if mine is None:
            continue
        print(f"ours-{mode} / full-logits: step time {mine['step_s'] / full['step_s']:.2f}x, peak memory "
              f"{mine['peak_mb'] / full['peak_mb']:.2f}x; |loss difference| to ours "
              f"{abs(mine['loss'] - ours['loss']):.2e}")
        if peer is not None:
            print(f"  like for like, ours-{mode} / full-logits-{mode}: step time "
                  f"{mine['step_s'] / peer['step_s']:.2f}x, peak memory {mine['peak_mb'] / peer['peak_mb']:.2f}x")
    if "skipped" not in results.get("pretense", {"skipped": "not asked"}):
        other = results["pretense"]
        print(f"ours / pretense: step time {ours['step_s'] / other['step_s']:.2f}x, peak memory "
              f"{ours['peak_mb'] / other['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
