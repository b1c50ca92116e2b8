"""Every setting of a fine-tuning run: one table, read by the CLI, the recipe YAMLs and the trainer.

The paper (ACL 2023, §3.4-3.5) fixes the representation and the score; it leaves the optimisation
unsaid. Where a default comes from is written beside it ("paper", "RetroMAE recipe" - the authors'
released MS MARCO bi-encoder recipe - or "ours"). A recipe YAML holds any of these keys; flags given
on the command line override it; what a run used is written to `finetune.json` in its output folder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.checkpoint import ACTIVATIONS

NEGATIVE_SOURCES = ("bm25", "run", "model", "none")


@dataclass(frozen=True)
class FinetuneSettings:
    # representation ---------------------------------------------------------------------------------
    kind: str = "dupmae"                     # encoder kind: dupmae (both halves), cls (dense), splade (sparse)
    dense_dim: Union[int, str, None] = "half"  # [CLS] projection size: "half" of hidden (paper: 768 -> 384),
    #                                          a number, or None (raw [CLS], no projection)
    activation: str = "none"                 # on the pooled logits; paper: raw logits ("none")
    include_sep: bool = True                 # [SEP] pooled (as inference's default; RetroMAE's code keeps it)
    doc_topk: Optional[int] = 384            # paper: 384 (260 variant); None = all entries
    train_topk: bool = True                  # apply the document top-k in the training score (Eq. 12)
    # score and loss -----------------------------------------------------------------------------------
    temperature: float = 1.0                 # paper: none written (τ = 1)
    sparse_scale: float = 1.0                # weight of the sparse term in the training score; paper: 1
    in_batch_negatives: bool = True          # paper Eq. 13: every passage of the (global) batch is a negative
    cross_device_negatives: bool = True      # RetroMAE recipe: passages gathered across processes
    distill_from: Optional[str] = None       # stage 3 (Eq. 15): teacher scores, a TREC run or JSONL file
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    # data ----------------------------------------------------------------------------------------------
    split: str = "train"
    negatives: str = "bm25"                  # bm25 | run | model | none
    negatives_from: Optional[str] = None     # run: a TREC run file; model: a checkpoint (stage 2)
    negatives_depth: int = 200               # RetroMAE recipe: negatives from the top 200
    group_size: int = 16                     # RetroMAE recipe: 1 positive + 15 negatives
    holdout_queries: int = 0                 # train queries held out as a dev slice (written to the output)
    query_max_length: int = 32               # RetroMAE recipe
    passage_max_length: int = 140            # RetroMAE recipe
    # optimisation (RetroMAE recipe unless noted) ---------------------------------------------------------
    learning_rate: float = 2e-5
    epochs: float = 4.0
    queries_per_device: int = 8              # queries per process per step (each with group_size passages)
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int = -1                      # ≥ 1 stops after that many optimizer steps (smoke runs); -1: epochs
    seed: int = 42
    precision: Optional[str] = None          # fp32 | bf16 | auto (encoding/precision.py); None: the
                                             # device's own (bf16 on a GPU, fp32 on a CPU)
    recompute: str = "none"                  # none | elementwise | layers (recompute.RECOMPUTE); RetroMAE: none
    recompute_first: int = -1                # the mode on the encoder's first N layers only; -1: all (ours)
    heap: str = "glibc"                      # glibc | release (heap.HEAPS): how freed tensor memory goes back
    compile: bool = False                    # the BERT encoder under torch.compile (compiled.py); ours
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    dataloader_workers: int = 0

    def validate(self) -> "FinetuneSettings":
        from dupmae_eval.runtime.heap import HEAPS
        from dupmae_eval.encoding.kinds import encoder_kind
        from dupmae_eval.training.recompute import RECOMPUTE, check_recompute_first

        kind = encoder_kind(self.kind)
        RECOMPUTE.lookup(self.recompute)
        HEAPS.lookup(self.heap)
        check_compile(self.compile, self.recompute)
        check_recompute_first(self.recompute_first)
        if self.activation not in ACTIVATIONS:
            raise DupMAEEvalError(f"activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if self.negatives not in NEGATIVE_SOURCES:
            raise DupMAEEvalError(f"negatives {self.negatives!r}: choose one of {', '.join(NEGATIVE_SOURCES)}")
        if self.negatives in ("run", "model") and not self.negatives_from:
            raise DupMAEEvalError(f"negatives {self.negatives!r} needs negatives_from (a "
                                  f"{'TREC run file' if self.negatives == 'run' else 'checkpoint'})")
        check_ranges(self, FINETUNE_RANGES)
        if self.group_size == 1 and not self.in_batch_negatives:
            raise DupMAEEvalError("--group-size (group_size) 1: give at least 2 without in-batch negatives "
                                  "(no negative at all)")
        if self.group_size == 1 and self.queries_per_device == 1 and not self._gathers_other_processes():
            raise DupMAEEvalError("--group-size (group_size) 1 with --queries-per-device (queries_per_device) 1: "
                                  "a step's only passage is its query's positive, so there is no negative and "
                                  "the loss is 0; give at least 2 of either")
        if self.negatives == "none" and self.group_size > 1 and not self.distill_from:
            raise DupMAEEvalError("negatives none: group_size must be 1 (the positive alone, in-batch negatives), "
                                  "unless distill_from gives the candidates")
        if self.distill_from and self.group_size < 2:
            raise DupMAEEvalError("distillation needs candidates: group_size ≥ 2")
        if not isinstance(self.dense_dim, (int, type(None))) and self.dense_dim != "half":
            raise DupMAEEvalError(f"dense_dim {self.dense_dim!r}: a number, 'half' or none")
        if isinstance(self.dense_dim, int) and self.dense_dim < 1:
            raise DupMAEEvalError(f"--dense-dim (dense_dim) {self.dense_dim}: must be at least 1 (or half, or none)")
        if self.doc_topk is not None and self.doc_topk < 1:
            raise DupMAEEvalError(f"--doc-topk (doc_topk) {self.doc_topk}: must be at least 1 (or none)")
        if self.precision is not None:
            from dupmae_eval.encoding.precision import resolve_precision

            resolve_precision(self.precision)       # refuses an unknown value in one line
        check_max_steps(self.max_steps)
        if not kind.sparse and not kind.dense:
            raise DupMAEEvalError(f"encoder kind {self.kind!r} has no half to train")
        return self

    def _gathers_other_processes(self) -> bool:
        """In-batch negatives come from the other processes' passages too (torchrun with several processes)."""
        import os

        return (self.in_batch_negatives and self.cross_device_negatives
                and int(os.environ.get("WORLD_SIZE", "1")) > 1)

    def projection_size(self, hidden: int) -> Optional[int]:
        """The [CLS] projection's output size for an encoder of this hidden size (None: no projection)."""
        from dupmae_eval.encoding.kinds import encoder_kind

        if not encoder_kind(self.kind).dense or self.dense_dim is None:
            return None
        return hidden // 2 if self.dense_dim == "half" else int(self.dense_dim)

    def encoder_settings(self) -> Dict[str, Any]:
        """What inference needs to read the trained model the way it was trained (recorded in the head
        file; `run` takes these as its defaults for this checkpoint)."""
        return {"kind": self.kind, "activation": self.activation, "include_sep": self.include_sep,
                "doc_topk": self.doc_topk}

    def as_dict(self) -> dict:
        return asdict(self)


FIELDS = {f.name: f for f in fields(FinetuneSettings)}

PRECISION_HELP = ("fp32, bf16 (products in bfloat16, sums in fp32: autocast, on a GPU or a CPU) or auto (bf16 where the device has it in hardware: a CUDA GPU, a CPU with AVX512-BF16 or AMX; the choice is printed); default: the device's own, bf16 on a GPU and fp32 on a CPU")

HEAP_HELP = ("glibc (the C library's default: fastest; freed activations stay resident) or release (tensors "
             "of 64 KiB or more go back to the system when freed: on a CPU the process's memory follows its live "
             "tensors, for about a tenth more step time); not part of what makes two runs the same")

RECOMPUTE_FIRST_HELP = ("apply recompute to the encoder's first N layers only; the rest keep every activation "
                        "(-1: all layers). Each layer kept whole costs memory and saves its recomputation: "
                        "at BERT-base size, 16 x 256 tokens, about 180 MB and a third of a second on a 2-core CPU")

COMPILE_HELP = ("run the BERT encoder under torch.compile: fused kernels for GPU steps, which eager BERT leaves "
                "launch-bound; the first step waits for the compile; with recompute none only; not part of what "
                "makes two runs the same")


# each range: (test of a value, what the refusal says)
ABOVE_0 = (lambda value: value > 0, "must be above 0")
AT_LEAST_0 = (lambda value: value >= 0, "must be at least 0")
AT_LEAST_1 = (lambda value: value >= 1, "must be at least 1")
ROOM_FOR_SPECIAL_TOKENS = (lambda value: value >= 2, "must be at least 2, room for [CLS] and [SEP]")
ROOM_FOR_ONE_TOKEN = (lambda value: value >= 3, "must be at least 3, room for [CLS], one token and [SEP]")
WARMUP_RATIO = (lambda value: 0 <= value < 1, "must be at least 0 and below 1")
# below 1, not up to it: the ratio reaches the Trainer as `warmup_steps`, which reads a value of 1 or more as a
# count of steps, so a ratio of 1 would warm up for one step instead of the whole run
OPEN_UNIT_INTERVAL = (lambda value: 0 < value < 1, "must be between 0 and 1, both excluded")
SEED = (lambda value: 0 <= value < 2 ** 32, f"must be between 0 and {2 ** 32 - 1} (numpy's seeds)")

OPTIMISATION_RANGES = {
    "learning_rate": ABOVE_0, "epochs": ABOVE_0, "gradient_accumulation": AT_LEAST_1,
    "warmup_ratio": WARMUP_RATIO, "weight_decay": AT_LEAST_0, "seed": SEED, "save_steps": AT_LEAST_1,
    "save_total_limit": AT_LEAST_1, "logging_steps": AT_LEAST_1, "dataloader_workers": AT_LEAST_0,
}
"""The numeric settings fine-tuning and pre-training share, and the range each must lie in."""

FINETUNE_RANGES = {
    **OPTIMISATION_RANGES, "temperature": ABOVE_0, "sparse_scale": AT_LEAST_0, "distill_weight": AT_LEAST_0,
    "distill_temperature": ABOVE_0, "negatives_depth": AT_LEAST_1, "group_size": AT_LEAST_1,
    "holdout_queries": AT_LEAST_0, "query_max_length": ROOM_FOR_SPECIAL_TOKENS,
    "passage_max_length": ROOM_FOR_SPECIAL_TOKENS, "queries_per_device": AT_LEAST_1,
}


def check_ranges(settings, ranges) -> None:
    """Each numeric setting in its range, refused in one line naming the flag and the setting. `validate`
    runs before anything is read or written, so a value out of range (a negative learning rate, a warm-up
    ratio of 5) costs one line, not mined negatives, a traceback from the optimizer and a half-made output
    folder that the corrected command then finds in its way. NaN fails every range; infinity is refused."""
    for name, (inside, says) in ranges.items():
        value = getattr(settings, name)
        flag = f"--{name.replace('_', '-')} ({name})"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DupMAEEvalError(f"{flag} {value!r}: not a number")
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if isinstance(value, float) and math.isinf(value):
            raise DupMAEEvalError(f"{flag} {shown}: not a finite number")
        if not inside(value):
            raise DupMAEEvalError(f"{flag} {shown}: {says}")


MAX_STEPS_HELP = "stop after this many optimizer steps (at least 1); -1: the epochs decide"


def check_max_steps(max_steps: int) -> None:
    """-1 or a count: transformers reads 0 as "epochs decide" too and then trains a step or the whole
    recipe, and any negative number as -1, so a typo would silently become a full run."""
    if max_steps != -1 and max_steps < 1:
        raise DupMAEEvalError(f"--max-steps (max_steps) {max_steps}: give -1 (the epochs decide) or a count of "
                              f"at least 1")


def check_compile(compile: bool, recompute: str) -> None:
    """`compile` is measured and tested with `recompute none` only: recomputation inside a compiled graph
    (selective or whole-layer checkpointing under dynamo) is refused rather than run untested."""
    if compile and recompute != "none":
        raise DupMAEEvalError(f"compile runs with recompute none only (got recompute {recompute!r}); "
                              "drop one of the two")


HELP = {
    "kind": "encoder kind trained: dupmae (both halves), cls (dense only), splade (sparse only)",
    "dense_dim": "[CLS] projection size: 'half' of hidden (paper: 768 -> 384), a number, or none",
    "activation": "on the pooled MLM logits (paper: none)",
    "include_sep": "pool [SEP] in the sparse half (true as at inference)",
    "doc_topk": "document sparse entries kept in the score (paper 384; 260 variant; none = all)",
    "train_topk": "apply the document top-k in the training score (Eq. 12)",
    "temperature": "InfoNCE temperature (paper: 1)",
    "sparse_scale": "weight of the sparse term in the training score (paper: 1)",
    "in_batch_negatives": "every passage of the batch is a negative (Eq. 13)",
    "cross_device_negatives": "gather passages across processes (RetroMAE recipe)",
    "distill_from": "teacher scores (TREC run or JSONL qid/docid/score) for Eq. 15",
    "distill_weight": "weight of the distillation loss",
    "distill_temperature": "temperature of both softmaxes in the distillation loss",
    "split": "training split of the dataset",
    "negatives": "hard negatives: bm25, model (stage 2), run, none",
    "negatives_from": "the run file (negatives run) or checkpoint (negatives model)",
    "negatives_depth": "negatives sampled from the top N minus positives (RetroMAE: 200)",
    "group_size": "passages per query: 1 positive + group_size - 1 negatives (RetroMAE: 16)",
    "holdout_queries": "training queries held out as a dev slice (written to holdout.tsv)",
    "query_max_length": "query tokens (RetroMAE: 32)",
    "passage_max_length": "passage tokens (RetroMAE: 140)",
    "learning_rate": "peak learning rate (RetroMAE: 2e-5)",
    "epochs": "epochs (RetroMAE: 4)",
    "queries_per_device": "queries per process per step",
    "gradient_accumulation": "steps accumulated per optimizer step",
    "warmup_ratio": "linear warm-up, fraction of the steps (at least 0, below 1)",
    "weight_decay": "AdamW weight decay",
    "max_steps": MAX_STEPS_HELP,
    "seed": "seed of the sampling, the new projection and the trainer",
    "precision": PRECISION_HELP,
    "recompute": "what the encoder recomputes in the backward instead of keeping: none; elementwise (GELU, "
                 "LayerNorm, sums, dropout between the products: less memory for little compute); layers "
                 "(whole layers: least memory, about a third more encoder compute)",
    "recompute_first": RECOMPUTE_FIRST_HELP,
    "heap": HEAP_HELP,
    "compile": COMPILE_HELP,
    "save_steps": "checkpoint every N steps",
    "save_total_limit": "checkpoints kept",
    "logging_steps": "log every N steps",
    "dataloader_workers": "data loading processes",
}


RENAMED = {"bf16": "it is `precision` now: fp32, bf16 or auto (bf16 where the hardware has it); leave it out "
                   "for the device's own (bf16 on a GPU, fp32 on a CPU), which is what `bf16: auto` meant"}
"""Settings that older recipes name, and what they are now (said in the error)."""

NULLABLE = ("dense_dim", "doc_topk", "negatives_from", "distill_from")


def _coerce(name: str, value: Any, source: str, table: Optional[Mapping[str, Any]] = None,
            nullable: Sequence[str] = NULLABLE) -> Any:
    """A YAML or flag value -> the field's type ('none'/'all' -> None where a field allows it). `table` is
    a settings class's fields (default: fine-tuning's)."""
    default = (table or FIELDS)[name].default
    if isinstance(value, str) and value.lower() in ("none", "null", "all") and (default is None or name in nullable):
        return None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if name == "dense_dim":
            return value if value == "half" else int(value)
        if isinstance(default, int) and not isinstance(default, bool):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return value if value is None else str(value)
    except (TypeError, ValueError):
        raise DupMAEEvalError(f"{source}: {name} = {value!r} is not a valid value") from None


def load_recipe(path: Union[str, Path], table: Optional[Mapping[str, Any]] = None, folder: str = "train",
                nullable: Sequence[str] = NULLABLE) -> Dict[str, Any]:
    """A recipe YAML's settings (unknown keys refused, naming the file and the key's line); a bare name is
    a shipped recipe under configs/<folder>/. `table`: the settings class's fields (default fine-tuning's)."""
    table = table or FIELDS
    import yaml

    path = Path(path)
    if not path.is_file():
        from dupmae_eval.shipped import resource_path

        shipped = resource_path("configs", folder, f"{path.name}" if path.suffix else f"{path.name}.yaml")
        if not shipped.is_file():
            raise DupMAEEvalError(f"recipe {str(path)!r}: no such file, and no shipped recipe of that name")
        path = shipped
    text = path.read_text(encoding="utf-8")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DupMAEEvalError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(values, dict):
        raise DupMAEEvalError(f"{path}:1: a recipe is a mapping of settings")
    settings = {}
    for key, value in values.items():
        if key in ("description", "model", "dataset", "corpus"):
            settings[key] = value
            continue
        if key not in table:
            line = next((n for n, row in enumerate(text.splitlines(), 1) if row.split(":")[0].strip() == key), 1)
            hint = RENAMED.get(key, "")
            raise DupMAEEvalError(f"{path}:{line}: unknown setting {key!r}" + (f"; {hint}" if hint else ""))
        settings[key] = _coerce(key, value, str(path), table, nullable)
    return settings


def make_settings(recipe: Optional[Mapping[str, Any]] = None, **overrides) -> FinetuneSettings:
    """Defaults, then the recipe's values, then explicit overrides (None = not given)."""
    chosen: Dict[str, Any] = {}
    for source, values in (("recipe", recipe or {}), ("option", overrides)):
        for key, value in values.items():
            if key in FIELDS and value is not None:
                chosen[key] = _coerce(key, value, source) if isinstance(value, str) else value
    return replace(FinetuneSettings(), **chosen).validate()
