"""The `dupmae-eval` command: thin verbs that parse, call the library, and print.

Heavy imports (Pyserini, the JVM, torch) happen inside the verbs that need them, so
`dupmae-eval --help` and `dupmae-eval eval` start in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from dupmae_eval import __version__
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.options import nonnegative_float, positive_int, run_tag, unit_interval


def _add_bm25(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bm25", help="BM25 through Pyserini's Lucene: index (cached) and search",
                       description="Index a dataset with Anserini (cached) and search it with BM25, writing a TREC run.")
    p.add_argument("--dataset", required=True, metavar="NAME|FOLDER",
                   help="registry name (see `datasets`) or a dataset folder")
    p.add_argument("--split", default=None, metavar="SPLIT", help="query split (default: the dataset's, e.g. test, "
                                                                   "dev-subset; see `datasets`)")
    p.add_argument("--fields", choices=("flat", "multifield"), default="flat",
                   help="flat: title+text in one field; multifield: title and text fields, weights 1.0/1.0")
    p.add_argument("--k1", type=nonnegative_float, default=0.9, metavar="FLOAT",
                   help="term saturation, at least 0 (default %(default)s)")
    p.add_argument("--b", type=unit_interval, default=0.4, metavar="FLOAT",
                   help="length normalisation, 0 to 1 (default %(default)s)")
    p.add_argument("--hits", type=positive_int, default=1000, metavar="N", help="hits per query (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="search/index threads (default: all cores)")
    p.add_argument("--keep-query-hit", action="store_true",
                   help="keep the hit whose id equals the query id (BEIR removes it; default: removed for "
                        "BEIR-layout data, kept for MS MARCO)")
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="run file to write (TREC, or --run-format)")
    p.add_argument("--tag", type=run_tag, default=None, help="run tag, the condition's name in `table` (default: bm25-FIELDS)")
    _topics_and_format(p)
    p.add_argument("--eval", action="store_true", help="evaluate the run with the dataset's measures")
    p.set_defaults(handler=_cmd_bm25)


def _topics_and_format(p: argparse.ArgumentParser) -> None:
    from dupmae_eval.data.formats import RUN_FORMATS

    p.add_argument("--topics", type=Path, default=None, metavar="FILE",
                   help="search for these queries instead of a split's: qid<TAB>text lines, a TREC topic file "
                        "(<top> <num> <title>) or JSON lines (_id/text or qid/query), gzipped or not; they have "
                        "no judgments, so --eval is refused (default: none, the split's queries)")
    p.add_argument("--run-format", choices=RUN_FORMATS, default="trec",
                   help="trec: qid Q0 docid rank score tag; msmarco: qid<TAB>docid<TAB>rank; "
                        "json: {qid: {docid: score}} (ranx, Pyserini) (default: %(default)s)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.encoding.kinds import ENCODER_KINDS
    from dupmae_eval.options import add_arguments
    from dupmae_eval.retrieval.modes import RETRIEVAL_MODES

    p = sub.add_parser("run", help="encode (cached), index (cached) and search with a DupMAE/RetroMAE/baseline model",
                       description="Encode a corpus with a model, index it, search, and write a TREC run.")
    p.add_argument("--dataset", required=True, metavar="NAME|FOLDER", help="registry name or dataset folder")
    p.add_argument("--split", default=None, metavar="SPLIT", help="query split (default: the dataset's)")
    p.add_argument("--model", required=True, help="Hugging Face hub name, local checkpoint folder or "
                                                  "package:MODULE/FOLDER")
    p.add_argument("--encoder", required=True, choices=list(ENCODER_KINDS),
                   help="; ".join(f"{name}: {kind.summary}" for name, kind in ENCODER_KINDS.items()))
    p.add_argument("--retrieval", required=True, choices=list(RETRIEVAL_MODES),
                   help="; ".join(f"{name}: {mode.summary}" for name, mode in RETRIEVAL_MODES.items()))
    add_arguments(p)
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="run file to write (TREC, or --run-format)")
    p.add_argument("--tag", type=run_tag, default=None, help="run tag, the condition's name in `table` (default: "
                                               "ENCODER-RETRIEVAL)")
    _topics_and_format(p)
    p.add_argument("--eval", action="store_true", help="evaluate the run with the dataset's measures")
    p.add_argument("--card", action="store_true", help="with --eval: add the scores to the model folder's "
                                                       "model card (README.md, the hub's model-index)")
    p.set_defaults(handler=_cmd_run)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run a suite's conditions x datasets, check expected scores",
                       description="For each cell of a suite YAML: run (unless a run made from the very same "
                                   "condition, corpus and model exists: its sidecar records what made it), "
                                   "evaluate with the suite's measures, and print OK/FAIL against the expected "
                                   "scores at the suite's precision.")
    p.add_argument("config", help="suite YAML, or the name of a shipped suite: beir, msmarco, local, demo")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="only these datasets, as the suite names them (default: all of the suite's)")
    p.add_argument("--conditions", nargs="+", default=None, metavar="NAME",
                   help="only these conditions (default: all of the suite's)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER",
                   help="use a local folder for a dataset name (repeatable; default: none)")
    p.add_argument("--runs", type=Path, default=Path("runs"), metavar="FOLDER",
                   help="where runs/<suite>/<condition>/ go (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether each would run, be "
                                                          "reused, or be redone (and why)")
    p.add_argument("--force", action="store_true", help="redo the chosen cells even when an identical run exists")
    p.add_argument("--card", action="store_true", help="add each model condition's scores to its model folder's "
                                                       "card (README.md; hub models are left alone)")
    p.set_defaults(handler=_cmd_reproduce)


def _add_table(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.evaluation.statistics import CORRECTIONS, TESTS
    from dupmae_eval.evaluation.tables import TABLE_FORMATS

    p = sub.add_parser("table", help=f"comparison table from saved results ({', '.join(TABLE_FORMATS)})",
                       description="Tabulates saved results, datasets x conditions, for each --measure: reproduce's "
                                   "metrics, or runs scored against their dataset's judgments. With --baseline, each "
                                   "other condition's difference with its confidence interval and a corrected paired "
                                   "test; with --suite, the paper's reference columns. Prints Markdown, or writes csv, "
                                   "LaTeX or a chart (png).")
    p.add_argument("results", nargs="+", type=Path, help="folders, *.metrics.json files (from reproduce), or run "
                                                          "files with their .meta.json sidecar (from bm25 or run: "
                                                          "scored against their dataset's judgments)")
    p.add_argument("--suite", default=None, metavar="SUITE",
                   help="suite YAML (or shipped suite name): its reference columns are added and its conditions' "
                        "order is the columns' order (default: none; conditions by name)")
    p.add_argument("--measure", action="append", default=None, metavar="MEASURE",
                   help="measure to tabulate, an ir-measures name; repeat it or give a comma list for several side "
                        "by side: --measure nDCG@10 --measure R@100, --measure nDCG@10,R@100 (default: nDCG@10)")
    p.add_argument("--measures", nargs="+", default=None, metavar="MEASURE", dest="measure_list",
                   help="several measures after one flag, as report takes them: --measures nDCG@10 R@100 (default: "
                        "none, so --measure's nDCG@10)")
    p.add_argument("--qrels", type=Path, default=None, metavar="FILE",
                   help="judgments for run files given without a .meta.json sidecar (another tool's TREC, MS MARCO "
                        "or JSON runs): each is scored against them, its file name the condition (default: none; "
                        "runs need their sidecar)")
    p.add_argument("--baseline", default=None, metavar="CONDITION",
                   help="condition to compare against: deltas, paired tests (default: none)")
    p.add_argument("--test", default=None, metavar="{" + ",".join(TESTS) + "}",
                   help="paired test over per-query scores; randomization is Fisher's, 10,000 seeded sign flips "
                        "(default: t)")
    p.add_argument("--correction", default=None, metavar="{" + ",".join(CORRECTIONS) + "}",
                   help="for the comparisons of each measure's table; bh is Benjamini-Hochberg (default: holm)")
    p.add_argument("--alpha", default=None, metavar="LEVEL", help="significance level of the † mark (default: 0.05)")
    p.add_argument("--format", choices=list(TABLE_FORMATS), default="md", help="output format (default: %(default)s)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="file to write, required for pictures (default: standard output)")
    p.set_defaults(handler=_cmd_table)


def _add_report(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.evaluation.statistics import CORRECTIONS, TESTS

    p = sub.add_parser("report", help="one self-contained HTML page of saved results: every measure, deltas, "
                                      "significance, charts, provenance",
                       description="Write one HTML file (CSS, script and SVG charts inline; it loads nothing) of "
                                   "the results: datasets x conditions in the suite's order for each measure, each "
                                   "cell with its delta to the baseline and significance, expanding to p-values, "
                                   "a bootstrap CI, queries won/lost and the command that makes its run again; "
                                   "per-dataset and per-query delta charts; where each condition's runs came from. "
                                   "Its numbers and statistics are `table`'s.")
    p.add_argument("results", nargs="+", type=Path, help="folders, *.metrics.json files (from reproduce), or run "
                                                          "files with their .meta.json sidecar (from bm25 or run)")
    p.add_argument("--suite", default=None, metavar="SUITE",
                   help="suite YAML (or shipped suite name): the order of conditions and datasets, their "
                        "descriptions, and its reference columns (default: none; conditions by name)")
    p.add_argument("--baseline", default=None, metavar="CONDITION",
                   help="condition to compare against: deltas, paired tests, CIs (default: none)")
    p.add_argument("--measures", nargs="+", default=None, metavar="MEASURE",
                   help="measures to show, switchable in the page; several, or a comma list (default: every "
                        "measure the results hold, the suite's first)")
    p.add_argument("--test", default=None, metavar="{" + ",".join(TESTS) + "}",
                   help="paired test over per-query scores, as table's (default: t)")
    p.add_argument("--correction", default=None, metavar="{" + ",".join(CORRECTIONS) + "}",
                   help="for the comparisons of each measure, as table's (default: holm)")
    p.add_argument("--alpha", default=None, metavar="LEVEL", help="significance level of the † mark (default: 0.05)")
    p.add_argument("--qrels", type=Path, default=None, metavar="FILE",
                   help="judgments for run files given without a .meta.json sidecar (another tool's TREC, MS MARCO "
                        "or JSON runs): each is scored against them, its file name the condition (default: none; "
                        "runs need their sidecar)")
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="HTML file to write")
    p.set_defaults(handler=_cmd_report)


def _add_encode(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.encoding.kinds import ENCODER_KINDS
    from dupmae_eval.options import ENCODE_OPTIONS, add_arguments

    p = sub.add_parser("encode", help="encode a corpus into the cache (resumable; torchrun splits it)",
                       description="Encode a corpus in shards (resumes after a kill). Under torchrun each rank "
                                   "encodes its share of the shards and rank 0 writes the manifest.")
    p.add_argument("--dataset", required=True, metavar="NAME|FOLDER", help="registry name or dataset folder")
    p.add_argument("--model", required=True, help="Hugging Face hub name, local checkpoint folder or "
                                                  "package:MODULE/FOLDER")
    p.add_argument("--encoder", required=True, choices=list(ENCODER_KINDS),
                   help="how a forward pass becomes a representation (as for `run`)")
    add_arguments(p, runner=ENCODE_OPTIONS)
    p.set_defaults(handler=_cmd_encode)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.data.formats import RUN_FORMATS

    p = sub.add_parser("eval", help="score runs with ir-measures (trec_eval -c semantics)",
                       description="Print MEASURE<TAB>VALUE per measure (RUN<TAB>MEASURE<TAB>VALUE for several "
                                   "runs). QRELS is a file (TREC or BEIR TSV), a registry dataset name (its "
                                   "shipped judgments) or a dataset folder (its split's judgments). Runs are "
                                   "TREC, MS MARCO or JSON files (told apart by their content, or --run-format).")
    p.add_argument("qrels", help="qrels file, registry dataset name, or dataset folder")
    p.add_argument("run", type=Path, help="run file (TREC, MS MARCO or JSON)")
    p.add_argument("more", nargs="*", metavar="RUN|MEASURE",
                   help="more run files (existing files), then ir-measures names, e.g. nDCG@10 RR@10 R@1000 "
                        "'AP(rel=2)' (default: the dataset's, or nDCG@10 R@100 R@1000)")
    p.add_argument("--split", default=None, metavar="SPLIT",
                   help="split of a registry dataset's or folder's judgments (default: the dataset's)")
    p.add_argument("--run-format", choices=("auto",) + RUN_FORMATS, default="auto",
                   help="format of every run (default auto: told from each file's content)")
    p.add_argument("--per-query", action="store_true", help="also print MEASURE<TAB>QID<TAB>VALUE lines")
    p.add_argument("--json", action="store_true", help="print one JSON object: every run's values (and "
                                                       "per-query values with --per-query)")
    p.set_defaults(handler=_cmd_eval)


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.data.formats import RUN_FORMATS
    from dupmae_eval.retrieval.fusion import FUSION_METHODS, NORMALISATIONS

    p = sub.add_parser("fuse", help="fuse runs: reciprocal rank fusion, CombSUM, CombMNZ, weighted sum",
                       description="Fuse two or more runs of the same queries into one, with a sidecar naming "
                                   "the inputs (paths, SHA-256) and the method. Ranks are those the runs are "
                                   "evaluated with (score descending, ties by document id descending).")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run files (TREC, MS MARCO or JSON), two or more")
    p.add_argument("--method", required=True, choices=FUSION_METHODS,
                   help="rrf: sum of 1/(k + rank); combsum: sum of normalised scores; combmnz: combsum times the "
                        "number of runs that retrieved the document; wsum: weighted sum of normalised scores")
    p.add_argument("--k", type=nonnegative_float, default=None, help="rrf's constant (default 60)")
    p.add_argument("--norm", choices=NORMALISATIONS, default=None,
                   help="per query and run, before combining scores (default minmax; rrf: none)")
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="wsum: one weight per run, in the order of the runs (default: none; wsum needs them)")
    p.add_argument("--hits", type=positive_int, default=1000, help="hits per query kept (default 1000)")
    p.add_argument("--input-format", choices=("auto",) + RUN_FORMATS, default="auto",
                   help="format of the inputs (default auto: told from each file's content)")
    p.add_argument("--output", required=True, type=Path, help="run file to write")
    p.add_argument("--run-format", choices=RUN_FORMATS, default="trec", help="format of the output (default trec)")
    p.add_argument("--tag", type=run_tag, default=None, help="run tag (default: fused-METHOD)")
    p.set_defaults(handler=_cmd_fuse)


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the datasets: every split, its measures, size and where the data is",
                       description="One row per dataset and split: the measures the split is scored with, the "
                                   "corpus size (passages), the judged queries, and where the data comes from "
                                   "(bundled, cached, mapped, downloadable or restricted). Nothing is downloaded.")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    p.set_defaults(handler=_cmd_datasets)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the shipped demo suite on the bundled SciFact: BM25, MiniLM, splade-tiny, "
                                    "a DupMAE reading, checked and tabled",
                       description="Runs the shipped `demo` suite (reproduce) and prints its comparison table "
                                   "against BM25 flat, with the paper's reference columns.")
    p.add_argument("--runs", type=Path, default=Path("runs"), metavar="FOLDER",
                   help="where runs/demo/<condition>/ go (default: %(default)s)")
    p.set_defaults(handler=_cmd_demo)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.training.settings import FIELDS, HELP

    p = sub.add_parser("finetune", help="fine-tune a BertForMaskedLM into a DupMAE (or cls/splade) retriever",
                       description="Contrastive fine-tuning with the paper's score (Eq. 12) on transformers' "
                                   "Trainer (torchrun for several processes). The output folder is a checkpoint "
                                   "that `run --encoder dupmae` reads as it is; run again to resume.")
    p.add_argument("--model", required=True, help="Hugging Face hub name or local checkpoint folder")
    p.add_argument("--dataset", required=True, help="dataset name or folder (BEIR or MS MARCO layout), or a "
                                                    "tevatron training JSONL file")
    p.add_argument("--output", required=True, type=Path, metavar="FOLDER",
                   help="output folder (new, or this run's to resume)")
    p.add_argument("--recipe", default=None, metavar="RECIPE",
                   help="recipe YAML, or a shipped recipe's name (retromae-msmarco, splade-tiny-scifact); flags "
                        "override it (default: none, the settings' defaults)")
    _settings_flags(p, FIELDS, HELP)
    p.set_defaults(handler=_cmd_finetune)


SETTING_CHOICES = {
    "activation": ("none", "relu", "log1p_relu"), "negatives": ("bm25", "run", "model", "none"),
    "precision": ("fp32", "bf16", "auto"), "recompute": ("none", "elementwise", "layers"), "heap": ("glibc", "release"),
    "objective": ("mlm", "retromae", "bow", "dupmae"), "sequences": ("truncate", "pack"),
}
"""The values of the training settings that take one of a few words, shown as their flags' metavars (written
out here so that `--help` imports no torch; tests/test_help.py checks each against the registry it names)."""

SETTING_METAVARS = {"kind": "KIND", "dense_dim": "{half,N,none}", "doc_topk": "{N,none}", "split": "SPLIT",
                    "negatives_from": "RUN|MODEL", "distill_from": "FILE"}


def shown_default(value) -> str:
    """A setting's default as --help writes it: on/off, none, 2e-05, 0.1, 384, dupmae."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _settings_flags(parser: argparse.ArgumentParser, fields, helps) -> None:
    """One --flag per field of a training settings table (None = not given: the recipe or default holds).
    A boolean setting is a switch (--NAME / --no-NAME); the others keep the value as typed (the settings
    convert it, for flags and recipes alike)."""
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        text = f"{helps[name]} (default: from the recipe, else {shown_default(field.default)})"
        if isinstance(field.default, bool):
            parser.add_argument(flag, dest=name, default=None, action=_Switch, help=text)
            continue
        if name in SETTING_CHOICES:
            metavar = "{" + ",".join(SETTING_CHOICES[name]) + "}"
        elif name in SETTING_METAVARS:
            metavar = SETTING_METAVARS[name]
        else:
            metavar = "FLOAT" if isinstance(field.default, float) else "N" if isinstance(field.default, int) else "TEXT"
        parser.add_argument(flag, dest=name, default=None, metavar=metavar, help=text)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from dupmae_eval.training.pretrain import FIELDS, HELP

    p = sub.add_parser("pretrain", help="pre-train a BertForMaskedLM with DupMAE's objective (or an ablation)",
                       description="DupMAE pre-training (MLM + [CLS] decoding + bag of words, paper Eq. 9) on "
                                   "transformers' Trainer (torchrun for several processes). The output folder is "
                                   "a BertForMaskedLM that `finetune` and `run` read; run again to resume.")
    p.add_argument("--model", required=True, help="Hugging Face hub name or local BertForMaskedLM folder, or a "
                                                  "shape to build with random weights from --seed: bert-tiny, "
                                                  "bert-mini, bert-small, bert-medium, bert-base (also spelt "
                                                  "shape:NAME), or a BERT config.json")
    p.add_argument("--corpus", required=True, help="dataset name or folder (its passages), or a text file "
                                                   "(one text per line; .txt.gz and .txt.xz read compressed)")
    p.add_argument("--output", required=True, type=Path, metavar="FOLDER",
                   help="output folder (new, or this run's to resume)")
    p.add_argument("--recipe", default=None, metavar="RECIPE",
                   help="recipe YAML, or a shipped recipe's name (dupmae-wiki-book, dupmae-msmarco, "
                        "splade-tiny-scifact, bert-mlm); flags override it (default: none, the settings' defaults)")
    _settings_flags(p, FIELDS, HELP)
    p.set_defaults(handler=_cmd_pretrain)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _add_mlm_loss(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mlm-loss", help="held-out masked-LM loss of a BertForMaskedLM on a text file",
                       description="Masks each text's whole words at --ratio (every masked token becomes "
                                   "[MASK]; masks drawn from --seed and the text's line number, the same for "
                                   "every model) and prints the mean cross-entropy in nats over the masked "
                                   "tokens. Two models measured with the same flags see the same masks.")
    p.add_argument("--model", required=True, help="Hugging Face hub name or local BertForMaskedLM folder")
    p.add_argument("--texts", required=True, type=Path, metavar="FILE", help="text file, one text per line (.txt.gz, .txt.xz: compressed); "
                                                             "blank lines skipped")
    p.add_argument("--ratio", type=_ratio, default=0.15, metavar="FLOAT",
                   help="share of each text's tokens masked, between 0 and 1 (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the masks (default %(default)s)")
    p.add_argument("--max-length", type=positive_int, default=128, metavar="N",
                   help="tokens per text with [CLS] and [SEP] (default %(default)s)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="the first N texts only (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                   help="texts per forward pass (default %(default)s)")
    p.set_defaults(handler=_cmd_mlm_loss)


class _Switch(argparse.BooleanOptionalAction):
    """A boolean training setting: --NAME sets it, --no-NAME clears it, neither leaves it to the recipe or the
    default (None). `--NAME true|false` (and yes/no, 1/0, `--NAME=false`), the form these settings took
    before they were switches, still works: `_Parser` rewrites it to the switch."""


SWITCH_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class _Formatter(argparse.HelpFormatter):
    """Every optional flag's help ends with its default: a help that names none gets `(default: off)` (a
    switch) or `(default: VALUE)` (a flag with a value); helps for flags whose default is decided
    elsewhere (the dataset's split, all cores) say so themselves."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or "default" in text:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is not None and action.default is not argparse.SUPPRESS:
            return f"{text} (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with the toolkit's one-line errors: `dupmae-eval: error: argument --hits: 0 must be at
    least 1`, exit 2, instead of the usage block followed by the message (subcommands inherit it), and
    help that shows every flag's default (`_Formatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"dupmae-eval: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        if args is None:
            args = sys.argv[1:]
        return super().parse_known_args(self._switch_values(list(args)), namespace)

    def _switch_values(self, args: list) -> list:
        """`--include-sep false` or `--include-sep=false` -> `--no-include-sep`; `--compile true` -> `--compile`
        (this parser's switches only; the verbs that have switches take no positional arguments)."""
        switches = {flag for action in self._actions if isinstance(action, _Switch)
                    for flag in action.option_strings if not flag.startswith("--no-")}
        if not switches:
            return args
        out, i = [], 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out.extend(args[i:])
                break
            flag, equals, value = arg.partition("=")
            if flag in switches and not equals and i + 1 < len(args) and args[i + 1].lower() in SWITCH_WORDS:
                equals, value, i = "=", args[i + 1], i + 1
            if flag in switches and equals:
                if value.lower() not in SWITCH_WORDS:
                    self.error(f"argument {flag}: {value!r} is not true or false (give {flag} or --no-{flag[2:]})")
                arg = flag if SWITCH_WORDS[value.lower()] else "--no-" + flag[2:]
            out.append(arg)
            i += 1
        return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dupmae-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dupmae-eval {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (_add_bm25, _add_run, _add_encode, _add_reproduce, _add_table, _add_report, _add_eval, _add_fuse, _add_datasets,
                _add_demo, _add_finetune, _add_pretrain, _add_mlm_loss):
        add(sub)
    return parser


# --------------------------------------------------------------------------- verbs


def _check_topics(args: argparse.Namespace) -> None:
    """--topics: refuse --eval and --split, and a bad topics file (named with its line), before any work."""
    if args.topics is None:
        return
    if args.eval:
        raise DupMAEEvalError(f"--eval: the queries of --topics {args.topics} have no judgments; score the run "
                              f"later with `dupmae-eval eval QRELS RUN`")
    if args.split is not None:
        raise DupMAEEvalError(f"--split {args.split} and --topics {args.topics}: a split names judged queries, a "
                              f"topics file replaces them; give one")
    from dupmae_eval.data.formats import read_topics

    read_topics(args.topics)


def _wrote(result, topics: Optional[Path]) -> str:
    if topics is None:
        return f"wrote {result.run_path} ({result.queries} queries)"
    return f"wrote {result.run_path} ({result.queries} queries from {topics}; no judgments, so not evaluated)"


def _cmd_bm25(args: argparse.Namespace) -> int:
    from dupmae_eval.files import check_output_file

    check_output_file(args.output)
    _check_topics(args)
    from dupmae_eval.retrieval.jobs import run_bm25

    result = run_bm25(args.dataset, split=args.split, fields=args.fields, output=args.output, k1=args.k1,
                      b=args.b, hits=args.hits, threads=args.threads,
                      keep_query_hit=args.keep_query_hit, tag=args.tag, topics=args.topics,
                      run_format=args.run_format)
    print(_wrote(result, args.topics), file=sys.stderr)
    if args.eval:
        from dupmae_eval.evaluation.measures import format_lines

        print("\n".join(format_lines(result.evaluate())))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dupmae_eval.files import check_output_file
    from dupmae_eval.options import translate

    check_output_file(args.output)
    _check_topics(args)
    if args.card:
        from dupmae_eval.training.cards import check_card_folder

        if not args.eval:
            raise DupMAEEvalError("--card needs --eval: the card gets the scores the evaluation measures")
        check_card_folder(args.model)
    from dupmae_eval.retrieval.jobs import run_model

    overrides, runner = translate(vars(args))
    result = run_model(args.dataset, args.model, args.encoder, args.retrieval, args.output, split=args.split,
                       tag=args.tag, topics=args.topics, run_format=args.run_format, **runner, **overrides)
    print(_wrote(result, args.topics), file=sys.stderr)
    if args.eval:
        from dupmae_eval.evaluation.measures import format_lines

        evaluation = result.evaluate()
        print("\n".join(format_lines(evaluation)))
        if args.card:
            from types import SimpleNamespace

            from dupmae_eval.training.cards import update_card_scores

            record = SimpleNamespace(condition=args.tag or f"{args.encoder}-{args.retrieval}",
                                     dataset=result.dataset.name, split=result.split, aggregate=evaluation.aggregate)
            print(f"updated {update_card_scores(Path(args.model).expanduser(), [record])}", file=sys.stderr)
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from dupmae_eval.encoding.corpus import encode_distributed
    from dupmae_eval.options import translate

    overrides, runner = translate(vars(args))
    folder = encode_distributed(args.dataset, args.model, args.encoder, **runner, **overrides)
    if os.environ.get("RANK", "0") == "0":    # under torchrun every rank returns the folder; one prints it
        print(folder)
    return 0


def _map_data(pairs) -> None:
    from dupmae_eval.data.datasets import map_local_folder

    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep:
            raise DupMAEEvalError(f"--data {pair!r}: expected NAME=FOLDER with an existing folder")
        map_local_folder(name, folder)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dupmae_eval.evaluation.runner import reproduce
    from dupmae_eval.shipped import suite_path

    from dupmae_eval.data.datasets import LOCAL_FOLDERS

    before = dict(LOCAL_FOLDERS)
    try:                                # the mapping holds for this command only, also when main() is called in-process
        _map_data(args.data)
        cards = _card_folders(suite_path(args.config), args.conditions) if args.card and not args.dry_run else {}
        verdicts = reproduce(suite_path(args.config), args.runs, args.datasets, args.conditions, args.dry_run,
                             force=args.force)
        if cards:
            _update_cards(suite_path(args.config), args, cards)
    finally:
        LOCAL_FOLDERS.clear()
        LOCAL_FOLDERS.update(before)
    return _summarise(verdicts)


def _card_folders(config, conditions) -> dict:
    """reproduce --card: condition -> the local model folder whose card it updates (checked before any work);
    a hub model's condition is named on stderr and left out."""
    from dupmae_eval.evaluation.suites import load_suite
    from dupmae_eval.training.cards import check_card_folder

    suite = load_suite(config, check_datasets=False)
    folders = {}
    for name, condition in suite.conditions.items():
        if (conditions and name not in conditions) or condition.kind != "model":
            continue
        model = str(condition.params.get("model"))
        if not Path(model).expanduser().is_dir():
            print(f"dupmae-eval: --card: condition {name}'s model {model} is not a local folder; its card is "
                  f"left alone", file=sys.stderr)
            continue
        folders[name] = check_card_folder(model)
    return folders


def _update_cards(config, args, cards: dict) -> None:
    """Each condition's metrics records (those this reproduce wrote or reused) into its model's card."""
    from dupmae_eval.evaluation.results import metrics_path_for, read_metrics
    from dupmae_eval.evaluation.runner import run_path_for
    from dupmae_eval.evaluation.suites import load_suite
    from dupmae_eval.training.cards import update_card_scores

    suite = load_suite(config, selected=args.datasets)
    for name, folder in cards.items():
        files = [metrics_path_for(run_path_for(args.runs, suite, cell)) for cell in suite.cells(args.datasets, [name])]
        records = read_metrics([file for file in files if file.is_file()]) if any(f.is_file() for f in files) else []
        if records:
            print(f"updated {update_card_scores(folder, records)}", file=sys.stderr)


def _summarise(verdicts) -> int:
    failed = sum(line.startswith("FAIL") for line in verdicts)
    if verdicts:
        print(f"{sum(line.startswith('OK') for line in verdicts)} OK, {failed} FAIL")
    return 1 if failed else 0


def _table_measures(given: Sequence[str], flag: str = "--measure") -> List[str]:
    """--measure values, repeated or comma-separated, in the order given; a measure twice is refused."""
    measures: List[str] = []
    for value in given:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                raise DupMAEEvalError(f"{flag} {value!r}: an empty measure name")
            if name in measures:
                raise DupMAEEvalError(f"{flag} {name} is given twice")
            measures.append(name)
    return measures


def _cmd_table(args: argparse.Namespace) -> int:
    from dupmae_eval.evaluation.measures import parse_measures
    from dupmae_eval.evaluation.results import read_metrics
    from dupmae_eval.evaluation.suites import describe_conditions, load_suite
    from dupmae_eval.evaluation.tables import TABLE_FORMATS, build_tables, render
    from dupmae_eval.shipped import suite_path

    # every flag checked before any file is read
    measures = _table_measures([*(args.measure or []), *(args.measure_list or [])] or ["nDCG@10"])
    parse_measures(measures)
    statistics = _statistics_flags(args)
    if not TABLE_FORMATS[args.format].several_measures and len(measures) > 1:
        raise DupMAEEvalError(f"--format {args.format} draws one measure; give one --measure")
    if TABLE_FORMATS[args.format].binary and args.output is None:
        raise DupMAEEvalError(f"--format {args.format} needs --output FILE")
    _check_qrels_file(args.qrels)
    suite = load_suite(suite_path(str(args.suite)), check_datasets=False) if args.suite else None
    table = build_tables(read_metrics(args.results, args.qrels, measures), measures, args.baseline, suite.references if suite else None,
                         order=list(suite.conditions) if suite else None,
                         described=describe_conditions(suite) if suite else None, **statistics)
    rendered = render(table, args.format)
    if args.output:
        from dupmae_eval.files import atomic_output

        with atomic_output(args.output, "wb" if isinstance(rendered, bytes) else "w") as out:
            out.write(rendered)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(rendered, end="")
    return 0


def _statistics_flags(args: argparse.Namespace) -> dict:
    """table's and report's --test, --correction and --alpha, checked (before any file is read), as keywords of
    `build_tables`; refused without --baseline, which they compare with."""
    from dupmae_eval.evaluation.statistics import DEFAULT_ALPHA, check_alpha, check_correction, check_test

    if args.baseline is None:
        given = [f"--{name}" for name in ("test", "correction", "alpha") if getattr(args, name) is not None]
        if given:
            raise DupMAEEvalError(f"{', '.join(given)} needs --baseline (the condition the others are compared with)")
    return dict(test=check_test(args.test or "t"), correction=check_correction(args.correction or "holm"),
                alpha=check_alpha(DEFAULT_ALPHA if args.alpha is None else args.alpha))


def _check_qrels_file(path: Optional[Path]) -> None:
    if path is not None and not path.is_file():
        raise DupMAEEvalError(f"--qrels {path}: no such file")


def _cmd_report(args: argparse.Namespace) -> int:
    from dupmae_eval.evaluation.measures import parse_measures
    from dupmae_eval.evaluation.report import build_report, write_report
    from dupmae_eval.evaluation.results import read_metrics_with_runs
    from dupmae_eval.evaluation.suites import load_suite
    from dupmae_eval.files import check_output_file
    from dupmae_eval.shipped import suite_path

    # every flag checked before any file is read
    check_output_file(args.output)
    measures = _table_measures(args.measures, "--measures") if args.measures else None
    if measures:
        parse_measures(measures)
    statistics = _statistics_flags(args)
    suite = load_suite(suite_path(str(args.suite)), check_datasets=False) if args.suite else None
    for path in args.results:
        if not path.exists():
            raise DupMAEEvalError(f"{path}: no such file or folder")
    _check_qrels_file(args.qrels)
    report = build_report(read_metrics_with_runs(args.results, args.qrels, measures or ()), suite, args.suite, args.baseline, measures,
                          inputs=[str(path) for path in args.results], **statistics)
    write_report(report, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _is_measure(text: str) -> bool:
    from dupmae_eval.evaluation.measures import parse_measures

    try:
        parse_measures([text])
    except DupMAEEvalError:
        return False
    return True


def _runs_and_measures(first: Path, more: Sequence[str]) -> tuple:
    """`eval QRELS RUN [RUN ...] [MEASURE ...]`: the leading existing files are runs, the rest measures."""
    from dupmae_eval.evaluation.measures import parse_measures

    runs, rest = [first], list(more)
    while rest and Path(rest[0]).is_file():
        runs.append(Path(rest.pop(0)))
    for item in rest:
        if Path(item).is_file():
            raise DupMAEEvalError(f"{item}: a run after the measures; give the runs first, then the measures")
        try:
            parse_measures([item])
        except DupMAEEvalError:
            if "/" in item or "." in item.split("@")[0].split("(")[0]:
                raise DupMAEEvalError(f"{item}: no such run file, and not an ir-measures measure "
                                      f"(e.g. nDCG@10 RR@10 R@1000 AP(rel=2))") from None
            raise
    return runs, rest


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from dupmae_eval.data.formats import read_run
    from dupmae_eval.evaluation.measures import check_coverage, evaluate_checked, format_lines, per_query_lines

    if not args.run.is_file() and _is_measure(str(args.run)):
        raise DupMAEEvalError(f"{args.run}: a measure where a run file belongs; give the runs first, then the "
                              f"measures (eval QRELS RUN [RUN ...] [MEASURE ...])")
    paths, measures = _runs_and_measures(args.run, args.more)
    qrels, default_measures = _load_qrels(args.qrels, args.split)
    runs = [read_run(path, args.run_format) for path in paths]     # every run read before any is scored
    measures = measures or list(default_measures)
    several = len(paths) > 1
    for path, run in zip(paths, runs):
        disagreement = None if set(qrels) <= set(run) else _sidecar_disagrees(path, args.qrels, args.split)
        if disagreement:           # a run answering every judged query is one of them (a sample's, a mirror's)
            print(f"dupmae-eval: warning: {disagreement}", file=sys.stderr, flush=True)
    hints = [_other_splits(args.qrels, args.split, run) for run in runs]
    for run, hint in zip(runs, hints):         # a run sharing no query is refused before any is scored
        check_coverage(qrels, run, measures, hint)
    evaluations = [evaluate_checked(qrels, run, measures, hint, label=f"{path}: " if several else "")
                   for path, run, hint in zip(paths, runs, hints)]
    if args.json:
        from dupmae_eval.evaluation.measures import named_values

        split = args.split
        if split is None and not Path(args.qrels).is_file():       # a registry name: the split it was scored on
            from dupmae_eval.data.datasets import REGISTRY

            info = REGISTRY.get(args.qrels)     # an irds: name keeps its split in the name
            split = info.default_split if info else None
            if info is None and not args.qrels.startswith("irds:"):       # a dataset folder, or a mapped name
                from dupmae_eval.data.datasets import resolve

                split = resolve(args.qrels, download=False).default_split
        report = {"qrels": args.qrels, "split": split, "measures": measures, "runs": [
            {"run": str(path), "queries": evaluation.run_queries, "judged_queries": evaluation.judged_queries,
             "values": named_values(evaluation, measures),
             **({"per_query": named_values(evaluation, measures, per_query=True)} if args.per_query else {})}
            for path, evaluation in zip(paths, evaluations)]}
        print(json.dumps(report, indent=2))
        return 0
    for path, evaluation in zip(paths, evaluations):
        prefix = f"{path}\t" if several else ""
        print("\n".join(prefix + line for line in format_lines(evaluation, measures)))
        if args.per_query:
            print("\n".join(prefix + line for line in per_query_lines(evaluation, measures)))
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    from dupmae_eval.files import check_output_file
    from dupmae_eval.retrieval.fusion import fuse_files, fusion_settings

    fusion = fusion_settings(args.method, len(args.runs), k=args.k, norm=args.norm, weights=args.weights)
    check_output_file(args.output)
    if any(Path(path).resolve() == args.output.resolve() for path in args.runs):
        raise DupMAEEvalError(f"--output {args.output} is one of the inputs; write the fused run elsewhere")
    fused = fuse_files(args.runs, fusion, args.output, tag=args.tag, hits=args.hits, input_format=args.input_format,
                       run_format=args.run_format,
                       warn=lambda line: print(f"dupmae-eval: warning: {line}", file=sys.stderr))
    print(f"wrote {args.output} ({len(fused)} queries, {fusion.method} of {len(args.runs)} runs)", file=sys.stderr)
    return 0


def _load_qrels(name_or_path: str, split: Optional[str]):
    """A qrels file, or a registry name's shipped judgments; with the measures that fit them."""
    from dupmae_eval.data.formats import read_qrels
    from dupmae_eval.data.datasets import BEIR_MEASURES, shipped_judgments

    path = Path(name_or_path)
    if path.is_file():
        return read_qrels(path), BEIR_MEASURES
    return shipped_judgments(name_or_path, split)


def _sidecar_disagrees(path: Path, qrels: str, split: Optional[str]) -> Optional[str]:
    """For a run whose sidecar names another dataset or split than the judgments `eval` was given (by name or
    folder), and which leaves judged queries out: what to warn. Query ids such as 1, 2, 3 recur across
    collections, so such a run is often not refused for sharing no query, and its low score would otherwise
    read as a result."""
    import json

    from dupmae_eval.data.datasets import REGISTRY, resolve

    if Path(qrels).is_file():
        return None                              # a judgments file names no dataset to compare with
    try:
        meta = json.loads(Path(f"{path}.meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("dataset"), str) or not meta.get("split"):
        return None                              # no sidecar, or one of a topics file's run
    if qrels.startswith("irds:"):
        name, used = qrels, None                 # an ir_datasets id is its own split
    elif qrels in REGISTRY:
        name, used = qrels, split or REGISTRY[qrels].default_split
    else:
        data = resolve(qrels, download=False)
        name, used = data.name, split or data.default_split
    if meta["dataset"] == name and (used is None or meta["split"] == used):
        return None
    return (f"{path}: its sidecar says it is a run of {meta['dataset']} (split {meta['split']}); it is scored "
            f"here against {name}" + (f" (split {used})" if used else ""))


def _other_splits(name: str, split: Optional[str], run) -> str:
    """For a registry name: the hint that names the shipped splits, and the one judging the run's
    queries if there is one (a DL19 run scored against the default dev-subset judgments)."""
    from dupmae_eval.data.formats import read_qrels
    from dupmae_eval.data.datasets import REGISTRY, SHIPPED_QRELS

    info = REGISTRY.get(name)
    if info is None or Path(name).is_file():
        return "; is it a run of this collection?"
    used = split or info.default_split
    others = [other for other in info.shipped if other != used]
    if not others:
        return f"; is it a run of {name}?"
    matching = [other for other in others if set(run) & set(read_qrels(SHIPPED_QRELS / info.shipped[other][0]))]
    if matching:
        return f"; the run's queries are judged in {name}'s split {matching[0]!r}: add --split {matching[0]}"
    return f"; {name}'s splits: {', '.join(info.shipped)} (--split), and this is {used!r}"


def _cmd_datasets(args: argparse.Namespace) -> int:
    from dupmae_eval.data.datasets import AVAILABILITY, catalogue

    rows = catalogue()
    if args.json:
        import json

        print(json.dumps(rows, indent=1))
        return 0
    header = ("dataset", "split", "passages", "queries", "data", "measures")
    table = [header] + [(row["dataset"], (row["split"] or "-") + ("*" if row["default"] else ""),
                         f"{row['passages']:,}" if row["passages"] else "-",
                         f"{row['queries']:,}" + ("" if row["judged"] else " (topics only)") if row["queries"]
                         else "-", row["data"], " ".join(row["measures"]) or "-") for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    right = (False, False, True, True, False, False)
    for line in table:
        cells = [cell.rjust(width) if align else cell.ljust(width) for cell, width, align in zip(line, widths, right)]
        print("  ".join(cells).rstrip())
    print()
    print("*         the default split (used when --split is not given)")
    print("passages  the corpus's size as its publisher lists it")
    print("queries   the split's judged queries, in the judgments shipped with the package ('topics only': "
          "none shipped, its topics counted)")
    print("data      where the data comes from:")
    width = max(map(len, AVAILABILITY))
    for word, meaning in AVAILABILITY.items():
        print(f"  {word.ljust(width)}  {meaning}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dupmae_eval.evaluation.suites import describe_conditions, load_suite
    from dupmae_eval.evaluation.tables import build_table, render
    from dupmae_eval.evaluation.runner import reproduce
    from dupmae_eval.evaluation.report import build_report, write_report
    from dupmae_eval.evaluation.results import read_metrics_with_runs
    from dupmae_eval.shipped import suite_path

    suite = load_suite(suite_path("demo"))
    status = _summarise(reproduce(suite.path, args.runs))
    found = read_metrics_with_runs([args.runs / suite.name])
    table = build_table([record for record, _ in found], "nDCG@10", "bm25-flat", suite.references,
                        order=list(suite.conditions), described=describe_conditions(suite))
    print()
    print(render(table, "md"), end="")
    report_path = args.runs / suite.name / "report.html"
    write_report(build_report(found, suite, "demo", "bm25-flat", inputs=[str(args.runs / suite.name)]), report_path)
    print(f"\nreport (every measure, significance, charts, provenance; open it in a browser): {report_path}")
    return status


def _cmd_finetune(args: argparse.Namespace) -> int:
    from dupmae_eval.training.settings import FIELDS, load_recipe, make_settings
    from dupmae_eval.training.finetune import finetune

    recipe = load_recipe(args.recipe) if args.recipe else {}
    settings = make_settings(recipe, **{name: getattr(args, name) for name in FIELDS})
    output = finetune(args.model, args.dataset, args.output, settings, command=_command(args))
    if os.environ.get("RANK", "0") == "0":
        print(f"fine-tuned model: {output}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from dupmae_eval.training.pretrain import FIELDS, load_pretrain_recipe, make_pretrain_settings, pretrain

    recipe = load_pretrain_recipe(args.recipe) if args.recipe else {}
    settings = make_pretrain_settings(recipe, **{name: getattr(args, name) for name in FIELDS})
    output = pretrain(args.model, args.corpus, args.output, settings, command=_command(args))
    if os.environ.get("RANK", "0") == "0":
        print(f"pre-trained model: {output}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line as typed, for a model card."""
    from dupmae_eval.training.cards import command_line

    return command_line(args.argv)


def _cmd_mlm_loss(args: argparse.Namespace) -> int:
    import itertools

    from dupmae_eval.encoding.checkpoint import read_masked_lm, resolve_checkpoint
    from dupmae_eval.training.mlm_loss import masked_lm_loss
    from dupmae_eval.training.finetune_model import _tokenizer
    from dupmae_eval.training.pretrain_data import read_texts

    if args.max_length < 3:
        raise DupMAEEvalError("--max-length must leave room for [CLS], one token and [SEP]")
    if not args.texts.is_file():
        raise DupMAEEvalError(f"--texts {args.texts}: no such file")
    folder, _ = resolve_checkpoint(args.model)
    masked_lm, _ = read_masked_lm(folder, args.model, need_mlm_head=True, lengths={"max_length": args.max_length})
    texts = itertools.islice(read_texts(str(args.texts)), args.limit)
    result = masked_lm_loss(masked_lm, _tokenizer(folder), texts, ratio=args.ratio, seed=args.seed,
                            max_length=args.max_length, batch_size=args.batch_size)
    if result.masked_tokens == 0:
        raise DupMAEEvalError(f"--texts {args.texts}: no token was masked (no text, or texts too short)")
    print(result.line())
    return 0


def _raise_terminated(signum, frame):
    from dupmae_eval.errors import Terminated

    raise Terminated()


def _end_interrupted(code: int, argv) -> int:
    """After an interruption, once the unwinding has removed scratch folders and temporary files: the command
    line ends the process here (os._exit), because the interpreter's normal exit can abort in native code
    the signal cut short (a library whose import was interrupted, Lucene's threads still running). Called
    from Python (argv given), it returns the code, unless a Java call is still running."""
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return _exit_now_if_java_is_busy(code)


def _exit_now_if_java_is_busy(code: int) -> int:
    """After an interruption, a Java call may still be running in its worker thread (`_java.call_interruptibly`):
    the interpreter's normal exit would wait for Lucene's own threads, so the process ends here at once."""
    import threading

    if any(thread.name == "dupmae-eval-java" and thread.is_alive() for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """`parser.parse_args`, but `eval`'s runs and measures may stand on both sides of its flags (`eval QRELS
    RUN --per-query AP`): argparse closes a `nargs='*'` positional at the first flag and calls what follows
    unrecognised, so the words left after the flags are added to them. Anything else left over is refused
    as parse_args refuses it."""
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "verb", None) == "eval":
        args.more = [*args.more, *(word for word in extras if not word.startswith("-"))]
        extras = [word for word in extras if word.startswith("-")]
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    import signal
    import threading

    from dupmae_eval.errors import Terminated

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args = _parse(build_parser(), argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return args.handler(args)
    except DupMAEEvalError as exc:
        print(f"dupmae-eval: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:             # the reader of standard output stopped (`| head`): nothing went wrong here
        if argv is None:                # the command line: the interpreter's last flush must not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141                      # 128 + SIGPIPE, as a shell reports a command its pipe ended
    except OSError as exc:              # the machine's, not the input's: a full disk, a file-size limit, rights
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"dupmae-eval: error: {where}{exc.strerror or exc} (nothing half-written was kept; free the space "
              f"or fix the rights, then run the same command again)", file=sys.stderr)
        return 2
    except Exception as exc:
        # Lucene failing to write its index; safetensors failing to write weights (a full disk, a size limit)
        if type(exc).__name__ not in ("JavaException", "SafetensorError"):
            raise
        what = "Lucene" if type(exc).__name__ == "JavaException" else "writing weights"
        print(f"dupmae-eval: error: {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
              f"(nothing half-written was kept; run the same command again)", file=sys.stderr)
        return _exit_now_if_java_is_busy(2)
    except Terminated:
        print("dupmae-eval: terminated (SIGTERM); finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return _end_interrupted(143, argv)
    except KeyboardInterrupt:
        print("dupmae-eval: interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return _end_interrupted(130, argv)
    finally:
        if previous is not None and argv is not None:     # called from Python (tests, notebooks): as it was
            signal.signal(signal.SIGTERM, previous)
        elif previous is not None:
            # the command line: the work is done and written, the process is shutting down (torch, the JVM).
            # Python hands its own handlers back to the default action while it finalizes, so a signal landing
            # then would end a finished command by the signal; ignored signals it leaves alone
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
