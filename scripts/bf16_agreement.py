"""Does a bf16 encoding retrieve what the fp32 one does? SciFact test, fp32 against `--precision bf16`.

For each model and reading, the whole of SciFact is encoded twice (fp32, then bf16: products in bfloat16,
sums and the exact score in fp32) and searched with the same retrieval; the two runs are scored with the
same measures and compared query by query (the share of each query's fp32 top 10 that the bf16 run keeps).

    python scripts/bf16_agreement.py [--dataset scifact] [--finetuned DIR ...]

Conditions: splade-tiny as SPLADE (exact sparse score), splade-tiny read as DupMAE (exact dupmae score),
all-MiniLM-L6-v2 (mean pooling + L2, flat inner product) and, given with --finetuned, models fine-tuned
with the CPU recipe read as DupMAE. Encodings are cached as any `run` caches them (set DUPMAE_EVAL_HOME
to keep them apart); prints one row per condition: nDCG@10, R@100 and R@1000 in fp32 and bf16, the
difference in nDCG@10 and the top-10 share kept (speed is scripts/bench.py's to measure).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

MEASURES = ("nDCG@10", "R@100", "R@1000")


def conditions(finetuned: list) -> list:
    from bench import _minilm, _splade_tiny

    rows = [("splade-tiny as SPLADE", _splade_tiny(), "splade", "dupmae", {}),
            ("splade-tiny read as DupMAE", _splade_tiny(), "dupmae", "dupmae", {}),
            ("all-MiniLM-L6-v2, mean + L2", _minilm(), "mean", "dense", {"normalize": True})]
    rows += [(f"fine-tuned ({Path(folder).name}) as DupMAE", str(folder), "dupmae", "dupmae", {})
             for folder in finetuned]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--finetuned", nargs="*", default=[], help="model folders written by `finetune`")
    parser.add_argument("--skip", nargs="*", default=[], help="condition names to leave out (substring match)")
    args = parser.parse_args()
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.encoding.precision import cpu_features
    from dupmae_eval.retrieval.jobs import run_model

    data = resolve(args.dataset)
    print(f"{data.root}, split test; CPU flags {', '.join(cpu_features())}; {os.cpu_count()} cores", flush=True)
    header = ("| condition | nDCG@10 fp32 / bf16 | Δ | R@100 fp32 / bf16 | R@1000 fp32 / bf16 | top 10 kept | "
              "\n|---|---|---|---|---|---|")
    lines = []
    for name, model, encoder, retrieval, overrides in conditions(args.finetuned):
        if any(part in name for part in args.skip):
            continue
        runs, scores = {}, {}
        for precision in ("fp32", "bf16"):
            result = run_model(data, model, encoder, retrieval, None, split="test", precision=precision, **overrides)
            runs[precision] = result.run
            scores[precision] = result.evaluate(MEASURES).aggregate
        fp32, bf16 = runs["fp32"], runs["bf16"]
        kept = sum(len({d for d, _ in bf16.get(q, [])[:10]} & {d for d, _ in fp32[q][:10]}) / 10 for q in fp32) / len(fp32)
        a, b = scores["fp32"], scores["bf16"]
        line = (f"| {name} | {a['nDCG@10']:.4f} / {b['nDCG@10']:.4f} | {b['nDCG@10'] - a['nDCG@10']:+.4f} | "
                f"{a['R@100']:.4f} / {b['R@100']:.4f} | {a['R@1000']:.4f} / {b['R@1000']:.4f} | {kept:.1%} |")
        lines.append(line)
        print(line, flush=True)
    print("\n" + header)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
