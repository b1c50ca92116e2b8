"""The one translation from command-line options and suite-YAML keys to settings.

A model condition in a suite and the `run` verb take the same options under the same names
(`topk`, `exclude_sep`, ... in YAML; `--topk`, `--exclude-sep`, ... on the command line). Each
option is declared once here: its flag, its help, and where its value goes — an `EncoderSettings`
field (part of the encoding's cache key) or a keyword of the runner. The CLI builds its arguments
from this table and the YAML validation takes its keys from it, so the three cannot drift apart.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from dupmae_eval.encoding.checkpoint import ACTIVATIONS
from dupmae_eval.retrieval.modes import HYBRID_AUDIT_CHOICES, HYBRID_AUDIT_MAX_DOCUMENTS


import math

# Range validators: argparse `type=` functions (the message argparse prints after the flag's name) that
# take a YAML value as well (`translate` calls them, naming the key). One per kind of range, so a flag
# and the suite key that reaches the same setting are refused alike, before any long work.


def _whole(value) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _real(value) -> float:
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return number


def positive_int(value) -> int:
    """A whole number of at least 1 (batch sizes, hits, threads, shard sizes, token lengths)."""
    number = _whole(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def positive_float(value) -> float:
    """A number above 0 (the impact quantisation scale: 0 would round every weight to nothing)."""
    number = _real(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{number:g} must be above 0")
    return number


def nonnegative_float(value) -> float:
    """A number of at least 0 (BM25's k1)."""
    number = _real(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number:g} must be at least 0")
    return number


def unit_interval(value) -> float:
    """A number in [0, 1] (BM25's b)."""
    number = _real(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number:g} must be between 0 and 1")
    return number


def run_tag(value) -> str:
    """A run tag (`--tag`): the rule `write_run` applies (`formats.run_tag_problem`), checked when the flag is
    parsed, so a tag with a space is refused before the index, the encoding or the search, not after them."""
    from dupmae_eval.data.formats import check_run_tag
    from dupmae_eval.errors import DupMAEEvalError

    try:
        return check_run_tag(str(value), "")
    except DupMAEEvalError as exc:
        raise argparse.ArgumentTypeError(str(exc).lstrip()) from None


def check_bm25_settings(where: str = "", **values) -> None:
    """k1, b and hits of a BM25 run in the ranges the bm25 verb's flags accept (the same validators), and a
    field layout: for a suite's bm25 condition and the Python API, which have not met argparse. `where`
    prefixes the one-line error (a file and condition)."""
    from dupmae_eval.errors import DupMAEEvalError

    for key, check in (("k1", nonnegative_float), ("b", unit_interval), ("hits", positive_int)):
        if key in values:
            try:
                check(values[key])
            except argparse.ArgumentTypeError as exc:
                raise DupMAEEvalError(f"{where}{key}: {exc}") from None
    if values.get("fields", "flat") not in ("flat", "multifield"):
        raise DupMAEEvalError(f"{where}fields: {values['fields']!r}; choose flat or multifield")


def device_value(value) -> str:
    """cpu, cuda or cuda:N; a CUDA device only where torch sees one, so the refusal comes before the
    model is loaded and the corpus read, not at the first batch. torch is imported only for cuda."""
    text = str(value)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda or cuda:N")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine (torch "
                                             f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'})")
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA "
                                             f"device(s)")
    return text


def topk_value(value):
    """A top-k as typed: a positive number or 'all' (every entry)."""
    if value == "all":
        return "all"
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number or 'all'") from None


@dataclass(frozen=True)
class Option:
    """One option of a model run: `key` in YAML, `--key-with-dashes` on the command line."""

    key: str
    target: str                                   # EncoderSettings field or runner keyword
    help: str
    encoder: bool = True                          # True: an EncoderSettings override
    type: Optional[Callable] = None               # argparse type; None with `flag`
    flag: bool = False                            # a switch (store_true)
    choices: Optional[Tuple[str, ...]] = None
    default: Any = None                           # the runner's default (encoder options: the kind's)
    metavar: Optional[str] = None                 # what the flag's value is, in --help (N, FLOAT, ...)
    convert: Callable[[Any], Any] = lambda value: value   # value as given -> value for the target

    @property
    def cli(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: Dict[str, Option] = {option.key: option for option in (
    Option("activation", "activation", "on the pooled MLM logits (default: the kind's, none for dupmae, "
           "log1p_relu for splade)", choices=ACTIVATIONS),
    Option("topk", "doc_topk", "document sparse entries kept (default 384 for dupmae, all for splade); "
           "a number or 'all'", type=topk_value, metavar="{N,all}"),
    Option("query_topk", "query_topk", "query sparse entries kept (default all)", type=topk_value,
           metavar="{N,all}"),
    Option("exclude_sep", "include_sep", "leave [SEP] out of the OT pooling", flag=True,
           convert=lambda value: False if value else None),
    Option("normalize", "normalize", "L2-normalise the dense half", flag=True,
           convert=lambda value: True if value else None),
    Option("max_query_length", "max_query_length", "query tokens (default 64)",
           type=positive_int, metavar="N"),
    Option("max_passage_length", "max_passage_length", "passage tokens (default 256)",
           type=positive_int, metavar="N"),
    Option("batch_size", "batch_size", "texts per forward pass (default 32)", encoder=False, type=positive_int,
           default=32, metavar="N"),
    Option("device", "device", "where the model runs: cpu, cuda or cuda:N (default: cpu)", encoder=False,
           type=device_value, metavar="{cpu,cuda,cuda:N}"),
    Option("compile", "compile", "run the BERT encoder under torch.compile (fused kernels: for long GPU encodes; "
           "the first batch waits for the compile)", encoder=False, flag=True, default=False),
    Option("precision", "precision", "fp32, bf16 (matrix products in bfloat16, sums in fp32: several times "
           "faster on CPUs with AVX512-BF16 or AMX) or auto (bf16 where the device has it); default: fp32 on a "
           "CPU, bf16 on a GPU", encoder=False, choices=("fp32", "bf16", "auto")),
    Option("shard_size", "shard_size", "passages per encoding shard (default 10,000)", encoder=False,
           type=positive_int, default=10_000, metavar="N"),
    Option("faiss_shards", "faiss_shards", "dense and hybrid: search one faiss index per shard and merge (a "
           "dense half larger than memory)", encoder=False, flag=True, default=False),
    Option("quantization_scale", "quantization_scale", "impact weights are round(weight * scale) (default 100, "
           "as Pyserini's SPLADE)", encoder=False, type=positive_float, default=100.0, metavar="FLOAT"),
    Option("hybrid_audit", "hybrid_audit", f"hybrid: compare with brute force (auto: only up to "
           f"{HYBRID_AUDIT_MAX_DOCUMENTS:,} documents)", encoder=False, choices=HYBRID_AUDIT_CHOICES, default="auto"),
    Option("hits", "hits", "hits per query (default 1000)", encoder=False, type=positive_int, default=1000,
           metavar="N"),
    Option("threads", "threads", "search/index threads (default: all cores)", encoder=False,
           type=positive_int, metavar="N"),
    Option("keep_query_hit", "keep_query_hit", "keep the hit whose id equals the query id (BEIR removes it; "
           "default: removed for BEIR-layout data, kept for MS MARCO)", encoder=False, flag=True, default=False),
)}

ENCODE_OPTIONS = ("batch_size", "device", "compile", "precision", "shard_size")
"""The runner options that the `encode` verb takes too (the rest are about searching)."""


def add_arguments(parser: argparse.ArgumentParser, runner: Tuple[str, ...] | None = None) -> None:
    """Add every encoder option, and the runner options named in `runner` (all of them when None)."""
    for option in OPTIONS.values():
        if not option.encoder and runner is not None and option.key not in runner:
            continue
        if option.flag:
            parser.add_argument(option.cli, action="store_true", help=option.help)
        else:
            parser.add_argument(option.cli, type=option.type, choices=option.choices, metavar=option.metavar,
                                default=None if option.encoder else option.default, help=option.help)


def translate(values: Mapping[str, Any]) -> Tuple[dict, dict]:
    """Option values (an argparse namespace's vars, or a YAML condition's keys) -> (EncoderSettings
    overrides, runner keywords). Unknown keys are ignored here; the YAML validation refuses them. Values
    go through the option's validator and choices (a YAML value has not met argparse), so `hits: 0`
    is refused naming the key, as `--hits 0` is naming the flag."""
    encoder, runner = {}, {}
    for key, value in values.items():
        option = OPTIONS.get(key)
        if option is None:
            continue
        value = _checked(option, value)
        converted = option.convert(value)
        if option.encoder:
            if converted is not None:
                encoder[option.target] = converted
        elif converted is not None:
            runner[option.target] = converted
    return encoder, runner


def _checked(option: Option, value):
    """`value` through the option's range and choices; an error names the key (the caller adds the file)."""
    from dupmae_eval.errors import DupMAEEvalError

    if value is None:
        return None
    if option.flag:
        if not isinstance(value, bool):
            raise DupMAEEvalError(f"{option.key}: {value!r} is not true or false")
        return value
    if option.choices is not None and value not in option.choices:
        raise DupMAEEvalError(f"{option.key}: {value!r} is not one of {', '.join(option.choices)}")
    if option.type is not None:
        try:
            return option.type(value)
        except argparse.ArgumentTypeError as exc:
            raise DupMAEEvalError(f"{option.key}: {exc}") from None
    return value
