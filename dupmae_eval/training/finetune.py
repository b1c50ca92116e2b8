"""Fine-tuning on transformers' `Trainer`.

Why `Trainer` and not sentence-transformers' trainer: the model is not a SentenceTransformer (two
halves, one read through the MLM head with a custom max-pool, a loss over a score that is not a
cosine), and `Trainer` gives what a long run needs with nothing hand-written: torchrun/DDP across
processes and nodes (gloo on CPUs, nccl on GPUs), gradient accumulation, bf16, checkpoints holding
optimizer, scheduler and RNG states, resume, and a progress bar.

What this module adds to it: the loss (`DupMAEForTraining.forward`), checkpoints written as the
toolkit's own model folders (a BertForMaskedLM + head file: every `checkpoint-N` loads in `run`),
the epoch handed to the dataset (negatives drawn per epoch from the seed), and an output folder
that refuses to mix two different runs and resumes the same run from its last checkpoint.

Output folder:
    finetune.json              what was asked (model, data, settings) and, at the end, "finished"
    negatives/                 mined rankings (reused on resume)
    holdout.tsv                the held-out dev slice's judgments (BEIR qrels), when asked
    checkpoints/checkpoint-N/  Trainer checkpoints (each also a loadable model folder)
    config.json, model.safetensors, tokenizer files, dupmae_head.safetensors, dupmae_training.json
                               the fine-tuned model (written last)
    README.md                  its Hugging Face model card (`cards.py`), written when the run finishes
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Optional

from dupmae_eval import __version__
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.training.settings import FinetuneSettings

RECORD = "finetune.json"
LOSS_FILE = "dupmae_loss.json"     # in each checkpoint: the loss summed over the steps up to it


def _trainer_class():
    from transformers import Trainer

    class DupMAETrainer(Trainer):
        """Trainer whose loss is the model's, and whose checkpoints are the toolkit's model folders."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

        def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
            if self.args.should_save:
                self.accelerator.unwrap_model(self.model).save(Path(output_dir or self.args.output_dir))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
            (model or self.model).load_weights(Path(resume_from_checkpoint))

        def _save_checkpoint(self, model, trial, *more, **options) -> None:
            """First the summed loss of every step so far (`LOSS_FILE`; written before trainer_state.json, so
            a whole checkpoint has it), then the Trainer's checkpoint: a resumed run's training loss is then
            the mean over all its steps, as an uninterrupted run's is, not over the steps after the resume.
            The sum so far is the Trainer's own bookkeeping (`_total_loss_scalar`, drained at each logging
            step, and `_tr_loss`, what is not drained yet); a transformers without it writes no file, and a
            run resumed from such a checkpoint records the Trainer's figure, as before."""
            drained, pending = getattr(self, "_total_loss_scalar", None), getattr(self, "_tr_loss", None)
            if self.args.should_save and self.loss_before is not _NOT_RECORDED and drained is not None \
                    and pending is not None:
                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                folder.mkdir(parents=True, exist_ok=True)
                total = self.loss_before["loss_sum"] + float(drained) + float(pending.item())
                (folder / LOSS_FILE).write_text(json.dumps({"step": self.state.global_step, "loss_sum": total}))
            super()._save_checkpoint(model, trial, *more, **options)

    return DupMAETrainer


def _epoch_callback(dataset):
    from transformers import TrainerCallback

    class EpochToDataset(TrainerCallback):
        """Tell the dataset which epoch it serves (state.epoch is fractional inside an epoch, also on resume)."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.epoch = int(math.floor((state.epoch or 0.0) + 1e-9))

    return EpochToDataset()


def _schedule_callback():
    from transformers import TrainerCallback

    class ScheduleForTheNewCount(TrainerCallback):
        """A finished run continued to a larger max_steps: its checkpoint's optimizer holds the learning rate
        its own schedule ended on (0, at the end of a linear decay), which the first continued step would
        use before the scheduler moves. Set each group's rate from the schedule of the new count at the
        checkpoint's step instead, as a run asked for the new count from the start would have it there."""

        def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            lambdas = getattr(lr_scheduler, "lr_lambdas", None)
            if optimizer is None or lambdas is None:
                return
            for group, base, factor in zip(optimizer.param_groups, lr_scheduler.base_lrs, lambdas):
                group["lr"] = base * factor(lr_scheduler.last_epoch)

    return ScheduleForTheNewCount()


_ABSENT = object()    # a setting the earlier record does not name (and no default fills)
PROCESS_SETTINGS = ("heap", "compile")   # how this process runs, not what it trains: may differ on resume


def _check_output(output: Path, record: dict, name: str = RECORD, what: str = "fine-tuning",
                  defaults: Optional[Mapping[str, Any]] = None) -> bool:
    """True when the folder holds this very run (resume, or a finished run continued to a larger
    max_steps); refuse a folder holding anything else (see `_judge_output`)."""
    return _judge_output(output, record, name, what, defaults)[0] in ("resume", "extend")


def _judge_output(output: Path, record: dict, name: str = RECORD, what: str = "fine-tuning",
                  defaults: Optional[Mapping[str, Any]] = None) -> tuple:
    """(verdict, earlier record) for an output folder: "new" (absent or empty), "resume" (this very run),
    "extend" (this run, finished, asked for more steps: only max_steps raised), "takeover" (another run
    that failed before its first checkpoint and left nothing but its record: a corrected command must not
    be locked out by the mistake it corrects); anything else is refused. `record` has the keys (model, data,
    settings) that make two runs the same; `name` is the record's file. `defaults` are the settings'
    defaults: a setting added since the folder's record was written is taken to have run at its default
    (the only behaviour there was), so a newer version resumes an older run unless the run asks for
    something else."""
    if output.exists() and not output.is_dir():
        raise DupMAEEvalError(f"{output}: is a file, not a folder; give --output an empty or new folder")
    path = output / name
    if path.is_file():
        earlier = json.loads(path.read_text())
        settings = {**(defaults or {}), **(earlier.get("settings") or {})}
        changed = [k for k in ("model", "data", "model_config") if earlier.get(k) != record.get(k)]
        changed += [f"settings.{k}" for k, v in record["settings"].items()
                    if k not in PROCESS_SETTINGS and settings.get(k, _ABSENT) != v]
        changed += [f"settings.{k} (no longer a setting)" for k in settings if k not in record["settings"]]
        changed += _changed_content(earlier.get("content"), record.get("content"))
        if not changed:
            return "resume", earlier
        old_steps, new_steps = settings.get("max_steps", -1), record["settings"].get("max_steps", -1)
        if changed == ["settings.max_steps"] and earlier.get("finished") and 0 < old_steps < new_steps:
            return "extend", earlier
        if not earlier.get("finished") and _holds_only(output, name):
            return "takeover", earlier
        raise DupMAEEvalError(f"{output}: already holds a different {what} run ({', '.join(changed[:4])} "
                              f"differ); choose another --output")
    if output.exists() and any(output.iterdir()):
        raise DupMAEEvalError(f"{output}: exists and is not a {what} output folder (no {name}); "
                              f"choose an empty or new folder")
    return "new", None


def _changed_content(earlier: Optional[dict], now: Optional[dict]) -> list:
    """Which of the inputs' contents (`input_contents`) differ from the record's. A record without them
    was written by a version that kept only names, so nothing says its model and data are today's: it
    counts as different (refused), never as the same."""
    if now is None:
        return []
    if earlier is None:
        return ["content (not recorded: written by an older version)"]
    return [f"content of the {k}" for k in sorted(set(earlier) | set(now)) if earlier.get(k) != now.get(k)]


def input_contents(model: Optional[str], data: str, split: Optional[str] = None,
                   files: Mapping[str, Optional[str]] = {}) -> dict:
    """Digests of what a training run reads, for its record: a run resumes, extends or counts as finished
    only when these are what they were. The names alone are not enough: a model folder's weights, a hub
    name's revision or a dataset folder's files can change under the same name, and a resumed run would
    then go on from checkpoints made of the old ones and mix the two.
    `model`: a checkpoint (folder, hub name or package:...) hashed as encodings hash it
    (`folder_fingerprint`), or None for a shape (its config is in the record); `data`: a file's SHA-256,
    or a dataset's corpus digest and, for a `split`, digests of its queries and judgments (what
    fine-tuning reads; a registry dataset not yet downloaded is downloaded here); `files`: other inputs
    by setting name (a run file's SHA-256, or a checkpoint folder's fingerprint), None where not given."""
    from dupmae_eval import cache
    from dupmae_eval.encoding.checkpoint import resolve_checkpoint
    from dupmae_eval.encoding.corpus import folder_fingerprint

    def identity(source: str) -> str:
        path = Path(source).expanduser()
        if path.is_file():
            return cache.file_digest(path)
        return folder_fingerprint(resolve_checkpoint(source)[0])

    contents = {}
    if model is not None:
        contents["model"] = identity(model)
    path = Path(data).expanduser()
    if path.is_file():
        contents["data"] = cache.file_digest(path)
    else:
        from dupmae_eval.data.datasets import resolve

        dataset = resolve(data)
        contents["corpus"] = dataset.corpus_fingerprint()
        if split is not None:
            contents["queries"] = cache.settings_key(dataset.queries(split))
            contents["judgments"] = cache.settings_key(dataset.qrels(split))
    for name, source in files.items():
        if source:
            contents[name] = identity(source)
    return contents


def _holds_only(output: Path, name: str) -> bool:
    """The folder holds the record `name` and otherwise only empty folders: no checkpoint, no tokenized
    corpus, no mined negatives — nothing a run with other settings could wrongly reuse."""
    return all(entry == output / name or entry.is_dir() for entry in output.rglob("*"))


def _distributed() -> tuple:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _init_processes(world: int) -> None:
    """Under torchrun, join the process group before anything else, so that rank 0 alone can mine the
    negatives while the others wait (the Trainer then uses this group)."""
    import torch
    import torch.distributed as dist

    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def claim_output(output: Path, record: dict, name: str, what: str,
                 defaults: Optional[Mapping[str, Any]] = None) -> bool:
    """Rank 0 alone judges the output folder (a new folder, or this very run's to resume) and writes the
    run's record; under torchrun the other ranks wait for it at a barrier. True when this very run has
    already finished there: the caller then returns without training (a zero-step "resume" would
    overwrite the record's loss with 0)."""
    from dupmae_eval.files import atomic_output
    from dupmae_eval.provenance import provenance

    rank, world = _distributed()
    _init_processes(world)
    if rank == 0:
        verdict, earlier = _judge_output(output, record, name, what, defaults)
        if verdict == "takeover":
            print(f"{output}: the {what} run recorded here failed before its first checkpoint; this command "
                  f"takes the folder over", flush=True)
        if verdict == "extend":
            old, new = earlier["settings"]["max_steps"], record["settings"]["max_steps"]
            print(f"{output}: continuing the finished {what} run from its last checkpoint (step "
                  f"{earlier.get('steps', old)}) to max_steps {new}", flush=True)
            (output / "README.md").unlink(missing_ok=True)   # the card describes the old weights; remade at the end
            with atomic_output(output / name) as handle:
                json.dump({**earlier, "settings": record["settings"], "finished": False,
                           "extended": [*earlier.get("extended", []), {"from_max_steps": old, "to_max_steps": new}]},
                          handle, indent=2)
        elif verdict != "resume":
            output.mkdir(parents=True, exist_ok=True)
            with atomic_output(output / name) as handle:
                json.dump({**record, **provenance(), "finished": False}, handle, indent=2)
    if world > 1:
        _barrier()
    finished = json.loads((output / name).read_text()).get("finished", False)
    if finished and rank == 0:
        print(f"{output}: this {what} run has already finished; nothing to do", flush=True)
    return finished


def _trains_in_bf16(precision, on_gpu: bool) -> bool:
    """The Trainer's autocast: `encoding/precision.py`'s choice for this device (the device's own when not
    given: bf16 on a GPU that supports it, fp32 on a CPU); `auto` prints what it chose, once."""
    import torch

    from dupmae_eval.encoding.precision import describe_auto, resolve_precision

    device = "cuda" if on_gpu else "cpu"
    if precision == "auto" and os.environ.get("RANK", "0") == "0":
        print(f"dupmae-eval: {describe_auto(device)}", file=sys.stderr, flush=True)
    if precision is None and on_gpu:
        return torch.cuda.is_bf16_supported()
    return resolve_precision(precision, device) == "bf16"


def last_complete_checkpoint(folder: Path) -> Optional[str]:
    """The newest checkpoint the Trainer finished writing, or None. The Trainer writes a checkpoint's files one
    after another, its trainer_state.json last, straight into checkpoint-N: a run stopped while writing one
    (killed, or a full disk) leaves a folder that cannot be resumed from. Such folders are removed, saying so,
    and the run resumes from the one before (transformers' own get_last_checkpoint would pick the broken one).
    Only rank 0 removes; the others wait for it at a barrier under torchrun."""
    import shutil
    import sys

    if not folder.is_dir():
        return None
    rank, world = _distributed()
    found = sorted((path for path in folder.glob("checkpoint-*") if path.is_dir() and path.name[11:].isdigit()),
                   key=lambda path: int(path.name[11:]), reverse=True)
    chosen = None
    for checkpoint in found:
        if _checkpoint_is_whole(checkpoint):
            chosen = checkpoint
            break
        if rank == 0:
            print(f"dupmae-eval: {checkpoint} was not finished (the run stopped while writing it); removed",
                  file=sys.stderr, flush=True)
            shutil.rmtree(checkpoint)
    if world > 1:
        _barrier()
    return str(chosen) if chosen is not None else None


def _checkpoint_is_whole(checkpoint: Path) -> bool:
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return False
    try:
        from safetensors import safe_open

        for path in weights:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
    except Exception:                           # safetensors raises its own types for a cut file
        return False
    return True


def train_and_save(net, dataset, collator, output: Path, settings, per_device_batch: int, record_name: str,
                   callbacks=(), **summary) -> None:
    """Run transformers' Trainer over `dataset` (resuming from the last checkpoint under output/checkpoints),
    then, on rank 0, save the model to `output` and mark the run's record finished, with `summary`, the
    step count, the loss and the log. `settings` has the optimisation fields fine-tuning and pre-training
    share (learning_rate, epochs, warmup_ratio, ..., precision, dataloader_workers)."""
    import torch
    from transformers import TrainingArguments

    from dupmae_eval.files import atomic_output
    from dupmae_eval.runtime.heap import use_heap

    use_heap(settings.heap)                     # before the model's first step allocates its activations
    if settings.compile:
        from dupmae_eval.runtime.compiled import compile_encoder

        compile_encoder(net.masked_lm.bert)     # in place: checkpoints keep the eager module's names
    _, world = _distributed()
    on_gpu = torch.cuda.is_available()
    bf16 = _trains_in_bf16(settings.precision, on_gpu)
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"), per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=settings.gradient_accumulation, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay, lr_scheduler_type="linear", seed=settings.seed,
        data_seed=settings.seed, bf16=bf16, use_cpu=not on_gpu, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps, report_to=[], remove_unused_columns=False,
        dataloader_num_workers=settings.dataloader_workers, dataloader_drop_last=world > 1,
        ddp_backend=("nccl" if on_gpu else "gloo") if world > 1 else None, ddp_find_unused_parameters=False,
        label_names=[], disable_tqdm=False)
    extended = "extended" in json.loads((output / record_name).read_text())
    trainer = _trainer_class()(model=net, args=args, train_dataset=dataset, data_collator=collator,
                               callbacks=[_epoch_callback(dataset), *([_schedule_callback()] if extended else []),
                                          *callbacks])
    last = last_complete_checkpoint(Path(args.output_dir))
    trainer.loss_before = _loss_before(last)
    result = trainer.train(resume_from_checkpoint=last)
    if trainer.is_world_process_zero():
        net.save(output)
        finished = json.loads((output / record_name).read_text())
        before, steps = trainer.loss_before, trainer.state.global_step
        loss = result.training_loss if before is _NOT_RECORDED else \
            (before["loss_sum"] + result.training_loss * (steps - before["step"])) / max(steps, 1)
        finished.update(finished=True, steps=steps, **summary, training_loss=loss,
                        log=[entry for entry in trainer.state.log_history if "loss" in entry])
        with atomic_output(output / record_name) as handle:
            json.dump(finished, handle, indent=2)


_NOT_RECORDED = {"step": 0, "loss_sum": 0.0}     # a checkpoint of an older version: the Trainer's figure


def _loss_before(checkpoint: Optional[str]) -> dict:
    """The loss summed over the steps up to the checkpoint a run resumes from (none: 0 over 0 steps). The
    Trainer's `training_loss` averages only the steps a call runs, so a resumed run adds this to be the mean
    over all its steps, as a run never stopped is."""
    if checkpoint is None:
        return {"step": 0, "loss_sum": 0.0}
    try:
        return json.loads((Path(checkpoint) / LOSS_FILE).read_text())
    except (OSError, ValueError):
        return _NOT_RECORDED


def check_data_source(source: str, flag: str, text_files: bool) -> None:
    """What can be checked of a training data source before the output folder is claimed, without
    downloading: a file (a text file when `text_files`, as `pretrain_data.read_texts` reads it, else a
    tevatron JSONL file), a dataset folder of a known layout, or a registry or mapped dataset name. A
    mistyped path then costs one line, and no record that would lock the folder to it."""
    from dupmae_eval.data.datasets import REGISTRY, dataset_roots_from_env, resolve

    path = Path(source).expanduser()
    if source.startswith("irds:") and not path.exists():
        try:
            resolve(source, download=False)   # the id against ir_datasets' catalogue; nothing is downloaded
        except DupMAEEvalError as exc:
            raise DupMAEEvalError(f"{flag} {source}: {exc}") from None
        return
    if path.is_file():
        if text_files and not path.name.endswith(".txt.gz") and path.suffix in (".jsonl", ".gz", ".tsv"):
            raise DupMAEEvalError(f"{flag} {source}: a file is read as text, one text per line (.txt or "
                                  f".txt.gz); give a {path.suffix} corpus as its dataset folder")
        return
    if not path.is_dir() and (source in REGISTRY or source in dataset_roots_from_env()):
        return                              # resolved (downloaded if it must be) when it is read
    if not path.is_dir() and (path.suffix or "/" in source or source.startswith(("~", "."))):
        raise DupMAEEvalError(f"{flag} {source}: no such file or folder")
    try:
        resolve(source, download=False)
    except DupMAEEvalError as exc:
        raise DupMAEEvalError(f"{flag} {source}: {exc}") from None


def prepare_data(data_source: str, settings: FinetuneSettings, output: Path):
    """(train queries, held-out queries, passage store) with negatives attached."""
    from dupmae_eval.training import finetune_data as training_data
    from dupmae_eval.training.negatives import NEGATIVE_SOURCES

    source = Path(data_source).expanduser()
    if source.is_file():
        queries, store = training_data.from_tevatron(source)
        dataset = None
    else:
        from dupmae_eval.data.datasets import resolve

        dataset = resolve(data_source)
        queries, store = training_data.from_dataset(dataset, settings.split)
    train, held = training_data.hold_out(queries, settings.holdout_queries, settings.seed)
    if dataset is not None and settings.negatives != "none":
        folder = output / "negatives"
        folder.mkdir(parents=True, exist_ok=True)
        source = NEGATIVE_SOURCES.lookup(settings.negatives)
        rank, world = _distributed()
        if world > 1 and rank != 0:
            _barrier()    # rank 0 mines; the others then read its ranking from negatives/
        ranking = source.mine(dataset, settings.split, settings, folder)
        if world > 1 and rank == 0:
            _barrier()
        held_ids = {q.qid for q in held}
        training_data.attach_candidates(train, {q: h for q, h in ranking.items() if q not in held_ids},
                                        settings.negatives_depth)
    if settings.distill_from:
        teacher = training_data.read_teacher_scores(Path(settings.distill_from))
        scored = training_data.attach_teacher(train, teacher, settings.distill_from)
        if len(scored) < len(train):
            print(f"distillation: {len(train) - len(scored)} of {len(train)} training queries left out: "
                  f"{settings.distill_from} scores none of their judged positives", flush=True)
        train = scored
    return train, held, store


def finetune(model: str, data: str, output: Path, settings: FinetuneSettings, command: Optional[str] = None) -> Path:
    """Fine-tune `model` (hub name or folder) on `data` (dataset name or folder, or a tevatron JSONL file)
    and write the model to `output`, with its model card (README.md, `cards.py`; `command`: the command
    line it records); a second call with the same arguments resumes from the last checkpoint."""
    from dupmae_eval.files import atomic_output
    from dupmae_eval.training.finetune_data import GroupCollator, GroupDataset
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.recompute import recompute_encoder

    settings.validate()
    output = Path(output)
    rank, world = _distributed()
    record = {"tool": f"dupmae-eval {__version__}", "model": model, "data": data, "settings": settings.as_dict()}
    check_data_source(data, "--dataset", text_files=False)
    net = DupMAEForTraining.from_checkpoint(model, settings)    # a missing MLM head is refused here, early:
    for flag, path in (("--distill-from", settings.distill_from),
                       ("--negatives-from", settings.negatives_from if settings.negatives == "run" else None)):
        if path and not Path(path).expanduser().is_file():
            raise DupMAEEvalError(f"{flag} {path}: no such file")
    if rank == 0:                    # the one rank that judges the folder (`claim_output`) hashes the inputs
        record["content"] = input_contents(model, data, settings.split, {
            "negatives_from": settings.negatives_from if settings.negatives in ("run", "model") else None,
            "distill_from": settings.distill_from})
    if claim_output(output, record, RECORD, "fine-tuning", asdict(FinetuneSettings())):   # before the record
        if rank == 0 and not (output / "README.md").is_file():   # stopped between its record and its card
            from dupmae_eval.training.cards import write_training_card

            write_training_card(output, "finetune", command)
        return output
    recompute_encoder(net.masked_lm, settings.recompute, settings.recompute_first)
    train, held, store = prepare_data(data, settings, output)
    if held and rank == 0:
        with atomic_output(output / "holdout.tsv") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for query in held:
                handle.writelines(f"{query.qid}\t{docid}\t1\n" for docid in query.positives)
    if world > 1 and len(train) < settings.queries_per_device * world:
        raise DupMAEEvalError(f"{len(train)} training queries cannot fill one step of {world} processes x "
                              f"{settings.queries_per_device} queries")
    dataset = GroupDataset(train, store, settings.group_size, settings.seed)
    collator = GroupCollator(net.tokenizer, settings.query_max_length, settings.passage_max_length)
    train_and_save(net, dataset, collator, output, settings, settings.queries_per_device, RECORD,
                   train_queries=len(train), held_out_queries=len(held))
    if rank == 0:
        from dupmae_eval.training.cards import write_training_card

        write_training_card(output, "finetune", command)
    return output
