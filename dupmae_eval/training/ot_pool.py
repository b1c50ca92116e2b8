"""The OT max-pool with gradients, without the batch x length x vocabulary logits.

DupMAE's sparse half is μ = max over a text's ordinary tokens of the MLM head's vocabulary
logits. Autograd through that max keeps the whole logits tensor for the backward pass (and
makes a second one for its gradient): for a fine-tuning batch of 8 queries x (1 + 7) passages
at 140 tokens on BERT's 30,522-entry vocabulary that is 8,960 rows x 30,522 x 4 B = 1.1 GB each.

Here the forward projects the pooled token rows onto the vocabulary a chunk of entries at a time
(a tile of at most 16M logits) and keeps, per text and vocabulary entry, only the maximum and the
row it came from (its argmax). The max passes its gradient to that one row, so
the backward is a sparse product: d rows = G @ W and d W = Gᵀ @ rows with G holding
B x V non-zeros (one per text and entry) instead of a dense rows x V matrix, and d bias is the
column sum of the incoming gradient. Memory is O(B x V) instead of O(rows x V).

A text with no pooled position (an empty passage with [SEP] left out) gets 0 everywhere and no
gradient: inference writes such a text as an empty sparse vector, which scores 0 too. Ties
between rows go to the first row seen (autograd's `amax` would split the gradient among them).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Optional

import torch

from dupmae_eval.encoding.checkpoint import pooled_positions

_TILE_ELEMENTS = 1 << 24   # logits computed at once: all token rows x as many vocabulary entries as fit (64 MB fp32)
_TILE_ELEMENTS_GPU = 1 << 27   # on a GPU: fewer, larger launches (512 MB fp32; the full logits of a 256 x 140 batch are 4.4 GB)


def ot_max_pool(mlm_head, hidden: torch.Tensor, mask: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """max over the positions in `mask` of `mlm_head(hidden)`, B x V (fp32, or the hidden states' dtype if
    wider), differentiable in the encoder's hidden states and the head's parameters (transform, decoder
    weight and bias).

    hidden: B x L x h last hidden states; mask: B x L bool (which positions are pooled); chunk: vocabulary
    entries projected at once (default: as many as keep the logits tile of every pooled row at 16M values)."""
    decoder = mlm_head.decoder
    bias = decoder.bias if decoder.bias is not None else mlm_head.bias
    rows = mlm_head.transform(hidden[mask])
    positions = pooled_positions(mask)   # a text with nothing pooled has -1 (its result is set to 0 below)
    vocab = decoder.weight.shape[0]
    tile = _TILE_ELEMENTS_GPU if rows.device.type == "cuda" else _TILE_ELEMENTS
    chunk = chunk or max(256, min(vocab, tile // max(1, rows.shape[0])) // 128 * 128)  # 128-aligned: fast GEMM tiles
    segments = None
    if rows.device.type not in GATHERING_DEVICES:
        stops = list(itertools.accumulate(mask.sum(dim=1).tolist()))     # `hidden[mask]` keeps texts in order
        segments = list(zip([0] + stops[:-1], stops))
    return _ChunkedMaxPool.apply(rows, decoder.weight, bias, positions, chunk, segments)


GATHERING_DEVICES = ("cuda",)   # one gather and one max per chunk; elsewhere a max per text over its own rows


class _ChunkedMaxPool(torch.autograd.Function):
    """rows (R x h), weight (V x h), bias (V), positions (B x width) -> B x V maxima of rows @ weightᵀ + bias
    over each text's rows; the argmax row of every (text, entry) is kept for the backward."""

    @staticmethod
    def forward(ctx, rows, weight, bias, positions, chunk: int, segments=None):
        from dupmae_eval.runtime import onednn

        vocab = weight.shape[0]
        dtype = torch.promote_types(rows.dtype, torch.float32)   # fp32 at least (bf16 tiles under GPU autocast)
        pooled = torch.empty((positions.shape[0], vocab), dtype=dtype, device=rows.device)
        argmax = torch.empty((positions.shape[0], vocab), dtype=torch.long, device=rows.device)
        if rows.shape[0] == 0:                                       # nothing pooled in the whole batch
            ctx.save_for_backward(rows, weight, argmax.fill_(-1))
            ctx.has_bias = bias is not None
            return pooled.zero_()
        nothing = positions[:, :1] < 0                               # a text with no pooled position
        safe = positions.clamp(min=0)
        for low in range(0, vocab, chunk):
            high = min(low + chunk, vocab)
            logits = onednn.vocabulary_linear(rows, weight[low:high], None if bias is None else bias[low:high])
            if segments is None:                        # one gather of every text's rows (texts x longest x chunk)
                values, where = logits[safe].max(dim=1)     # in the logits' dtype (bf16 under autocast: a max is
                pooled[:, low:high] = values                # exact there); ties: the first row (torch.max's rule)
                argmax[:, low:high] = safe.gather(1, where)
                continue
            for text, (first, stop) in enumerate(segments):   # a text's rows are contiguous in `rows`: views
                if stop > first:
                    values, where = logits[first:stop].max(dim=0)
                    pooled[text, low:high] = values
                    argmax[text, low:high] = where + first
        nothing = nothing.expand_as(argmax)
        pooled[nothing] = 0.0
        argmax[nothing] = -1
        ctx.save_for_backward(rows, weight, argmax)
        ctx.has_bias = bias is not None
        ctx.compute_dtype, ctx.chunk = logits.dtype, chunk
        return pooled

    @staticmethod
    def backward(ctx, grad):
        rows, weight, argmax = ctx.saved_tensors
        if rows.device.type in CHUNKED_BACKWARD_DEVICES and rows.shape[0] > 0:
            return _backward_by_chunks(ctx, grad, rows, weight, argmax)
        pooled_from = argmax >= 0
        text, entry = pooled_from.nonzero(as_tuple=True)
        dtype = grad.dtype
        row, values = argmax[text, entry], grad[text, entry]
        d_rows = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_rows = _sparse_rows(row, entry, values, (rows.shape[0], weight.shape[0])).mm(weight.to(dtype))
            d_rows = d_rows.to(rows.dtype)
        if ctx.needs_input_grad[1]:
            d_weight = _sparse_rows(entry, row, values, (weight.shape[0], rows.shape[0])).mm(rows.to(dtype))
            d_weight = d_weight.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = torch.where(pooled_from, grad, torch.zeros_like(grad)).sum(dim=0)
        return d_rows, d_weight, d_bias, None, None, None


CHUNKED_BACKWARD_DEVICES = ("cuda",)


def _sparse_rows(row: torch.Tensor, column: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """The matrix with `values` at (row, column), in compressed-row form, for the backward's two sparse
    products. Every (row, column) pair occurs once (a row belongs to one text, and a text has one argmax
    per entry), so sorting is all the compression needs. Measured for a BERT-base batch (16 texts x 255
    rows, 30,522 entries): both products in 0.30-0.38 s this way against 0.64-0.77 s through a coalesced
    COO tensor and `torch.sparse.mm`, the route before (a microbenchmark of the backward alone, random argmax)."""
    order = torch.argsort(row * shape[1] + column)
    counts = torch.bincount(row, minlength=shape[0])
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    with warnings.catch_warnings():     # "sparse CSR support is in beta" (a UserWarning at every step otherwise)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, column[order], values[order], shape, check_invariants=False)


def _backward_by_chunks(ctx, grad, rows, weight, argmax):
    """The backward as dense products, one vocabulary chunk at a time (the forward's chunks): each chunk's
    gradient is scattered into a rows x chunk matrix (every (row, entry) receives at most one text's
    gradient: a row belongs to one text) and multiplied in the forward's compute dtype (bf16 under
    autocast, as autograd through an autocast linear would). On a GPU this replaces cuSPARSE's
    sparse x dense products, measured on an H200 at 63 of a 217 ms BERT-base step (scripts/gpu_check.py);
    the transient matrix is the forward's tile, so memory stays bounded the same way."""
    dtype, chunk = ctx.compute_dtype, ctx.chunk
    vocab = weight.shape[0]
    valid = argmax >= 0
    where = argmax.clamp(min=0)
    routed = torch.where(valid, grad, torch.zeros_like(grad))
    need_rows, need_weight, need_bias = ctx.needs_input_grad[:3]
    accumulate = torch.promote_types(rows.dtype, torch.float32)
    d_rows = torch.zeros(rows.shape, dtype=accumulate, device=rows.device) if need_rows else None
    d_weight = torch.empty_like(weight) if need_weight else None
    rows_c, weight_c = rows.to(dtype), weight.to(dtype)
    for low in range(0, vocab, chunk):
        high = min(low + chunk, vocab)
        scattered = torch.zeros((rows.shape[0], high - low), dtype=grad.dtype, device=grad.device)
        scattered.scatter_add_(0, where[:, low:high], routed[:, low:high])   # a second add to a cell adds 0
        scattered = scattered.to(dtype)
        if need_rows:
            d_rows += (scattered @ weight_c[low:high]).to(accumulate)
        if need_weight:
            d_weight[low:high] = (scattered.T @ rows_c).to(weight.dtype)
    d_bias = routed.sum(dim=0) if ctx.has_bias and need_bias else None
    return (None if d_rows is None else d_rows.to(rows.dtype)), d_weight, d_bias, None, None, None
