"""The model being fine-tuned: a BertForMaskedLM, the [CLS] projection, and the two halves.

The halves are defined as at inference (`dupmae_eval.encoding.checkpoint`): the same pooled positions
(`sparse_mask`: [CLS] and padding out, [SEP] as the settings say; the kind's rule for SPLADE), the
same activation (`apply_activation`, monotone, after the max), the same [CLS] projection, saved in
the same head file. Only the max-pool differs in how it is computed: `ot_max_pool`, which keeps
the argmax for the backward instead of the logits (its values equal inference's
`pooled_mlm_logits`; tests/test_ot_pool.py).

The output folder of a run is an ordinary BertForMaskedLM checkpoint (config, weights, tokenizer)
plus `dupmae_head.safetensors`, whose metadata records the encoder settings it was trained with;
`run --encoder dupmae` reads them as its defaults for that checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.kinds import encoder_kind
from dupmae_eval.encoding.checkpoint import (
    HEAD_FILE, PoolingSettings, apply_activation, load_dupmae_head, read_masked_lm, save_dupmae_head, sparse_mask)
from dupmae_eval.training.ot_pool import ot_max_pool
from dupmae_eval.training.score import distillation, infonce, pair_scores
from dupmae_eval.training.settings import FinetuneSettings


class DupMAEForTraining(torch.nn.Module):
    """BertForMaskedLM + [CLS] projection; `forward` takes a tokenized batch of query groups and returns
    the loss (Eq. 13/14 InfoNCE over Eq. 12 scores, plus Eq. 15 distillation when teacher scores come)."""

    def __init__(self, masked_lm, projection: Optional[torch.nn.Linear], settings: FinetuneSettings,
                 tokenizer=None):
        super().__init__()
        self.masked_lm = masked_lm
        self.projection = projection
        self.settings = settings
        self.tokenizer = tokenizer
        kind = encoder_kind(settings.kind)
        self.pooling = PoolingSettings(
            dense="cls" if kind.dense else None, sparse=kind.sparse, sparse_include_cls=kind.pools_cls,
            sparse_include_sep=settings.include_sep or kind.always_pools_sep,
            activation=settings.activation, normalize=False)
        self.sep_token_id = (getattr(masked_lm.config, "sep_token_id", None) if tokenizer is None  # not in every
                             else tokenizer.sep_token_id)                                        # BertConfig
        if self.sep_token_id is None and self.pooling.sparse and not self.pooling.sparse_include_sep:
            raise DupMAEEvalError("the [SEP] id is unknown (the config names none): pass the tokenizer")
        self.last_parts: Dict[str, float] = {}

    # ------------------------------------------------------------------ the two halves
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
               ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(dense B x d' or None, sparse B x V or None) for a tokenized batch."""
        hidden = self.masked_lm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dense = sparse = None
        if self.pooling.dense:
            dense = hidden[:, 0]
            if self.projection is not None:
                dense = self.projection(dense)
            dense = _at_least_fp32(dense)
        if self.pooling.sparse:
            mask = sparse_mask(input_ids, attention_mask, self.sep_token_id, self.pooling)
            sparse = _at_least_fp32(apply_activation(ot_max_pool(self.masked_lm.cls.predictions, hidden, mask),
                                                     self.pooling.activation))
        return dense, sparse

    # ------------------------------------------------------------------ the loss
    def forward(self, query_input_ids, query_attention_mask, passage_input_ids, passage_attention_mask,
                teacher_scores=None):
        settings = self.settings
        q_dense, q_sparse = self.encode(query_input_ids, query_attention_mask)
        d_dense, d_sparse = self.encode(passage_input_ids, passage_attention_mask)
        queries, group = query_input_ids.shape[0], passage_input_ids.shape[0] // max(1, query_input_ids.shape[0])
        offset = 0
        if settings.cross_device_negatives and settings.in_batch_negatives and _world() > 1:
            offset = _rank() * d_sparse.shape[0] if d_sparse is not None else _rank() * d_dense.shape[0]
            d_dense, d_sparse = _gather(d_dense), _gather(d_sparse)
        topk = settings.doc_topk if settings.train_topk else None
        own = torch.arange(queries, device=query_input_ids.device)
        if settings.in_batch_negatives:
            scores = pair_scores(q_dense, q_sparse, d_dense, d_sparse, topk, settings.sparse_scale)
            positive = offset + own * group
            group_scores = scores[own[:, None], positive[:, None] + torch.arange(group, device=scores.device)]
        else:   # each query against its own group only (Eq. 14 without the batch's other passages)
            rows = [pair_scores(None if q_dense is None else q_dense[i:i + 1], None if q_sparse is None else
                                q_sparse[i:i + 1], None if d_dense is None else d_dense[i * group:(i + 1) * group],
                                None if d_sparse is None else d_sparse[i * group:(i + 1) * group], topk,
                                settings.sparse_scale) for i in range(queries)]
            group_scores = scores = torch.cat(rows)
            positive = torch.zeros(queries, dtype=torch.long, device=scores.device)
        loss = infonce(scores, positive, settings.temperature)
        self.last_parts = {"contrastive": float(loss.detach())}
        if teacher_scores is not None:
            kl = distillation(group_scores, teacher_scores, settings.distill_temperature)
            self.last_parts["distillation"] = float(kl.detach())
            loss = loss + settings.distill_weight * kl
        return {"loss": loss, "scores": group_scores.detach()}

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_checkpoint(cls, source: str, settings: FinetuneSettings) -> "DupMAEForTraining":
        """A BertForMaskedLM checkpoint (hub name or folder) and, if it has one of the right size, its head
        file; otherwise a new projection (seeded by settings.seed)."""
        from dupmae_eval.encoding.checkpoint import resolve_checkpoint

        kind = encoder_kind(settings.kind)
        folder, _ = resolve_checkpoint(source)
        masked_lm, has_head = read_masked_lm(folder, source, need_mlm_head=kind.sparse,
                                             lengths={"query_max_length": settings.query_max_length,
                                                      "passage_max_length": settings.passage_max_length})
        masked_lm.train()
        tokenizer = _tokenizer(folder)
        hidden = masked_lm.config.hidden_size
        size = settings.projection_size(hidden)
        projection = None
        if size is not None:
            existing = load_dupmae_head(folder, hidden)
            if existing is not None and existing.out_features == size:
                projection = existing.train()
            else:
                generator = torch.Generator().manual_seed(settings.seed)
                projection = torch.nn.Linear(hidden, size)
                with torch.no_grad():   # BERT's own initialisation: N(0, 0.02), bias 0
                    projection.weight.normal_(0.0, masked_lm.config.initializer_range, generator=generator)
                    projection.bias.zero_()
        return cls(masked_lm, projection, settings, tokenizer)

    def save(self, folder: Path) -> None:
        """Write a checkpoint that `run` reads as it is: BertForMaskedLM + tokenizer + head file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.masked_lm.save_pretrained(str(folder))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        head = folder / HEAD_FILE
        if self.projection is not None:
            save_dupmae_head(folder, self.projection.weight, self.projection.bias,
                             trained_settings=self.settings.encoder_settings())
        elif head.exists():
            head.unlink()
        (folder / "dupmae_training.json").write_text(json.dumps(self.settings.as_dict(), indent=2) + "\n")

    def load_weights(self, folder: Path) -> None:
        """Resume: the weights of a checkpoint written by `save` (same settings) into this model."""
        folder = Path(folder)
        masked_lm, _ = read_masked_lm(folder, str(folder), need_mlm_head=False)
        self.masked_lm.load_state_dict(masked_lm.state_dict())
        if self.projection is not None:
            projection = load_dupmae_head(folder, self.masked_lm.config.hidden_size)
            if projection is None:
                raise DupMAEEvalError(f"{folder}: checkpoint lacks {HEAD_FILE}")
            self.projection.load_state_dict(projection.state_dict())


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Scores in fp32 under bf16 autocast; a double-precision model (the tests) stays double."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise DupMAEEvalError(f"{folder}: could not load its tokenizer ({exc.__class__.__name__}: {exc})") from None


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Every process's passages, in rank order, with gradients flowing back to their own process
    (torch.distributed.nn's all_gather sums the gradients from every process's loss; DDP then averages
    over processes, so the step equals one process's step on the whole global batch)."""
    if tensor is None:
        return None
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)
