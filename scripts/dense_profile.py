"""Where the time of a dense encoding goes: ours, Pyserini's AutoDocumentEncoder and sentence-transformers.

Encodes the same SciFact passages with all-MiniLM-L6-v2 (mean pooling + L2, 256 tokens, batches of 32;
bench.py's case 2) under torch's profiler, each side in its own process with the threads pinned, and sorts
every operator's own time into a few kinds: the linear layers' matrix products, the attention kernel,
LayerNorm, GELU, other elementwise work (residual sums, masks, pooling), copies and casts, the embedding
lookup; what no operator accounts for (tokenizing, Python, the framework between operators) is the rest of
the wall time. The linear layers' rate is also shown as a fraction of the machine's matrix-multiply peak,
measured first: if every side runs its linears at the same rate and they are most of the time, that rate
bounds the comparison, and no route around the library can beat it like for like.

    python scripts/dense_profile.py [--passages 256] [--threads 2] [--sides ours pyserini sentence-transformers ours-bf16]

Prints one table: milliseconds per batch of 32 for each kind and side, each side's share, and the
linears' GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

KINDS = {
    "linear products": ("mkldnn::_linear_pointwise", "aten::addmm", "aten::mm", "aten::matmul"),
    "attention kernel": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                         "aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::softmax"),
    "LayerNorm": ("aten::native_layer_norm",),
    "GELU": ("aten::gelu",),
    "copies and casts": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
    "embedding lookup": ("aten::index_select", "aten::embedding"),
}
ORDER = [*KINDS, "other operators", "outside operators (tokenizer, Python)"]
# all-MiniLM-L6-v2: 6 layers, hidden 384, intermediate 1536; the linears' FLOPs per token
LINEAR_FLOPS_PER_TOKEN = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)


def _kind(name: str) -> str:
    for kind, names in KINDS.items():
        if name in names:
            return kind
    return "other operators"


def child(side: str, passages: int, threads: int) -> dict:
    """One side: warm up, then one profiled pass over the passages; time per kind in ms per batch."""
    from bench import _minilm, _pin_threads, _scifact_texts, _token_count

    _pin_threads(threads)
    from torch.profiler import ProfilerActivity, profile

    titles, texts = _scifact_texts(passages)
    flat = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]
    if side.startswith("ours"):
        from dupmae_eval.encoding.corpus import sorted_batches
        from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings

        encoder = DupMAEDocumentEncoder(_minilm(), EncoderSettings.for_kind("mean", normalize=True),
                                        precision="bf16" if side == "ours-bf16" else None)

        def run():
            for batch in sorted_batches([len(t) for t in flat], 32):
                encoder.encode_texts([flat[i] for i in batch])
    elif side == "pyserini":
        from dupmae_eval import start_jvm

        start_jvm()
        from pyserini.encode import AutoDocumentEncoder

        peer = AutoDocumentEncoder(_minilm(), device="cpu", pooling="mean", l2_norm=True)

        def run():
            for s in range(0, len(texts), 32):
                peer.encode(texts[s:s + 32], titles=titles[s:s + 32], max_length=256)
    else:
        from sentence_transformers import SentenceTransformer

        peer = SentenceTransformer(_minilm(), device="cpu")
        peer.max_seq_length = 256

        def run():
            peer.encode(flat, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    run()
    started = time.perf_counter()
    run()
    plain = time.perf_counter() - started                      # the wall time without the profiler's overhead
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
    spent = {kind: 0.0 for kind in ORDER}
    for event in profiled.key_averages():
        spent[_kind(event.key)] += event.self_cpu_time_total / 1e6
    counted = sum(spent.values())
    spent["outside operators (tokenizer, Python)"] = max(0.0, wall - counted)
    scale = plain / wall                                       # profiled times scaled back to the plain pass
    batches = -(-len(texts) // 32)
    tokens = _token_count(_minilm(), titles, texts, 256)
    return {"side": side, "wall_s": plain, "per_batch_ms": {k: 1000 * v * scale / batches for k, v in spent.items()},
            "linear_gflops": LINEAR_FLOPS_PER_TOKEN * tokens / (spent["linear products"] * scale) / 1e9,
            "passages_per_s": len(texts) / plain}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", nargs="+", default=["ours", "pyserini", "sentence-transformers", "ours-bf16"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child, options.passages, options.threads)))
        return 0
    from bench import cpu_line, matmul_rates

    rates = matmul_rates(options.threads)
    bf16_rate = rates.pop("bf16")
    peak = max(rates.values())
    print(cpu_line())
    print(f"{os.cpu_count()} cores, {options.threads} threads pinned; fp32 matmul peak {peak:.0f} GFLOP/s "
          f"({', '.join(f'{k} {v:.0f}' for k, v in rates.items())}), bf16 {bf16_rate:.0f}; "
          f"{options.passages} SciFact passages, all-MiniLM-L6-v2, 256 tokens, batch 32")
    results = []
    for side in options.sides:
        done = subprocess.run([sys.executable, __file__, "--child", side, "--passages", str(options.passages),
                               "--threads", str(options.threads)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    width = 16
    print("\nms per batch of 32 (share of the side's wall time)")
    print(f"{'':<40}" + "".join(f"{r['side']:>{width + 8}}" for r in results))
    for kind in ORDER:
        cells = []
        for r in results:
            total = sum(r["per_batch_ms"].values())
            cells.append(f"{r['per_batch_ms'][kind]:>{width}.1f} ({r['per_batch_ms'][kind] / total:>4.0%})")
        print(f"{kind:<40}" + "".join(cells))
    print(f"{'wall time per batch':<40}" + "".join(f"{sum(r['per_batch_ms'].values()):>{width}.1f}       "
                                                   for r in results))
    print(f"{'passages/s':<40}" + "".join(f"{r['passages_per_s']:>{width}.1f}       " for r in results))
    print(f"{'linear products, GFLOP/s (of peak)':<40}" + "".join(
        f"{r['linear_gflops']:>{width}.0f} ({r['linear_gflops'] / (bf16_rate if r['side'] == 'ours-bf16' else peak):>4.0%})"
        for r in results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
