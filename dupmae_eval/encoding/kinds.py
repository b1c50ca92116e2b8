"""Encoder kinds: how one model forward becomes a dense and/or a sparse half. One entry per kind.

This table is the only place where a kind is named and described; the CLI's choices, the suite
YAML's validation, the settings' defaults, the pooling and the encoding's halves all read it.
Adding a kind is one `register_encoder_kind(EncoderKind(...))` call (a test does exactly that).

| kind   | dense half                 | sparse half (MLM head, max over tokens)                 |
|--------|----------------------------|---------------------------------------------------------|
| dupmae | [CLS] (-> projection)      | ordinary tokens ([CLS], padding out; [SEP] in), raw logits, doc top-384 |
| cls    | [CLS] (-> projection)      | none (RetroMAE and other CLS-pooled bi-encoders)         |
| mean   | mean over tokens (+ L2)    | none (sentence-transformers style)                       |
| splade | none                       | every non-padding token incl. [CLS]/[SEP], log(1+relu), all entries |
| ot     | none                       | as dupmae's (the OT half alone: the paper's Table 4 "OT" row)          |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from dupmae_eval.registry import Registry


@dataclass(frozen=True)
class EncoderKind:
    """One representation read off a BERT forward pass."""

    name: str
    dense_pooling: Optional[str]               # "cls", "mean" (model.PoolingSettings.dense) or None: no dense half
    sparse: bool                               # an MLM-head (OT) half
    summary: str                               # one line for --help and the docs
    pools_cls: bool = False                    # the sparse max sees [CLS] too (SPLADE); DupMAE's OT leaves it out
    always_pools_sep: bool = False             # [SEP] pooled whatever --exclude-sep says (SPLADE)
    defaults: Mapping[str, Any] = field(default_factory=dict)   # EncoderSettings fields this kind changes

    @property
    def dense(self) -> bool:
        return self.dense_pooling is not None


ENCODER_KINDS: Registry[EncoderKind] = Registry("encoder")
register_encoder_kind = ENCODER_KINDS.register
encoder_kind = ENCODER_KINDS.lookup


register_encoder_kind(EncoderKind(
    "dupmae", dense_pooling="cls", sparse=True,
    summary="DupMAE: [CLS] (through the head file's projection) + OT max-pooled MLM logits, doc top-384"))
register_encoder_kind(EncoderKind(
    "cls", dense_pooling="cls", sparse=False, defaults={"doc_topk": None},
    summary="[CLS] only (RetroMAE and other CLS-pooled bi-encoders)"))
register_encoder_kind(EncoderKind(
    "mean", dense_pooling="mean", sparse=False, defaults={"doc_topk": None},
    summary="mean pooling (sentence-transformers style; --normalize for L2)"))
register_encoder_kind(EncoderKind(
    "splade", dense_pooling=None, sparse=True, pools_cls=True, always_pools_sep=True,
    defaults={"activation": "log1p_relu", "doc_topk": None},
    summary="SPLADE: max over every token of log(1 + relu(MLM logits)), all entries, no dense half"))
register_encoder_kind(EncoderKind(
    "ot", dense_pooling=None, sparse=True,
    summary="DupMAE's OT half alone: max-pooled MLM logits of the ordinary tokens, doc top-384 (Table 4's OT row)"))
