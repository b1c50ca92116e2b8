"""A DupMAE fine-tuning step in bf16 against fp32 on this CPU: time per step and the loss curves side by side.

What `finetune --precision bf16` runs: the Trainer's bf16 autocast around the toolkit's own training model
(`DupMAEForTraining`: the paper's score, Eq. 12, InfoNCE over it, the memory-bounded OT pooling), AdamW,
over the same sequence of batches from the same weights. Two cases:

- splade-tiny, the CPU recipe `splade-tiny-scifact`'s batch: 8 queries x 8 passages, 64 / 256 tokens;
- BERT-base shape with random weights (`shape:bert-base`), 8 queries x (1 + 7) passages, 32 / 140 tokens
  (RetroMAE's recipe).

Texts are SciFact's (bundled): each query with its judged passage and 7 (or 7 + 1) others. Each precision runs
in its own process, one after the other. Printed per case: the median step time after two warm-up steps,
bf16's speed-up over fp32, and the loss at every step for both.

    python scripts/train_precision_bench.py               # both cases, 12 steps each (about 15 min on 2 cores)
    python scripts/train_precision_bench.py --quick       # splade-tiny only, 4 steps (the smoke test's size)
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "splade-tiny": dict(model="package:cognition/model", recipe="splade-tiny-scifact", queries=8, group=8),
    "bert-base": dict(model="shape:bert-base", recipe=None, queries=8, group=8, query_max_length=32,
                      passage_max_length=140, doc_topk=384, dense_dim="half", activation="log1p_relu"),
}


def _texts(queries: int, group: int, steps: int, seed: int = 0):
    """`steps` batches of (query, [its judged passage + others]) from the bundled SciFact."""
    from dupmae_eval.data.datasets import BUNDLED_DATA

    root = BUNDLED_DATA / "scifact"
    with gzip.open(root / "corpus.jsonl.gz", "rt") as handle:
        corpus = {record["_id"]: f"{record.get('title', '')} {record['text']}".strip()
                  for record in map(json.loads, handle)}
    with gzip.open(root / "queries.jsonl.gz", "rt") as handle:
        texts = {record["_id"]: record["text"] for record in map(json.loads, handle)}
    judged = {}
    for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, docid, _ = line.split("\t")
        judged.setdefault(qid, docid)
    chooser = random.Random(seed)
    ids = sorted(corpus)
    pairs = [(texts[qid], corpus[docid]) for qid, docid in judged.items() if qid in texts]
    chooser.shuffle(pairs)
    batches = []
    for step in range(steps):
        chosen = pairs[step * queries:(step + 1) * queries]
        batches.append([{"query": query, "passages": [positive] + [corpus[d] for d in chooser.sample(ids, group - 1)]}
                        for query, positive in chosen])
    return batches


def _source(model: str, scratch: Path) -> str:
    """A model reference: as it is, or for `shape:NAME` a folder with that shape's random weights."""
    if not model.startswith("shape:"):
        return model
    from dupmae_eval.training.shapes import random_masked_lm, shape_source, shape_tokenizer

    shape = shape_source(model)
    folder = scratch / model.split(":", 1)[1]
    random_masked_lm(shape.config, seed=0).save_pretrained(folder)
    shape_tokenizer().save_pretrained(folder)
    return str(folder)


def child(case: str, precision: str, steps: int, scratch: Path) -> dict:
    import torch

    from dupmae_eval.training.finetune_data import GroupCollator
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import load_recipe, make_settings

    spec = dict(CASES[case])
    model, recipe, queries, group = spec.pop("model"), spec.pop("recipe"), spec.pop("queries"), spec.pop("group")
    settings = make_settings(load_recipe(recipe) if recipe else {}, group_size=group, queries_per_device=queries,
                             **spec)
    torch.manual_seed(0)
    net = DupMAEForTraining.from_checkpoint(_source(model, scratch), settings)
    net.train()
    collate = GroupCollator(net.tokenizer, settings.query_max_length, settings.passage_max_length)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    seconds, losses = [], []
    for batch in map(collate, _texts(queries, group, steps)):
        started = time.perf_counter()
        with autocast:
            loss = net(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
        losses.append(loss.item())
    return {"seconds": seconds, "losses": losses, "threads": torch.get_num_threads()}


def _cpu() -> str:
    from dupmae_eval.encoding.precision import cpu_features

    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown CPU")
    return f"{name}; flags: {', '.join(cpu_features()) or 'none of avx2/avx512f/avx512_bf16/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cases", default="splade-tiny,bert-base")
    parser.add_argument("--quick", action="store_true", help="splade-tiny only, 4 steps")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "PRECISION", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, precision, out = args.child
        Path(out).write_text(json.dumps(child(case, precision, args.steps, Path(out).parent)))
        return
    steps, cases = (4, ["splade-tiny"]) if args.quick else (args.steps, args.cases.split(","))
    import torch

    print(f"fine-tuning step, fp32 vs bf16 autocast; {_cpu()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            results = {}
            for precision in ("fp32", "bf16"):
                out = Path(scratch) / f"{case}-{precision}.json"
                subprocess.run([sys.executable, __file__, "--steps", str(steps), "--child", case, precision,
                                str(out)], check=True)
                results[precision] = json.loads(out.read_text())
            timed = {p: statistics.median(r["seconds"][2:] or r["seconds"]) for p, r in results.items()}
            spec = CASES[case]
            print(f"\n{case}: {spec['queries']} queries x {spec['group']} passages, {steps} steps "
                  f"(median after 2 warm-up steps)")
            print(f"  fp32 {timed['fp32']:.3f} s/step   bf16 {timed['bf16']:.3f} s/step   "
                  f"bf16 speed-up {timed['fp32'] / timed['bf16']:.2f}x")
            print("  step   loss fp32   loss bf16")
            for step, (a, b) in enumerate(zip(results["fp32"]["losses"], results["bf16"]["losses"]), start=1):
                print(f"  {step:4d}   {a:9.4f}   {b:9.4f}")


if __name__ == "__main__":
    main()
