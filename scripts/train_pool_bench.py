"""A DupMAE fine-tuning step with the memory-bounded OT max-pool vs autograd through the full logits.

The OT pooling's cost in fine-tuning: BERT-base size with random weights (12 x 768, 30,522 vocabulary), a batch of
8 queries x (1 + 7) passages at 32 / 140 tokens, the paper's score (Eq. 12: projected [CLS] dot
product + the sparse dot product over the document's top-384 entries) and InfoNCE over in-batch
passages. Each side runs in its own subprocess, so its peak memory (VmHWM) is its own:

- step: one forward + backward of the whole step (median of the timed steps after a warm-up), the
  process's peak memory, and the loss (both sides must agree);
- pooling: the OT pooling alone (forward + backward from fixed hidden states of the same batch), its
  peak memory above what the process held before it — the figure the target is about (at most 1/4).

    python scripts/train_pool_bench.py            # BERT-base size, about 5 minutes on 2 cores
    python scripts/train_pool_bench.py --quick    # a 2-layer, 128-wide BERT: the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIDES = ("bounded", "full-logits")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])


def _model(quick: bool):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    if quick:
        config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=512)
    else:
        config = BertConfig(vocab_size=30522)        # bert-base-uncased's shape
    model = BertForMaskedLM(config)
    model.eval()                                     # no dropout: both sides compute the same function
    projection = torch.nn.Linear(config.hidden_size, config.hidden_size // 2)
    return model, projection


def _batch(queries: int, group: int, query_length: int, passage_length: int):
    import torch

    generator = torch.Generator().manual_seed(1)

    def texts(count, length):
        ids = torch.randint(1000, 30000, (count, length), generator=generator)
        ids[:, 0], ids[:, -1] = 101, 102             # [CLS] ... [SEP]
        return ids, torch.ones_like(ids)

    return texts(queries, query_length), texts(queries * group, passage_length)


def _pool(side: str, head, hidden, mask):
    if side == "bounded":
        from dupmae_eval.training.ot_pool import ot_max_pool

        return ot_max_pool(head, hidden, mask)
    logits = head(hidden)                            # B x L x V: what the bounded route never holds
    return logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


def _encode(side, model, projection, ids, attention):
    hidden = model.bert(input_ids=ids, attention_mask=attention).last_hidden_state
    mask = attention.bool().clone()
    mask[:, 0] = False                               # ordinary tokens: [CLS] out, [SEP] in (inference's default)
    return projection(hidden[:, 0]), _pool(side, model.cls.predictions, hidden, mask)


def _loss(side, model, projection, batch, topk: int):
    """InfoNCE (tau = 1) over Eq. 12 with in-batch passages: q_i's positive is passage i * group."""
    import torch

    (q_ids, q_att), (p_ids, p_att) = batch
    q_dense, q_sparse = _encode(side, model, projection, q_ids, q_att)
    p_dense, p_sparse = _encode(side, model, projection, p_ids, p_att)
    kept = torch.zeros_like(p_sparse).scatter(1, p_sparse.topk(topk, dim=1).indices, 1.0)
    scores = q_dense @ p_dense.T + q_sparse @ (p_sparse * kept).T
    group = p_ids.shape[0] // q_ids.shape[0]
    labels = torch.arange(q_ids.shape[0]) * group
    return torch.nn.functional.cross_entropy(scores, labels)


def child_step(side: str, quick: bool, steps: int) -> dict:
    import torch

    model, projection = _model(quick)
    batch = _batch(8, 8, 32, 140)
    times, losses = [], []
    for step in range(steps + 1):
        model.zero_grad(), projection.zero_grad()
        started = time.perf_counter()
        loss = _loss(side, model, projection, batch, 384)
        loss.backward()
        elapsed = time.perf_counter() - started
        if step:                                     # the first step warms up
            times.append(elapsed)
        losses.append(float(loss))
    grad = model.bert.encoder.layer[0].attention.self.query.weight.grad
    return {"step_s": statistics.median(times), "peak_mb": _status_kb("VmHWM") / 1024, "loss": losses[0],
            "grad_norm": float(grad.norm()), "threads": torch.get_num_threads()}


def child_pool(side: str, quick: bool) -> dict:
    import torch

    model, _ = _model(quick)
    head = model.cls.predictions
    hidden = torch.randn(64, 140, model.config.hidden_size, generator=torch.Generator().manual_seed(3),
                         requires_grad=True)
    mask = torch.ones(64, 140, dtype=torch.bool)
    mask[:, 0] = False
    upstream = torch.randn(64, model.config.vocab_size, generator=torch.Generator().manual_seed(4))
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    (_pool(side, head, hidden, mask) * upstream).sum().backward()
    return {"pool_s": time.perf_counter() - started, "pool_mb": (_status_kb("VmHWM") - before) / 1024,
            "hidden_grad_norm": float(hidden.grad.norm())}


def _run_child(mode: str, side: str, quick: bool, steps: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--side", side, "--steps", str(steps)]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 128-wide BERT (same vocabulary and batch)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--child", choices=("step", "pool"), help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result = child_step(args.side, args.quick, args.steps) if args.child == "step" else \
            child_pool(args.side, args.quick)
        print(json.dumps(result))
        return
    size = "2 x 128 (quick)" if args.quick else "12 x 768 (BERT-base)"
    print(f"DupMAE training step: BERT {size}, vocabulary 30,522, 8 queries x (1 + 7) passages, 32 / 140 tokens, "
          f"Eq. 12 with document top-384, InfoNCE; {os.cpu_count()} cores")
    results = {side: {**_run_child("step", side, args.quick, args.steps), **_run_child("pool", side, args.quick, 0)}
               for side in SIDES}
    ours, peer = results["bounded"], results["full-logits"]
    print(f"{'':<30}{'bounded':>14}{'full logits':>14}{'ratio':>9}")
    for label, key, unit in (("step time (median)", "step_s", "s"), ("step peak memory", "peak_mb", "MB"),
                             ("pooling fwd+bwd time", "pool_s", "s"), ("pooling peak memory", "pool_mb", "MB")):
        print(f"{label:<30}{ours[key]:>12.2f}{unit:>2}{peer[key]:>12.2f}{unit:>2}{ours[key] / peer[key]:>9.3f}")
    print(f"loss: {ours['loss']:.6f} vs {peer['loss']:.6f} (difference {abs(ours['loss'] - peer['loss']):.2e}); "
          f"layer-0 query-weight gradient norm {ours['grad_norm']:.6f} vs {peer['grad_norm']:.6f}")
    memory_ok = ours["pool_mb"] <= peer["pool_mb"] / 4
    time_ok = ours["step_s"] <= peer["step_s"]
    print(f"target: pooling peak memory <= 1/4 of full logits: {'met' if memory_ok else 'NOT met'}; "
          f"step time not slower: {'met' if time_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
