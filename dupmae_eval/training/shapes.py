"""Model shapes: a BERT with random weights, for pre-training from scratch.

`pretrain --model` takes a checkpoint (hub name or folder) or a shape: a registered name (`bert-mini`, or
`shape:bert-mini`), or a `config.json` file. A shape is built as a BertForMaskedLM with BERT's
initialisation drawn from the run's seed (same seed, same weights), with the bert-base-uncased tokenizer
shipped in the package (`resources/tokenizers/bert-base-uncased`, 30,522 entries).

The named shapes are those of Turc et al. 2019 ("Well-Read Students Learn Better"), the small BERTs Google
released as google/bert_uncased_L-{layers}_H-{hidden}_A-{heads}: heads of 64 dimensions, feed-forward 4 x
hidden, 512 positions. Only the shape is taken from them, never their weights.

Why a registry and a prefix: a bare name that is not a shape goes to the hub as before (`bert-base-uncased`
is a real checkpoint, with weights); `shape:NAME` says a shape is meant, so a misspelt one is refused with
the list instead of going to the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.registry import Registry

PREFIX = "shape:"
TOKENIZER = ("tokenizers", "bert-base-uncased")       # under the package's resources/
VOCABULARY = 30522


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    summary: str

    def config(self) -> dict:
        """A BertConfig dict: BERT's own settings at this depth and width."""
        return {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": VOCABULARY,
                "hidden_size": self.hidden, "num_hidden_layers": self.layers,
                "num_attention_heads": self.hidden // 64, "intermediate_size": 4 * self.hidden,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
                "layer_norm_eps": 1e-12, "pad_token_id": 0, "tie_word_embeddings": True}


SHAPES: Registry = Registry("model shape")
for _shape in (ModelShape("bert-tiny", 2, 128, "2 layers x 128 (4.4M parameters, 3.9M of them the vocabulary)"),
               ModelShape("bert-mini", 4, 256, "4 layers x 256 (11.2M parameters; 22 MB in fp16)"),
               ModelShape("bert-small", 4, 512, "4 layers x 512 (28.8M parameters)"),
               ModelShape("bert-medium", 8, 512, "8 layers x 512 (41.4M parameters)"),
               ModelShape("bert-base", 12, 768, "12 layers x 768 (BERT-base's shape, 110M parameters)")):
    SHAPES.register(_shape)


@dataclass(frozen=True)
class ShapeSource:
    """What `--model` named when it named a shape: the config to build and where it came from."""

    config: dict
    origin: str            # "shape bert-mini" or the config file's path


def shape_source(model: str) -> Optional[ShapeSource]:
    """The shape `model` names, or None when it names a checkpoint (a folder or a hub name). Refuses
    an unknown `shape:` name and a config file that is not a BERT config, with one line."""
    if model.startswith(PREFIX):
        return ShapeSource(SHAPES.lookup(model[len(PREFIX):]).config(), f"shape {model[len(PREFIX):]}")
    if model in SHAPES and not Path(model).expanduser().exists():
        return ShapeSource(SHAPES[model].config(), f"shape {model}")
    path = Path(model).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise DupMAEEvalError(f"--model {model}: no such config file")
        return ShapeSource(read_config(path), str(path))
    return None


def read_config(path: Path) -> dict:
    """A BERT `config.json` as a shape: valid JSON, model_type bert, the shipped tokenizer's vocabulary."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DupMAEEvalError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DupMAEEvalError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict):
        raise DupMAEEvalError(f"{path}:1: a config is a JSON object")
    if config.get("model_type", "bert") != "bert":
        raise DupMAEEvalError(f"{path}: model_type {config.get('model_type')!r}; only BERT shapes can be built")
    vocabulary = config.get("vocab_size", VOCABULARY)
    if vocabulary != VOCABULARY:
        raise DupMAEEvalError(f"{path}: vocab_size {vocabulary}; a shape uses the shipped bert-base-uncased "
                              f"tokenizer of {VOCABULARY} entries")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DupMAEEvalError(f"{path}: {key} must be a positive whole number (got {value!r})")
    hidden, heads = config.get("hidden_size", 768), config.get("num_attention_heads", 12)
    if hidden % heads:
        raise DupMAEEvalError(f"{path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return {**config, "model_type": "bert", "vocab_size": VOCABULARY}


def shape_tokenizer():
    """The shipped bert-base-uncased tokenizer."""
    from transformers import AutoTokenizer

    from dupmae_eval.shipped import resource_path

    return AutoTokenizer.from_pretrained(str(resource_path(*TOKENIZER)))


def random_masked_lm(config: dict, seed: int):
    """A BertForMaskedLM of this config with BERT's initialisation (normal(0, initializer_range) weights, zero
    biases, unit LayerNorms) drawn from `seed` alone: the global random state is set for the build and
    restored afterwards, so the same seed gives the same weights in any process."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    try:
        bert_config = BertConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise DupMAEEvalError(f"model config: {exc}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(bert_config)
    model.train()
    return model
