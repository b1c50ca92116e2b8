"""DupMAE pre-training on transformers' `Trainer` (the same trainer as fine-tuning: torchrun/DDP, bf16 on a
GPU or a CPU, checkpoints with optimizer and RNG states, resume, progress).

Every setting is one row of `PretrainSettings`, read by the CLI (`dupmae-eval pretrain`), the recipe YAMLs
(configs/pretrain/) and the trainer; where a default comes from is written beside it ("paper" = DupMAE,
ACL 2023; "released" = the authors' code, staoxiao/RetroMAE `--pretrain_method dupmae`; "ours").

Output folder:
    pretrain.json              what was asked (model, corpus, settings) and, at the end, "finished"
    corpus/                    the tokenized corpus (tokens.bin, offsets.bin), reused on resume
    checkpoints/checkpoint-N/  Trainer checkpoints (each also a loadable BertForMaskedLM folder)
    config.json, model.safetensors, tokenizer files   the pre-trained BertForMaskedLM (MLM head kept)
    (a run from a shape records the shape's config as "model_config": a changed config file is another run)
    dupmae_decoder.safetensors, dupmae_pretraining.json   the decoder and the objective (not needed to use it)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from dupmae_eval import __version__
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.training.settings import (
    AT_LEAST_0, AT_LEAST_1, COMPILE_HELP, HEAP_HELP, MAX_STEPS_HELP, OPEN_UNIT_INTERVAL,
    OPTIMISATION_RANGES, PRECISION_HELP, RECOMPUTE_FIRST_HELP, ROOM_FOR_ONE_TOKEN, check_compile,
    check_max_steps, check_ranges)

RECORD = "pretrain.json"


@dataclass(frozen=True)
class PretrainSettings:
    # objective ----------------------------------------------------------------------------------------
    objective: str = "dupmae"                # mlm | retromae | bow | dupmae (pretrain_model.OBJECTIVES)
    encoder_mask_ratio: float = 0.3          # paper and released: 30 % of the encoder's input; BERT: 15 %
    decoder_mask_ratio: float = 0.5          # released: each decoder row sees about half the positions
    bow_weight: float = 0.1                  # released code: 0.1; paper Eq. 9: 1
    bow_normalize: bool = True               # released: each distinct token weighted 1/n; paper: plain sum
    # data ----------------------------------------------------------------------------------------------
    max_length: int = 512                    # released stage 1 (Wikipedia + BookCorpus); 150 on MS MARCO
    sequences: str = "truncate"              # truncate | pack (pretrain_data.SEQUENCE_LAYOUTS)
    # optimisation (released stage-1 recipe unless noted) ---------------------------------------------------
    learning_rate: float = 1e-4
    epochs: float = 8.0
    batch_size: int = 32                     # sequences per process per step
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int = -1                      # ≥ 1 stops after that many optimizer steps; -1: the epochs decide
    seed: int = 42
    precision: Optional[str] = None          # fp32 | bf16 | auto (encoding/precision.py); None: the
                                             # device's own (bf16 on a GPU, fp32 on a CPU)
    recompute: str = "none"                  # none | elementwise | layers (recompute.RECOMPUTE); released:
                                             # none (elementwise: exact, 0.85x the memory on a CPU)
    recompute_first: int = -1                # the mode on the encoder's first N layers only; -1: all (ours)
    heap: str = "glibc"                      # glibc | release (heap.HEAPS): how freed tensor memory goes back
    compile: bool = False                    # the BERT encoder under torch.compile (compiled.py); ours
    save_steps: int = 1000
    save_total_limit: int = 2
    logging_steps: int = 10
    dataloader_workers: int = 0

    def validate(self) -> "PretrainSettings":
        from dupmae_eval.runtime.heap import HEAPS
        from dupmae_eval.training.pretrain_data import SEQUENCE_LAYOUTS
        from dupmae_eval.training.pretrain_model import OBJECTIVES
        from dupmae_eval.training.recompute import RECOMPUTE, check_recompute_first

        OBJECTIVES.lookup(self.objective)
        RECOMPUTE.lookup(self.recompute)
        HEAPS.lookup(self.heap)
        check_compile(self.compile, self.recompute)
        check_recompute_first(self.recompute_first)
        SEQUENCE_LAYOUTS.lookup(self.sequences)
        check_ranges(self, PRETRAIN_RANGES)
        if self.precision is not None:
            from dupmae_eval.encoding.precision import resolve_precision

            resolve_precision(self.precision)       # refuses an unknown value in one line
        check_max_steps(self.max_steps)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


FIELDS = {f.name: f for f in fields(PretrainSettings)}

PRETRAIN_RANGES = {
    **OPTIMISATION_RANGES, "encoder_mask_ratio": OPEN_UNIT_INTERVAL, "decoder_mask_ratio": OPEN_UNIT_INTERVAL,
    "bow_weight": AT_LEAST_0, "max_length": ROOM_FOR_ONE_TOKEN, "batch_size": AT_LEAST_1,
}
"""Each numeric pre-training setting and the range it must lie in (`settings.check_ranges`)."""

HELP = {
    "objective": "mlm, retromae (+ [CLS] decoding), bow (+ bag of words), dupmae (all three: paper Eq. 9)",
    "encoder_mask_ratio": "share of the encoder's input masked, whole words, replaced 80/10/10 ([MASK], a random "
                          "token, unchanged) (paper: 0.3; BERT: 0.15, the bert-mlm recipe)",
    "decoder_mask_ratio": "share of positions hidden from each decoder row (released: 0.5)",
    "bow_weight": "weight of the bag-of-words loss (released code 0.1; paper 1)",
    "bow_normalize": "weight each distinct token 1/n (released code) instead of 1 (paper)",
    "max_length": "tokens per sequence with [CLS] and [SEP] (released: 512, then 150 on MS MARCO)",
    "sequences": "truncate (one text per sequence) or pack (texts end to end in max_length windows)",
    "learning_rate": "peak learning rate (released: 1e-4)",
    "epochs": "epochs over the sequences (released: 8, then 20 on MS MARCO)",
    "batch_size": "sequences per process per step (released: 32 at 512 tokens, 128 at 150)",
    "gradient_accumulation": "steps accumulated per optimizer step",
    "warmup_ratio": "linear warm-up, fraction of the steps (at least 0, below 1)",
    "weight_decay": "AdamW weight decay",
    "max_steps": MAX_STEPS_HELP,
    "seed": "seed of the masks, the decoder's initialisation and the trainer",
    "precision": PRECISION_HELP,
    "recompute": "what the encoder recomputes in the backward instead of keeping: none; elementwise (GELU, "
                 "LayerNorm, sums, dropout between the products: less memory, about the same time at BERT-base size); "
                 "layers (whole layers: least memory, about a third more encoder compute)",
    "recompute_first": RECOMPUTE_FIRST_HELP,
    "heap": HEAP_HELP,
    "compile": COMPILE_HELP,
    "save_steps": "checkpoint every N steps",
    "save_total_limit": "checkpoints kept",
    "logging_steps": "log every N steps",
    "dataloader_workers": "data loading processes",
}


def load_pretrain_recipe(path: Union[str, Path]) -> Dict[str, Any]:
    """A pre-training recipe YAML (a path, or a shipped recipe's name under configs/pretrain/)."""
    from dupmae_eval.training.settings import load_recipe

    return load_recipe(path, FIELDS, "pretrain", nullable=())


def make_pretrain_settings(recipe: Optional[Mapping[str, Any]] = None, **overrides) -> PretrainSettings:
    """Defaults, then the recipe's values, then explicit overrides (None = not given)."""
    from dupmae_eval.training.settings import _coerce

    chosen: Dict[str, Any] = {}
    for source, values in (("recipe", recipe or {}), ("option", overrides)):
        for key, value in values.items():
            if key in FIELDS and value is not None:
                chosen[key] = _coerce(key, value, source, FIELDS, ()) if isinstance(value, str) else value
    return replace(PretrainSettings(), **chosen).validate()


def pretrain(model: str, corpus: str, output: Path, settings: PretrainSettings, callbacks=(),
             command: Optional[str] = None) -> Path:
    """Pre-train `model` (hub name or folder, a BertForMaskedLM; or a shape, `shapes.shape_source`, built
    with random weights from the seed) on `corpus` (dataset name or folder, or a text file) with the
    settings' objective; write the model to `output`. The same call again resumes from the last checkpoint.
    `callbacks`: extra transformers TrainerCallbacks (the GPU script's loss curve and exports). The folder
    gets its model card (README.md, `cards.py`) when the run finishes; `command`: the command line it records."""
    from dupmae_eval.training.pretrain_data import PretrainCollator, PretrainDataset, TokenStore
    from dupmae_eval.training.pretrain_model import OBJECTIVES, DupMAEForPretraining
    from dupmae_eval.training.finetune import (_barrier, _distributed, check_data_source, claim_output,
                                               input_contents, train_and_save)

    from dupmae_eval.training.shapes import shape_source

    settings.validate()
    output = Path(output)
    rank, world = _distributed()
    record = {"tool": f"dupmae-eval {__version__}", "model": model, "data": corpus, "settings": settings.as_dict()}
    shape = shape_source(model)            # refused here, before the output folder is made, when unknown
    if shape is not None:                  # a config file may change between calls: its content is the model
        record["model_config"] = shape.config
    check_data_source(corpus, "--corpus", text_files=True)
    net = DupMAEForPretraining.from_checkpoint(model, settings.objective, settings.bow_weight,
                                               settings.bow_normalize, settings.seed,   # loadable, with an MLM,
                                               lengths={"max_length": settings.max_length})   # long enough
    if rank == 0:                    # the one rank that judges the folder (`claim_output`) hashes the inputs
        record["content"] = input_contents(None if shape is not None else model, corpus)
    if claim_output(output, record, RECORD, "pre-training", asdict(PretrainSettings())):   # head: before the record
        if rank == 0 and not (output / "README.md").is_file():   # stopped between its record and its card
            from dupmae_eval.training.cards import write_training_card

            write_training_card(output, "pretrain", command)
        return output
    net.recompute_encoder(settings.recompute, settings.recompute_first)
    if world > 1 and rank != 0:
        _barrier()                        # rank 0 tokenizes; the others then read its store
    store = TokenStore.build(corpus, net.tokenizer, output / "corpus")
    if world > 1 and rank == 0:
        _barrier()
    decoder_ratio = settings.decoder_mask_ratio if OBJECTIVES.lookup(settings.objective).decoder else None
    dataset = PretrainDataset(store, net.tokenizer, settings.max_length, settings.sequences,
                              settings.encoder_mask_ratio, decoder_ratio, settings.seed)
    if len(dataset) < settings.batch_size * world:
        if rank == 0:     # the store this refused start made: without it the corrected command takes the folder
            import shutil

            shutil.rmtree(output / "corpus", ignore_errors=True)
        raise DupMAEEvalError(f"--corpus {corpus}: {len(dataset)} sequences cannot fill one step of {world} "
                              f"process(es) x --batch-size (batch_size) {settings.batch_size}")
    train_and_save(net, dataset, PretrainCollator(net.tokenizer.pad_token_id), output, settings,
                   settings.batch_size, RECORD, callbacks=callbacks, sequences=len(dataset),
                   corpus_tokens=int(store.offsets[-1]))
    if rank == 0:
        from dupmae_eval.training.cards import write_training_card

        write_training_card(output, "pretrain", command)
    return output
