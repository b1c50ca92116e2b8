"""The OT max-pool with gradients, without the batch x length x vocabulary logits.

DupMAE's sparse half is μ = max over a text's ordinary tokens of the MLM head's vocabulary
logits. Autograd through that max keeps the whole logits tensor for the backward pass (and
makes a second one for its gradient): for a fine-tuning batch of 8 queries x (1 + 7) passages
at 140 tokens on BERT's 30,522-entry vocabulary that is 8,960 rows x 30,522 x 4 B = 1.1 GB each.

Here the forward projects the token rows onto the vocabulary one tile at a time (as inference
does, `model.pooled_mlm_logits`) and keeps, per text and vocabulary entry, only the running
maximum and the row it came from (its argmax). The max passes its gradient to that one row, so
the backward is a sparse product: d rows = G @ W and d W = Gᵀ @ rows with G holding
B x V non-zeros (one per text and entry) instead of a dense rows x V matrix, and d bias is the
column sum of the incoming gradient. Memory is O(B x V) instead of O(rows x V).

A text with no pooled position (an empty passage with [SEP] left out) gets 0 everywhere and no
gradient: inference writes such a text as an empty sparse vector, which scores 0 too. Ties
between rows go to the first row seen (autograd's `amax` would split the gradient among them).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

_BLOCK_ROWS = 512
_VOCAB_CHUNK = 2048


def ot_max_pool(mlm_head, hidden: torch.Tensor, mask: torch.Tensor,
                tile: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """max over the positions in `mask` of `mlm_head(hidden)`, B x V (fp32, or the hidden states' dtype if
    wider), differentiable in the
    encoder's hidden states and the head's parameters (transform, decoder weight and bias).

    hidden: B x L x h last hidden states; mask: B x L bool (which positions are pooled);
    tile: (token rows, vocabulary entries) projected at once (default 512 x 2,048 on the CPU,
    2,048 rows x the whole vocabulary on a GPU)."""
    decoder = mlm_head.decoder
    bias = decoder.bias if decoder.bias is not None else mlm_head.bias
    rows = mlm_head.transform(hidden[mask])
    ends = mask.sum(dim=1).cumsum(dim=0).tolist()
    if tile is None:
        on_gpu = hidden.device.type == "cuda"
        tile = (4 * _BLOCK_ROWS, decoder.weight.shape[0]) if on_gpu else (_BLOCK_ROWS, _VOCAB_CHUNK)
    return _TiledMaxPool.apply(rows, decoder.weight, bias, ends, tile[0], tile[1])


class _TiledMaxPool(torch.autograd.Function):
    """rows (R x h), weight (V x h), bias (V), text boundaries -> B x V maxima of rows @ weightᵀ + bias."""

    @staticmethod
    def forward(ctx, rows, weight, bias, ends: List[int], block_rows: int, chunk: int):
        from .. import onednn

        batch, vocab = len(ends), weight.shape[0]
        dtype = torch.promote_types(rows.dtype, torch.float32)   # fp32 at least (bf16 tiles under GPU autocast)
        pooled = torch.full((batch, vocab), float("-inf"), dtype=dtype, device=rows.device)
        argmax = torch.full((batch, vocab), -1, dtype=torch.long, device=rows.device)
        starts = [0] + ends[:-1]
        first = 0
        for start in range(0, rows.shape[0], block_rows):
            end = min(start + block_rows, rows.shape[0])
            block = rows[start:end]
            while ends[first] <= start:
                first += 1
            owners = []
            for text in range(first, batch):
                if starts[text] >= end:
                    break
                low, high = max(starts[text], start) - start, min(ends[text], end) - start
                if high > low:
                    owners.append((text, low, high))
            for low_v in range(0, vocab, chunk):
                high_v = min(low_v + chunk, vocab)
                part_bias = None if bias is None else bias[low_v:high_v]
                logits = onednn.linear(block, weight[low_v:high_v], part_bias).to(dtype)
                for text, low, high in owners:
                    values, where = logits[low:high].max(dim=0)
                    best, best_row = pooled[text, low_v:high_v], argmax[text, low_v:high_v]
                    better = values > best                     # strict: ties stay with the first row seen
                    best[better] = values[better]
                    best_row[better] = where[better] + (start + low)
        pooled[argmax < 0] = 0.0                               # a text with nothing to pool
        ctx.save_for_backward(rows, weight, argmax)
        ctx.has_bias = bias is not None
        return pooled

    @staticmethod
    def backward(ctx, grad):
        rows, weight, argmax = ctx.saved_tensors
        pooled_from = argmax >= 0
        text, entry = pooled_from.nonzero(as_tuple=True)
        dtype = grad.dtype
        routed = torch.sparse_coo_tensor(torch.stack([argmax[text, entry], entry]),
                                         grad[text, entry], (rows.shape[0], weight.shape[0]),
                                         check_invariants=False).coalesce()
        d_rows = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_rows = torch.sparse.mm(routed, weight.to(dtype)).to(rows.dtype)
        if ctx.needs_input_grad[1]:
            d_weight = torch.sparse.mm(routed.t().coalesce(), rows.to(dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = torch.where(pooled_from, grad, torch.zeros_like(grad)).sum(dim=0)
        return d_rows, d_weight, d_bias, None, None, None
