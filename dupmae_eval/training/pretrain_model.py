"""DupMAE pre-training (paper §3.1-3.3, Eq. 9): the encoder's MLM loss, the [CLS] decoding loss of RetroMAE's
enhanced decoder, and the bag-of-words loss of the ordinary tokens' max-pooled MLM logits.

    L = L_mlm + L_dec + w · L_bow        (the objective's terms only; see OBJECTIVES)

- L_mlm: cross-entropy of the MLM head at the masked positions of the encoder's input (mean over them).
- L_dec: one decoder layer (`EnhancedDecoder`). Its query stream is the [CLS] embedding put through the
  encoder's embeddings layer as an input embedding (positions, token type, LayerNorm: the released code's
  route; the paper writes [CLS] + positions); its context stream is the [CLS] embedding followed by the
  embeddings of the unmasked input. Each row attends to its own sampled half of the positions plus [CLS],
  never to itself (`masking.decoder_attention`). Cross-entropy through the shared MLM head over every input
  token but [CLS] and [SEP] (mean over them).
- L_bow: μ = max over positions 1.. (padding out; [SEP] and the masked positions kept, as in the released
  code) of the MLM logits of the masked input; L_bow = −Σ_{x ∈ set(X)} c · log softmax(μ)[x] over the
  text's distinct ordinary tokens, with c = 1/n (n its token count: the released code) or 1 (Eq. 9's
  sum), averaged over the batch. μ comes from the fine-tuning's memory-bounded max-pool (`ot_max_pool`).

No full-vocabulary tensor is held for the backward: both cross-entropies go through `linear_cross_entropy`,
which computes the loss and its gradients one block of rows at a time in the forward (the gradient is the
softmax minus the one-hot, known as soon as the logits are) and keeps only rows x hidden and vocabulary x
hidden gradients.

Under torchrun each loss is a global mean: local sums over the global count (all-reduced) times the world
size, so the gradient DDP averages equals one process's on the same global batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.registry import Registry
from dupmae_eval.training.ot_pool import ot_max_pool
from dupmae_eval.training.recompute import recompute_encoder

DECODER_FILE = "dupmae_decoder.safetensors"
RECORD_FILE = "dupmae_pretraining.json"


@dataclass(frozen=True)
class Objective:
    """Which terms a pre-training objective sums (the paper's Table 4 ablation is the four entries)."""

    name: str
    decoder: bool          # [CLS] decoding (RetroMAE's enhanced decoder)
    bag_of_words: bool     # ordinary-token decoding
    summary: str


OBJECTIVES: Registry = Registry("pre-training objective")
for _objective in (
        Objective("mlm", False, False, "MLM only (BERT's objective, continued)"),
        Objective("retromae", True, False, "MLM + [CLS] decoding (RetroMAE; Table 4 'CLS decoding only')"),
        Objective("bow", False, True, "MLM + bag-of-words of the ordinary tokens (Table 4 'OT decoding only')"),
        Objective("dupmae", True, True, "MLM + [CLS] decoding + bag of words (DupMAE, Eq. 9)")):
    OBJECTIVES.register(_objective)


class EnhancedDecoder(torch.nn.Module):
    """One BERT layer whose queries come from one stream and keys/values from another (RetroMAE's
    enhanced decoding): multi-head attention under a per-row mask, residual to the query stream, then
    BERT's feed-forward block."""

    def __init__(self, config):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput, BertSelfOutput

        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.query = torch.nn.Linear(hidden, hidden)
        self.key = torch.nn.Linear(hidden, hidden)
        self.value = torch.nn.Linear(hidden, hidden)
        self.dropout = config.attention_probs_dropout_prob
        self.attention_output = BertSelfOutput(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, query_stream: torch.Tensor, context: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """query_stream, context: B x L x h; allowed: B x L x L bool (row may attend to column)."""
        batch, length, hidden = query_stream.shape

        def split(x):
            return x.view(batch, -1, self.heads, hidden // self.heads).transpose(1, 2)

        attended = torch.nn.functional.scaled_dot_product_attention(
            split(self.query(query_stream)), split(self.key(context)), split(self.value(context)),
            attn_mask=allowed[:, None], dropout_p=self.dropout if self.training else 0.0)
        attended = self.attention_output(attended.transpose(1, 2).reshape(batch, length, hidden), query_stream)
        return self.output(self.intermediate(attended), attended)


def init_like_bert(module: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    """BERT's initialisation (linear weights N(0, std), biases 0, LayerNorm 1/0), from a seeded generator."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, std, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, torch.nn.LayerNorm):
                layer.weight.fill_(1.0)
                layer.bias.zero_()


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ_rows CE(x @ Wᵀ + b, label) with its gradients computed block by block in the forward."""

    @staticmethod
    def forward(ctx, x, weight, bias, labels, block: int):
        from dupmae_eval.runtime import onednn

        wide_dtype = torch.promote_types(x.dtype, torch.float32)       # fp32 under autocast; float64 stays
        total = torch.zeros((), dtype=wide_dtype, device=x.device)
        d_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        d_weight = torch.zeros(weight.shape, dtype=wide_dtype, device=x.device) if ctx.needs_input_grad[1] else None
        d_bias = torch.zeros(weight.shape[0], dtype=wide_dtype, device=x.device) if bias is not None else None
        for start in range(0, x.shape[0], block):
            rows = x[start:start + block]
            logits = onednn.vocabulary_linear(rows, weight, bias)            # bf16 under autocast
            wide = logits.to(wide_dtype)                                     # the same tensor when already wide
            target = labels[start:start + block]
            picked = wide.gather(1, target[:, None]).squeeze(1)
            peak = wide.amax(dim=1)
            # softmax in place (no further rows x vocabulary tensor: on a CPU each fresh one costs page faults)
            probabilities = wide.sub_(peak[:, None]).exp_()
            norm = probabilities.sum(dim=1)
            total += (peak + torch.log(norm) - picked).sum()                 # log-sum-exp minus the label's logit
            probabilities.div_(norm[:, None])                                # d loss / d logits: softmax - onehot
            probabilities[torch.arange(len(target), device=x.device), target] -= 1.0
            grad = probabilities.to(logits.dtype)
            if d_x is not None:
                _product_into(d_x[start:start + block], grad, weight, accumulate=False)
            if d_weight is not None:
                _product_into(d_weight, grad.t(), rows, accumulate=True)
            if d_bias is not None:
                d_bias += probabilities.sum(dim=0)
        ctx.save_for_backward(*(t for t in (d_x, d_weight, d_bias) if t is not None))
        ctx.present = (d_x is not None, d_weight is not None, d_bias is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = list(ctx.saved_tensors)
        d_x, d_weight, d_bias = (saved.pop(0) if present else None for present in ctx.present)
        return (None if d_x is None else d_x * grad_total.to(d_x.dtype),
                None if d_weight is None else (d_weight * grad_total).to(ctx.dtypes[0]),
                None if d_bias is None else (d_bias * grad_total).to(ctx.dtypes[1]), None, None)


def _product_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """out = a @ b (or out += a @ b), written into `out` when every dtype agrees (fp32 on a CPU): a
    vocabulary-wide product's result (30,522 x 768 floats, 94 MB for d weight) is then never allocated, so
    never faulted in and zeroed again, which the blocks' d weight temporaries cost at every block. Under
    autocast (bf16 products, fp32 sums) the product is formed, then cast and added, as before."""
    if a.dtype == b.dtype == out.dtype:
        if accumulate:
            out.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
        return
    product = (a @ b.to(a.dtype)).to(out.dtype)
    if accumulate:
        out += product
    else:
        out.copy_(product)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], labels: torch.Tensor,
                         block: Optional[int] = None) -> torch.Tensor:
    """Summed cross-entropy of the logits x @ Wᵀ + b (rows x vocabulary) against labels, never holding more
    than `block` rows of logits (default: as many as make 16M values; 128M on a GPU)."""
    if x.shape[0] == 0:
        return x.sum() * 0.0 + weight.sum() * 0.0
    block = block or max(1, (1 << (27 if x.device.type == "cuda" else 24)) // weight.shape[0])
    return _LinearCrossEntropy.apply(x, weight, bias, labels, block)


def head_cross_entropy(mlm_head, hidden_rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed CE of BERT's MLM head (transform, then the tied vocabulary projection) over rows."""
    decoder = mlm_head.decoder
    bias = decoder.bias if decoder.bias is not None else mlm_head.bias
    return linear_cross_entropy(mlm_head.transform(hidden_rows), decoder.weight, bias, labels)


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_mean(local_sum: torch.Tensor, local_count: int, device) -> torch.Tensor:
    """local_sum / (count over all processes) x world: DDP's average of the gradients is then the gradient
    of the global mean."""
    world = _world()
    count = torch.tensor(float(local_count), device=device)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(count)
    return local_sum / count.clamp(min=1.0) * world


class DupMAEForPretraining(torch.nn.Module):
    """A BertForMaskedLM and the enhanced decoder; `forward` takes a collated batch and returns the loss of
    the chosen objective (and each term, for the logs)."""

    def __init__(self, masked_lm, decoder: Optional[EnhancedDecoder], objective: str, bow_weight: float,
                 bow_normalize: bool, tokenizer=None):
        super().__init__()
        self.masked_lm = masked_lm
        self.decoder = decoder
        self.objective = OBJECTIVES.lookup(objective)
        if self.objective.decoder and decoder is None:
            raise DupMAEEvalError(f"objective {objective!r} needs the decoder")
        self.bow_weight = float(bow_weight)
        self.bow_normalize = bool(bow_normalize)
        self.tokenizer = tokenizer
        self.last_parts: Dict[str, float] = {}

    def forward(self, input_ids, attention_mask, labels, original_ids, bow_mask, decoder_allowed=None,
                decoder_labels=None):
        """input_ids: the masked encoder input; labels: original ids at masked positions, -100 elsewhere;
        original_ids: the unmasked input; bow_mask: B x L, the ordinary tokens of X (no special, no padding);
        decoder_allowed: B x L x L; decoder_labels: original ids, -100 at [CLS], [SEP] and padding."""
        bert, head = self.masked_lm.bert, self.masked_lm.cls.predictions
        hidden = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        device = hidden.device
        masked = labels != -100
        loss = mlm = global_mean(head_cross_entropy(head, hidden[masked], labels[masked]), int(masked.sum()), device)
        parts = {"mlm": mlm}
        if self.objective.decoder:
            parts["decoder"] = dec = self.decoder_loss(hidden[:, 0], original_ids, decoder_allowed, decoder_labels)
            loss = loss + dec
        if self.objective.bag_of_words:
            pooled_positions = attention_mask.bool().clone()
            pooled_positions[:, 0] = False
            parts["bow"] = bow = self.bow_loss(ot_max_pool(head, hidden, pooled_positions), original_ids, bow_mask)
            loss = loss + self.bow_weight * bow
        self.last_parts = {name: float(value.detach()) for name, value in parts.items()}
        return {"loss": loss}

    def decoder_loss(self, sentence, original_ids, allowed, decoder_labels) -> torch.Tensor:
        embeddings = self.masked_lm.bert.embeddings
        length = original_ids.shape[1]
        context = torch.cat([sentence[:, None], embeddings(input_ids=original_ids)[:, 1:]], dim=1)
        query = embeddings(inputs_embeds=sentence[:, None].expand(-1, length, -1).contiguous())
        decoded = self.decoder(query, context, allowed)
        rows = decoder_labels != -100
        return global_mean(head_cross_entropy(self.masked_lm.cls.predictions, decoded[rows], decoder_labels[rows]),
                           int(rows.sum()), decoded.device)

    def bow_loss(self, pooled, original_ids, bow_mask) -> torch.Tensor:
        """−Σ over each text's distinct ordinary tokens of c · log softmax(μ), c = 1/n or 1; summed over texts."""
        counts = bow_mask.sum(dim=1, keepdim=True).to(pooled.dtype)
        weight = (1.0 / counts.clamp(min=1.0)) if self.bow_normalize else torch.ones_like(counts)
        values = torch.where(bow_mask, weight.expand(original_ids.shape), torch.zeros((), dtype=pooled.dtype,
                                                                                   device=pooled.device))
        # a repeated token writes the same weight again; positions outside X write 0 (max keeps the weight)
        targets = torch.zeros_like(pooled).scatter_reduce_(1, torch.where(bow_mask, original_ids, 0), values, "amax")
        per_text = -(targets * torch.log_softmax(pooled, dim=1)).sum(dim=1)
        return global_mean(per_text.sum(), pooled.shape[0], pooled.device)

    def recompute_encoder(self, mode: str, first: int = -1) -> None:
        """What the encoder recomputes in the backward (`recompute.RECOMPUTE`: none, elementwise, layers), on
        its first `first` layers (-1: all)."""
        recompute_encoder(self.masked_lm, mode, first)

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_checkpoint(cls, source: str, objective: str, bow_weight: float, bow_normalize: bool,
                        seed: int, lengths: Mapping[str, int] = {}) -> "DupMAEForPretraining":
        """A BertForMaskedLM (hub name or folder; its MLM head is required), or one built with random weights
        from `seed` when `source` names a shape (`shapes.shape_source`), and a new decoder, initialised as
        BERT's layers are, from `seed` (a checkpoint's own weights and decoder are loaded on resume).
        `lengths`: the sequence lengths it will be fed, refused before any weights when the model has fewer
        positions (`checkpoint.check_lengths`)."""
        from dupmae_eval.encoding.checkpoint import check_lengths, read_masked_lm, resolve_checkpoint
        from dupmae_eval.training.finetune_model import _tokenizer
        from dupmae_eval.training.shapes import random_masked_lm, shape_source, shape_tokenizer

        shape = shape_source(source)
        if shape is not None:
            check_lengths(lengths, shape.config.get("max_position_embeddings", 512), shape.origin)
            masked_lm, tokenizer = random_masked_lm(shape.config, seed), shape_tokenizer()
        else:
            folder, _ = resolve_checkpoint(source)
            masked_lm, _ = read_masked_lm(folder, source, need_mlm_head=True, lengths=lengths)
            masked_lm.train()
            tokenizer = _tokenizer(folder)
        decoder = None
        if OBJECTIVES.lookup(objective).decoder:
            decoder = EnhancedDecoder(masked_lm.config)
            init_like_bert(decoder, masked_lm.config.initializer_range, torch.Generator().manual_seed(seed))
        return cls(masked_lm, decoder, objective, bow_weight, bow_normalize, tokenizer)

    def save(self, folder: Path) -> None:
        """A BertForMaskedLM checkpoint (with its MLM head) that `finetune` and `run` read as it is, plus the
        decoder (for resuming) and what the run was."""
        from dupmae_eval.files import atomic_output

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.masked_lm.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        if self.decoder is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous().cpu() for k, v in self.decoder.state_dict().items()},
                      str(folder / DECODER_FILE))
        with atomic_output(folder / RECORD_FILE) as handle:
            json.dump({"objective": self.objective.name, "bow_weight": self.bow_weight,
                       "bow_normalize": self.bow_normalize}, handle, indent=2)

    def load_weights(self, folder: Path) -> None:
        """Weights from a checkpoint this class saved (resume)."""
        from dupmae_eval.encoding.checkpoint import read_masked_lm

        folder = Path(folder)
        masked_lm, _ = read_masked_lm(folder, str(folder), need_mlm_head=True)
        self.masked_lm.load_state_dict(masked_lm.state_dict())
        if self.decoder is not None:
            from safetensors.torch import load_file

            self.decoder.load_state_dict(load_file(str(folder / DECODER_FILE)))
