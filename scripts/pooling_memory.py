"""Peak memory of DupMAE's OT pooling: our chunked running max vs materialising the logits.

A batch of 32 passages x 512 tokens through a BERT-base-sized MLM head (768 hidden, 30,522
vocabulary). Each method runs in its own subprocess, and its peak resident memory above the
level reached after building the head and the hidden states is reported (VmHWM), so the
two numbers are comparable and do not contaminate each other.

    .venv/bin/python scripts/pooling_memory.py [--batch 32] [--length 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _measure(method: str, batch: int, length: int, save: str) -> dict:
    import torch
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLMPredictionHead

    from dupmae_eval.encoding.checkpoint import pooled_mlm_logits

    torch.manual_seed(0)
    torch.set_num_threads(2)
    head = BertLMPredictionHead(BertConfig(hidden_size=768, vocab_size=30522)).eval()
    hidden = torch.randn(batch, length, 768)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, 0] = False
    mask[batch // 2:, length // 2:] = False  # half the batch is padded to half length
    baseline = _rss_mb()
    started = time.perf_counter()
    with torch.inference_mode():
        if method == "chunked":
            from dupmae_eval.runtime import onednn

            onednn.route_linears(head)                             # as load_model does
            pooled = pooled_mlm_logits(head, hidden, mask)
        else:
            logits = head(hidden)                                  # batch x length x vocabulary at once
            pooled = logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:  # own high-water mark (ru_maxrss carries the parent's over exec)
        peak = int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024
    torch.save(pooled, save)
    return {"method": method, "peak_above_inputs_mb": peak - baseline, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--child", choices=("chunked", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.batch, args.length, args.save)))
        return
    import torch

    results, pooled = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for method in ("chunked", "naive"):
            save = f"{scratch}/{method}.pt"
            done = subprocess.run([sys.executable, __file__, "--child", method, "--batch", str(args.batch),
                                   "--length", str(args.length), "--save", save],
                                  capture_output=True, text=True, check=True)
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            pooled[method] = torch.load(save)
    full_logits_mb = args.batch * args.length * 30522 * 4 / 2**20
    print(f"OT pooling, batch {args.batch} x {args.length} tokens, 768 hidden -> 30,522 vocabulary (fp32, 2 threads)")
    print(f"the full logits tensor alone: {full_logits_mb:,.0f} MB")
    print(f"{'':24}{'chunked (ours)':>16}{'materialised':>16}{'ratio':>8}")
    ours, naive = results["chunked"], results["naive"]
    print(f"{'peak memory above inputs':24}{ours['peak_above_inputs_mb']:>13,.0f} MB{naive['peak_above_inputs_mb']:>13,.0f} MB"
          f"{naive['peak_above_inputs_mb'] / max(ours['peak_above_inputs_mb'], 1):>7.1f}x")
    print(f"{'wall time':24}{ours['seconds']:>14.2f} s{naive['seconds']:>14.2f} s"
          f"{naive['seconds'] / ours['seconds']:>7.2f}x")
    difference = (pooled["chunked"] - pooled["naive"]).abs().max().item()
    print(f"largest difference between the pooled vectors: {difference:.2e}")


if __name__ == "__main__":
    main()
