"""Hugging Face model cards for trained folders: `README.md` with the hub's metadata block.

`finetune` and `pretrain` write the card when their run finishes (`write_training_card`), from the run's
record (finetune.json / pretrain.json): library, base model (a hub name; a local folder is named in the
text only, its own card's base model and licence carried over when it has one), datasets (their hub
names where the registry knows them), tags, licence if known, the toolkit's version, the exact command,
and every setting. The folder can then be pushed as it is (`huggingface_hub`'s `upload_folder`).

Scores are added by `update_card_scores` from metrics records, as the hub's `model-index` (one
`EvalResult` per dataset, split, measure and condition: a score of the same four replaces the old one),
and as a table in the text. It is called only when asked (`run --eval --card`, `reproduce --card`): an
evaluation never writes into a model folder by itself, since the folder may be someone else's checkpoint,
shared, or read-only. The card is not part of the model's fingerprint (only weights, config and tokenizer
files are), so updating it reuses every cached encoding. Each update reads, merges and rewrites the card
under a lock on the folder, atomically (a crash leaves the old card, never half of one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from dupmae_eval import __version__
from dupmae_eval.errors import DupMAEEvalError

CARD = "README.md"
SCORES_BEGIN, SCORES_END = "<!-- dupmae-eval scores -->", "<!-- /dupmae-eval scores -->"
TASK = ("text-retrieval", "Retrieval")
KINDS = {"finetune": ("fine-tuned", "finetune.json", "Fine-tuning"),
         "pretrain": ("pre-trained", "pretrain.json", "Pre-training")}


def command_line(argv: Iterable[str]) -> str:
    """The command as typed, quoted so that it can be pasted back into a shell."""
    return shlex.join(["dupmae-eval", *argv])


def _hub_name(model: str, record: dict) -> Optional[str]:
    """`model` when it is a hub repository name: not a local path, a shape or a config file (the record
    then holds `model_config`)."""
    if "model_config" in record or model.startswith("shape:") or Path(model).expanduser().exists():
        return None
    return model if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) else None


def _base_card(model: str):
    """The card of a local base model folder, if it has one."""
    from huggingface_hub import ModelCard

    card = Path(model).expanduser() / CARD
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card)
    except Exception:         # a README that is not a card: nothing carried over
        return None


def write_training_card(output: Path, kind: str, command: Optional[str] = None) -> Path:
    """Write `output/README.md` for a finished `finetune` or `pretrain` run, from its record. Scores already
    in a card there (a run continued to more steps) are dropped: they measured other weights."""
    from huggingface_hub import ModelCard, ModelCardData

    from dupmae_eval.data.datasets import hub_dataset_id

    adjective, record_name, what = KINDS[kind]
    record = json.loads((Path(output) / record_name).read_text())
    model, data, settings = record["model"], record["data"], record["settings"]
    base = _hub_name(model, record)
    inherited = _base_card(model)
    license_ = inherited.data.license if inherited else None
    base = base or (inherited.data.base_model if inherited else None)
    hub_dataset = hub_dataset_id(data)
    objective = (f"objective {settings['objective']}" if kind == "pretrain" else f"encoder kind {settings.get('kind')}")
    tags = (["dupmae-eval", "dupmae", "fill-mask"] if kind == "pretrain" else
            ["dupmae-eval", str(settings.get("kind", "dupmae")), "information-retrieval", "text-retrieval"])
    data_card = ModelCardData(library_name="transformers", base_model=base, datasets=[hub_dataset] if hub_dataset else None,
                              license=license_, tags=list(dict.fromkeys(tags)), model_name=Path(output).name)
    typed = command or f"(called from Python: {kind}(model={model!r}, data={data!r}, output={str(output)!r}))"
    lines = [
        f"# {Path(output).name}", "",
        f"A BERT model {adjective} with dupmae-eval {__version__} from "
        f"`{model}` on `{data}` ({objective}).", "",
        f"## {what}", "",
        f"- toolkit: {record.get('tool', f'dupmae-eval {__version__}')}"
        + (f" (git {record['git_commit']})" if record.get("git_commit") else ""),
        f"- base model: `{model}`" + (f" (hub: `{base}`)" if base and base != model else ""),
        f"- data: `{data}`" + (f" (hub: `{hub_dataset}`)" if hub_dataset else ""),
        f"- steps: {record.get('steps')}, final training loss: {record.get('training_loss')}",
        *([f"- training queries: {record['train_queries']}, held out: {record['held_out_queries']}"]
          if "train_queries" in record else []),
        *([f"- sequences: {record['sequences']}, corpus tokens: {record['corpus_tokens']}"]
          if "sequences" in record else []),
        *([f"- versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}"]
          if record.get("versions") else []),
        "", "The command:", "", "```bash", typed, "```", "",
        "Every setting (the recipe, then the flags):", "", "```json", json.dumps(settings, indent=2, sort_keys=True),
        "```", "",
        "## Use", "",
        "The folder is a `BertForMaskedLM` (with `dupmae_head.safetensors` after fine-tuning) that "
        "`dupmae-eval run --model FOLDER` reads as it is. Scores measured with `dupmae-eval run --eval --card` "
        "or `dupmae-eval reproduce --card` are added below and to the metadata's `model-index`.", "",
        "## Evaluation", "", SCORES_BEGIN, _scores_table([]), SCORES_END, "",
    ]
    card = ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n" + "\n".join(lines))
    _save(card, Path(output) / CARD)
    return Path(output) / CARD


def _metric_type(measure: str) -> str:
    """ir-measures' name as a metric type id: nDCG@10 -> ndcg_at_10, AP(rel=2) -> ap_rel_2, R(rel=2)@1000 ->
    r_rel_2_at_1000."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", measure.lower().replace("@", "_at_"))).strip("_")


def eval_results_from(records: Iterable) -> List:
    """EvalResults from metrics records (anything with condition, dataset, split and aggregate, as
    `evaluation.results.MetricsRecord`)."""
    from huggingface_hub import EvalResult

    from dupmae_eval.data.datasets import hub_dataset_id, lookup

    results = []
    for record in records:
        try:
            title = lookup(record.dataset).title
        except DupMAEEvalError:
            title = record.dataset
        for measure, value in record.aggregate.items():
            results.append(EvalResult(
                task_type=TASK[0], task_name=TASK[1], dataset_type=hub_dataset_id(record.dataset) or record.dataset,
                dataset_name=title, dataset_split=record.split, metric_type=_metric_type(measure),
                metric_name=measure, metric_value=round(float(value), 4), metric_config=record.condition))
    return results


def _key(result) -> tuple:
    return (result.dataset_type, result.dataset_split, result.metric_type, result.metric_config)


def update_card_scores(folder: Path, records: Iterable) -> Path:
    """Merge the records' scores into `folder/README.md` (model-index and the text's table), atomically and
    under a lock on the folder. A folder without a card gets a minimal one (the folder's name, the scores)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    new = eval_results_from(records)
    if not new:
        return folder / CARD
    with _locked(folder):
        path = folder / CARD
        if path.is_file():
            card = ModelCard.load(path)
        else:
            data = ModelCardData(library_name="transformers", tags=["dupmae-eval"], model_name=folder.name)
            card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {folder.name}\n\n## Evaluation\n\n"
                             f"{SCORES_BEGIN}\n{SCORES_END}\n")
        merged: Dict[tuple, object] = {_key(result): result for result in (card.data.eval_results or [])}
        merged.update({_key(result): result for result in new})
        card.data.eval_results = sorted(merged.values(), key=lambda r: (r.metric_config or "", r.dataset_name,
                                                                       r.dataset_split or "", r.metric_name or ""))
        card.data.model_name = card.data.model_name or folder.name
        table = _scores_table(card.data.eval_results)
        text = card.text
        if SCORES_BEGIN in text and SCORES_END in text:
            head, rest = text.split(SCORES_BEGIN, 1)
            text = f"{head}{SCORES_BEGIN}\n{table}\n{SCORES_END}{rest.split(SCORES_END, 1)[1]}"
        else:
            text = f"{text.rstrip()}\n\n## Evaluation\n\n{SCORES_BEGIN}\n{table}\n{SCORES_END}\n"
        _save(ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}"), path)
    return path


def _scores_table(results) -> str:
    if not results:
        return "No scores yet."
    rows = ["| condition | dataset | split | measure | value |", "|---|---|---|---|---|"]
    rows += [f"| {r.metric_config} | {r.dataset_name} | {r.dataset_split} | {r.metric_name} | {r.metric_value:.4f} |"
             for r in results]
    return "\n".join(rows) + "\n\nMeasured with dupmae-eval (ir-measures, trec_eval semantics)."


def _save(card, path: Path) -> None:
    from dupmae_eval.files import atomic_output

    with atomic_output(path) as out:
        out.write(str(card.content).rstrip() + "\n")


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on the folder itself (no lock file left in a folder that is pushed as it is)."""
    import fcntl
    import os

    if not folder.is_dir():
        raise DupMAEEvalError(f"--card: {folder} is not a model folder")
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def check_card_folder(model: str, flag: str = "--card") -> Path:
    """The local model folder whose card `--card` updates; a hub name is refused in one line, before any work."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise DupMAEEvalError(f"{flag}: --model {model} is not a local folder (a hub model's card is its "
                              f"owner's: download the model to a folder, or drop {flag})")
    if not os.access(folder, os.W_OK):
        raise DupMAEEvalError(f"{flag}: {folder} is not writable")
    return folder

