"""Activation recomputation of the encoder (what the backward recomputes instead of keeping), one registry
entry per mode, shared by `pretrain` and `finetune`.

At BERT-base size the encoder's saved activations, not the objective's vocabulary products, are most of a
training step's memory once those products are blockwise (docs/performance.md, "One pre-training step", measures it). Every mode
goes through transformers' own activation checkpointing, non-reentrant with the RNG state kept, so dropout
draws the same masks when a layer is recomputed and the gradients do not change; recomputation acts only
in training mode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.registry import Registry


@dataclass(frozen=True)
class Recompute:
    """What the encoder keeps of a layer's activations for the backward (the rest is recomputed there)."""

    name: str
    keep: Optional[str]    # None: everything; "products": matrix products and attention; "inputs": layer inputs
    summary: str


RECOMPUTE: Registry = Registry("activation recompute mode")
for _mode in (
        Recompute("none", None, "keep every activation (no recomputation)"),
        Recompute("elementwise", "products",
                  "keep each layer's linear and attention outputs, recompute the elementwise ops between them "
                  "(GELU, LayerNorm, sums, dropout): at BERT-base size about a seventh less step memory "
                  "for a few elementwise passes"),
        Recompute("layers", "inputs", "keep each layer's input, recompute the whole layer (about a third more "
                                      "encoder compute; the least memory)")):
    RECOMPUTE.register(_mode)


def _product_ops() -> frozenset:
    """The aten ops whose outputs `elementwise` keeps: matrix products (what `Linear` dispatches to) and the
    fused attention kernels of each backend (recomputing them would cost as much as the forward did)."""
    aten = torch.ops.aten
    names = ("mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable")
    return frozenset(getattr(aten, name).default for name in names if hasattr(aten, name))


_PRODUCTS = _product_ops()


def _keep_products(ctx, op, *args, **kwargs):
    """Selective-checkpointing policy: keep products, recompute everything else."""
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in _PRODUCTS else CheckpointPolicy.PREFER_RECOMPUTE


def recompute_encoder(masked_lm, mode: str, first: int = -1) -> None:
    """Set a BertForMaskedLM's encoder layers to `mode` (`RECOMPUTE`): `elementwise` keeps each layer's
    products (linear layers, attention) and recomputes what lies between them (torch's selective
    checkpointing), `layers` keeps only each layer's input (gradient checkpointing), `none` changes nothing.

    first: apply the mode to the encoder's first `first` layers only and let the others keep everything
    (-1: every layer). The trade is then per layer: at BERT-base size, 16 x 256 tokens, each layer left
    whole keeps about 180 MB more for the backward and saves its recomputation (docs/performance.md), so
    a run whose memory bound leaves room spends it on speed. The first layers are the ones recomputed (as
    Megatron's `block` method chooses): the backward reaches them last, after the layers kept whole have
    freed their activations, so a recomputed layer's transient never adds to them."""
    entry = RECOMPUTE.lookup(mode)
    layers = encoder_layers(masked_lm)
    if first >= 0:
        check_recompute_first(first, len(layers))
    if entry.keep is None:
        return
    kwargs: Dict[str, object] = {"use_reentrant": False}
    if entry.keep == "products":
        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _keep_products)
    # the newer transformers 5.x name (the old one warns that it goes in v6); older 5.x has only the old one
    enable = getattr(masked_lm, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        masked_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if first >= 0:
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = index < first


def encoder_layers(masked_lm) -> list:
    """The encoder's layers in order (each a transformers `GradientCheckpointingLayer`, which reads its own
    `gradient_checkpointing` flag at every call)."""
    return list(masked_lm.bert.encoder.layer)


def check_recompute_first(first: int, layers: Optional[int] = None) -> None:
    """`recompute_first` is -1 (every layer) or a layer count (0 up to the encoder's depth when known)."""
    if first < -1 or (layers is not None and first > layers):
        limit = f"0 to {layers}" if layers is not None else "0 or more"
        raise DupMAEEvalError(f"recompute_first {first}: -1 (every layer) or {limit} layers")
