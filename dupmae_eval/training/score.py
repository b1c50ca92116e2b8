"""The fine-tuning score (the paper's Eq. 12) and the losses over it (Eqs. 13-15).

score(q, d) = ĥ_q · ĥ_d + Σ_{i ∈ topk(d)} μ_q[i] · μ_d[i]

ĥ is the dense half ([CLS] through the projection), μ the sparse half (the OT max-pool, after the
activation); the document keeps its k largest entries (k = 384 in the paper, "none" keeps all), the
query all of them, exactly as the exact search scores at inference (`search.exact_scores_topk`).
The paper writes the sum unweighted and InfoNCE with no temperature: `sparse_scale` = 1 and
`temperature` = 1 are that setting. Both are settings because, measured with raw logits, the
scores are ~800 in magnitude and the loss starts near 219 (the SciFact experiment, docs/training.md): the conditioning decides
whether training moves at all, so it is something to choose on a dev slice and to report.

Gradients pass through the kept entries only (the top-k choice itself is not differentiated);
at a tie for the k-th place torch.topk picks which entry stays, as the inference side does.
"""

from __future__ import annotations

from typing import Optional

import torch


def topk_mask(sparse: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """B x V bool: the k largest entries of each row (all of them when k is None or ≥ V).

    An all-zero row (a text with nothing pooled) keeps nothing that matters: its entries are 0."""
    if k is None or k >= sparse.shape[-1]:
        return torch.ones_like(sparse, dtype=torch.bool)
    indices = torch.topk(sparse.detach(), k, dim=-1, sorted=False).indices
    return torch.zeros_like(sparse, dtype=torch.bool).scatter_(-1, indices, True)


def pair_scores(query_dense: Optional[torch.Tensor], query_sparse: Optional[torch.Tensor],
                doc_dense: Optional[torch.Tensor], doc_sparse: Optional[torch.Tensor],
                doc_topk: Optional[int] = 384, sparse_scale: float = 1.0) -> torch.Tensor:
    """Q x D scores of every query against every document (Eq. 12; a half that is None is left out,
    which is how the `cls` and `splade` kinds train through the same path)."""
    scores = None
    if query_dense is not None:
        scores = query_dense @ doc_dense.T
    if query_sparse is not None:
        kept = torch.where(topk_mask(doc_sparse, doc_topk), doc_sparse, torch.zeros_like(doc_sparse))
        sparse = query_sparse @ kept.T
        scores = sparse_scale * sparse if scores is None else scores + sparse_scale * sparse
    if scores is None:
        raise ValueError("a score needs at least one half")
    return scores


def infonce(scores: torch.Tensor, positive_column: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over queries of -log softmax(scores / τ)[positive]: Eq. 13 when the columns are every
    passage of the batch (in-batch negatives), Eq. 14 when they include hard negatives."""
    return torch.nn.functional.cross_entropy(scores / temperature, positive_column)


def distillation(student_group_scores: torch.Tensor, teacher_group_scores: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """Eq. 15: KL(teacher ‖ student) between the softmaxes over each query's own candidates
    (Q x G each: the positive and its hard negatives), averaged over queries."""
    student = torch.log_softmax(student_group_scores / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_group_scores.to(student.dtype) / temperature, dim=-1)
    return torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
