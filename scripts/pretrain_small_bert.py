"""Pre-train a small BERT from random weights with BERT's masked-LM objective, on one GPU, in a fixed time.

The valid start for DupMAE's experiments is an MLM-trained BERT; none ships offline, so this script makes
one. It runs the toolkit's own `pretrain` code path (`dupmae_eval.training.pretrain.pretrain`, recipe
`bert-mlm`: objective mlm, 15 % whole-word masking with 80/10/10 replacement, 128-token packed sequences)
from a shape (`--shape bert-mini`: 4 layers x 256, the bert-base-uncased vocabulary), on the corpus that
`scripts/build_pretrain_corpus.py` builds (corpus.txt.xz for training, heldout.txt for the held-out loss).

Steps are sized to the time: a probe times `--probe-steps` optimizer steps of the same model, batch and
precision outside the Trainer, and the run gets max_steps = rate x the time left x `--fill`, so the learning
rate's linear decay ends when the time does. A guard stops the run at `--time-budget` seconds all the same
(the summary then says so).

Written under --out as it goes (each file replaced atomically, so a run cut short leaves the last one):
    curve.jsonl     one JSON object a line: {"step", "loss", "learning_rate", "seconds"} every logging step,
                    {"step", "heldout_nats", "seconds"} every --eval-every steps (and at the start and end)
    model/          the model as fp16 safetensors in shards of at most --shard-mb MB (the word embeddings,
                    15.6 MB at bert-mini's width, are one shard), config.json and the index; written into
                    model.partial/ and swapped in whole at every --export-every steps and at the end
    summary.json    shape, corpus SHA-256, probe rate, steps done and planned, tokens seen, wall time, the
                    final held-out masked-LM loss, whether the time guard stopped it
The Trainer's own checkpoints (optimizer states) stay under --work, which is not sent back.

GPU (bf16, the toolkit's `pretrain` with the Trainer's bf16 autocast):
    python scripts/pretrain_small_bert.py --device cuda --corpus corpus/pretrain --out $OUT --time-budget 360
CPU smoke run (the test suite runs this, so the script cannot rot between GPU loans):
    python scripts/pretrain_small_bert.py --device cpu --small --corpus DIR --out DIR
The tokenizer is not exported (the shipped bert-base-uncased one, `dupmae_eval/resources/tokenizers`):
copy its two files beside the model to make the folder a complete checkpoint.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class ScriptError(Exception):
    """One line for the user; exit 2."""


def corpus_files(folder: Path):
    """(training texts, held-out texts) of a corpus folder; refused with one line when either is missing."""
    train = next((folder / name for name in ("corpus.txt.xz", "corpus.txt.gz", "corpus.txt")
                  if (folder / name).is_file()), None)
    heldout = folder / "heldout.txt"
    if train is None:
        raise ScriptError(f"--corpus {folder}: no corpus.txt.xz, corpus.txt.gz or corpus.txt (build it with "
                          f"scripts/build_pretrain_corpus.py)")
    if not heldout.is_file():
        raise ScriptError(f"--corpus {folder}: no heldout.txt")
    return train, heldout


def text_sha256(path: Path):
    """(SHA-256, bytes) of the text (uncompressed, for .xz and .gz): what the corpus builder's manifest records."""
    import lzma

    digest, size = hashlib.sha256(), 0
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def check_manifest(folder: Path, train: Path, heldout: Path) -> dict:
    """The corpus's SHA-256s, checked against its manifest.json when there is one (a corpus changed after it
    was built is refused)."""
    (corpus_sha, corpus_bytes), (heldout_sha, _) = text_sha256(train), text_sha256(heldout)
    found = {"corpus": corpus_sha, "heldout": heldout_sha, "corpus_bytes": corpus_bytes}
    manifest = folder / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("sha256", {})
        for name, key in (("corpus", "corpus.txt"), ("heldout", "heldout.txt")):
            if key in recorded and recorded[key] != found[name]:
                raise ScriptError(f"{manifest}: {key} SHA-256 {recorded[key][:12]}… but the text hashes to "
                                  f"{found[name][:12]}…; rebuild the corpus")
    return found


def write_json_atomic(path: Path, value) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)


class Curve:
    """curve.jsonl, appended a line at a time and flushed to disk (a killed run keeps every line written)."""

    def __init__(self, path: Path, start: float):
        self.path, self.start = path, start

    def add(self, **entry) -> None:
        entry["seconds"] = round(time.time() - self.start, 2)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def export_model(masked_lm, folder: Path, shard_mb: int) -> None:
    """The model as fp16 safetensors shards into `folder`, swapped in whole: written to folder.partial, the
    old folder moved aside, the new one renamed into place, the old one removed."""
    import torch

    partial = folder.with_name(folder.name + ".partial")
    previous = folder.with_name(folder.name + ".previous")
    for leftover in (partial, previous):
        if leftover.exists() and folder.exists():
            shutil.rmtree(leftover)
    if previous.exists() and not folder.exists():       # killed between the two renames: it is the last one
        previous.rename(folder)
    halves, seen = {}, set()
    for name, value in masked_lm.state_dict().items():
        if value.data_ptr() in seen:            # the MLM decoder's weight is the word embeddings (tied): once
            continue
        seen.add(value.data_ptr())
        halves[name] = value.detach().to(torch.float16)
    masked_lm.save_pretrained(str(partial), state_dict=halves, max_shard_size=f"{shard_mb}MB")
    config = json.loads((partial / "config.json").read_text())
    write_json_atomic(partial / "config.json", {**config, "dtype": "float16"})
    if folder.exists():
        folder.rename(previous)
    partial.rename(folder)
    if previous.exists():
        shutil.rmtree(previous)


def callbacks(args, curve: Curve, heldout_texts, started: float, state: dict):
    from transformers import TrainerCallback

    from dupmae_eval.training.mlm_loss import masked_lm_loss

    def heldout(model, step: int) -> float:
        result = masked_lm_loss(model.masked_lm, model.tokenizer, heldout_texts, ratio=0.15, seed=0,
                                max_length=args.max_length, batch_size=128, bf16=args.device != "cpu")
        curve.add(step=step, heldout_nats=round(result.nats, 4), masked_tokens=result.masked_tokens)
        print(f"step {step}: held-out masked-LM loss {result.nats:.4f} nats", flush=True)
        state["heldout"], state["heldout_step"] = result.nats, step
        return result.nats

    def export(model, step: int) -> None:
        export_model(model.masked_lm, args.out / "model", args.shard_mb)
        state["exported_step"] = step

    class Progress(TrainerCallback):
        def on_train_begin(self, targs, tstate, control, model=None, **kwargs):
            if tstate.global_step == 0:
                heldout(model, 0)

        def on_log(self, targs, tstate, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                curve.add(step=tstate.global_step, loss=float(logs["loss"]),
                          learning_rate=float(logs.get("learning_rate", 0.0)))

        def on_step_end(self, targs, tstate, control, model=None, **kwargs):
            step = tstate.global_step
            if time.time() - started > args.time_budget:
                state["stopped_by_time"] = True
                control.should_training_stop = True
                return
            if step % args.eval_every == 0:
                heldout(model, step)
            if step % args.export_every == 0:
                export(model, step)

        def on_train_end(self, targs, tstate, control, model=None, **kwargs):
            step = tstate.global_step
            if state.get("heldout_step") != step:
                heldout(model, step)
            if state.get("exported_step") != step:
                export(model, step)

    return [Progress()]


def probe_rate(args, settings, train: Path):
    """(optimizer steps per second of this model, batch and precision, timed outside the Trainer on the
    corpus's first texts, the first two steps not counted; tokenizer bytes per second on those texts, to
    foresee how long `pretrain` will take to tokenize the whole corpus before its first step)."""
    import itertools

    import torch

    from dupmae_eval.training.pretrain_data import PretrainCollator, PretrainDataset, TokenStore, read_texts
    from dupmae_eval.training.pretrain_model import DupMAEForPretraining

    device = torch.device(args.device)
    net = DupMAEForPretraining.from_checkpoint(args.shape, "mlm", 0.0, True, settings.seed).to(device)
    sample = args.work / "probe-texts.txt"
    sample.write_text("".join(t + "\n" for t in itertools.islice(read_texts(str(train)), 4 * args.batch_size
                                                                 * (args.probe_steps + 2))), encoding="utf-8")
    shutil.rmtree(args.work / "probe-tokens", ignore_errors=True)
    begin = time.perf_counter()
    store = TokenStore.build(str(sample), net.tokenizer, args.work / "probe-tokens")
    tokenize_rate = sample.stat().st_size / max(time.perf_counter() - begin, 1e-6)
    dataset = PretrainDataset(store, net.tokenizer, settings.max_length, settings.sequences,
                              settings.encoder_mask_ratio, None, settings.seed)
    collate = PretrainCollator(net.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.device != "cpu")
    times = []
    for step in range(args.probe_steps + 2):
        indices = [(step * args.batch_size + i) % len(dataset) for i in range(args.batch_size)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        batch = {k: v.to(device) for k, v in collate([dataset[i] for i in indices]).items()}
        with autocast:
            loss = net(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    del net, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 1.0 / (sum(times[2:]) / len(times[2:])), tokenize_rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="folder with corpus.txt.xz (or .gz, or plain), "
                                                                   "heldout.txt and manifest.json")
    parser.add_argument("--out", type=Path, required=True, help="folder for curve.jsonl, model/, summary.json")
    parser.add_argument("--work", type=Path, default=None, help="the Trainer's folder (default: OUT/../work-…"
                                                                " under the system's temp folder)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--shape", default="bert-mini", help="model shape (default bert-mini)")
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per step (default 256)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--time-budget", type=float, default=360.0,
                        help="seconds for the whole script; the run stops there at the latest (default 360)")
    parser.add_argument("--fill", type=float, default=0.85, help="share of the time left that the planned "
                                                                 "steps fill (default 0.85)")
    parser.add_argument("--max-steps", type=int, default=None, help="planned steps (default: from the probe)")
    parser.add_argument("--probe-steps", type=int, default=20, help="steps timed by the probe (default 20)")
    parser.add_argument("--eval-every", type=int, default=500, help="held-out loss every N steps (default 500)")
    parser.add_argument("--export-every", type=int, default=1000, help="model export every N steps (default 1000)")
    parser.add_argument("--heldout-texts", type=int, default=2000, help="held-out texts measured (default 2000)")
    parser.add_argument("--shard-mb", type=int, default=15, help="largest shard in MB (default 15)")
    parser.add_argument("--workers", type=int, default=8, help="data loading processes (default 8; 0 on cpu)")
    parser.add_argument("--compile", action="store_true", help="the encoder under torch.compile")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--small", action="store_true", help="toy sizes (the test suite's CPU run)")
    args = parser.parse_args(argv)
    if args.small:
        args.shape, args.batch_size, args.max_length = "bert-tiny", 4, 32
        args.probe_steps, args.eval_every, args.export_every, args.heldout_texts = 2, 2, 2, 16
        args.max_steps = args.max_steps or 4
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""          # the Trainer then runs on the CPU
        args.workers = 0
    try:
        return run(args)
    except ScriptError as exc:
        print(f"pretrain_small_bert: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    import itertools
    import tempfile

    from dupmae_eval.errors import DupMAEEvalError

    started = time.time()
    for name in ("batch_size", "max_length", "eval_every", "export_every", "heldout_texts", "shard_mb",
                 "probe_steps"):
        if getattr(args, name) < 1:
            raise ScriptError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.fill <= 1:
        raise ScriptError("--fill must be in (0, 1]")
    train, heldout_path = corpus_files(args.corpus)
    hashes = check_manifest(args.corpus, train, heldout_path)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or Path(tempfile.gettempdir()) / f"pretrain-small-bert-{args.shape}"
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"corpus {train} sha256 {hashes['corpus']}; held-out sha256 {hashes['heldout']}", flush=True)

    import torch

    from dupmae_eval.training.pretrain import load_pretrain_recipe, make_pretrain_settings, pretrain
    from dupmae_eval.training.pretrain_data import read_texts

    base = dict(batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
                seed=args.seed, precision="bf16" if args.device == "cuda" else "fp32", compile=args.compile,
                dataloader_workers=args.workers, logging_steps=10 if not args.small else 1,
                save_steps=args.export_every, save_total_limit=1)
    try:
        recipe = load_pretrain_recipe("bert-mlm")
        output = args.work / "run"
        earlier = output / "pretrain.json"
        rate = None
        if earlier.is_file():         # a run cut short: resume it with the steps it planned (no new probe)
            planned = json.loads(earlier.read_text())["settings"]["max_steps"]
            print(f"resuming {output}: {planned} steps planned", flush=True)
        else:
            rate, tokenize_rate = probe_rate(args, make_pretrain_settings(recipe, **base), train)
            tokenizing = 1.2 * hashes["corpus_bytes"] / tokenize_rate
            left = args.time_budget - (time.time() - started) - tokenizing
            planned = args.max_steps or max(1, int(rate * left * args.fill))
            print(f"probe: {rate:.2f} steps/s at {args.batch_size} x {args.max_length}; tokenizing the corpus "
                  f"~{tokenizing:.0f} s; {left:.0f} s left for training; {planned} steps planned", flush=True)
        settings = make_pretrain_settings(recipe, **base, max_steps=planned)
        heldout_texts = list(itertools.islice(read_texts(str(heldout_path)), args.heldout_texts))
        curve = Curve(args.out / "curve.jsonl", started)
        state = {"stopped_by_time": False}
        pretrain(args.shape, str(train), output, settings,
                 callbacks=callbacks(args, curve, heldout_texts, started, state))
    except DupMAEEvalError as exc:
        raise ScriptError(str(exc)) from None
    record = json.loads((output / "pretrain.json").read_text())
    summary = {"shape": args.shape, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "corpus_sha256": hashes["corpus"], "heldout_sha256": hashes["heldout"],
               "probe_steps_per_second": None if rate is None else round(rate, 3), "planned_steps": planned, "steps": record.get("steps"),
               "stopped_by_time": state["stopped_by_time"], "batch_size": args.batch_size,
               "max_length": args.max_length, "tokens_seen": (record.get("steps") or 0) * args.batch_size
               * args.max_length, "corpus_tokens": record.get("corpus_tokens"),
               "sequences": record.get("sequences"), "heldout_nats": round(state.get("heldout", float("nan")), 4),
               "heldout_texts": len(heldout_texts), "training_loss": record.get("training_loss"),
               "seconds": round(time.time() - started, 1), "settings": settings.as_dict()}
    write_json_atomic(args.out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
