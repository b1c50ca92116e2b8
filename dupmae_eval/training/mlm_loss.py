"""Held-out masked-LM loss: how well a BertForMaskedLM predicts masked words of texts it was not trained on.

The measure used to compare a model pre-trained here with other checkpoints (e.g. splade-tiny, whose MLM
head was trained into a term-weighting head). Fixed so that two models are measured on the very same
masks: each text i is cut at `max_length` tokens ([CLS] ... [SEP]) and masked with the training's
whole-word masking (`masking.whole_word_masks`) at `ratio`, drawn from a generator seeded with (seed, i);
every masked token becomes [MASK] (no 80/10/10 replacement: the plain cloze test). The loss is the mean
cross-entropy, in nats, over all masked tokens of all texts (ln 30,522 = 10.3 for a uniform guess).

The vocabulary projection is taken for the masked rows only, so no batch x length x vocabulary tensor is
formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional

import numpy as np

from dupmae_eval.training import masking


@dataclass(frozen=True)
class MaskedLMLoss:
    nats: float            # mean cross-entropy over the masked tokens
    masked_tokens: int
    texts: int

    def line(self) -> str:
        return (f"masked-LM loss {self.nats:.4f} nats over {self.masked_tokens} masked tokens in "
                f"{self.texts} texts")


def cloze_batch(tokenizer, texts: List[str], first_index: int, ratio: float, seed: int, max_length: int):
    """(input ids, attention mask, labels) for texts numbered from `first_index`: every masked token is
    [MASK], labels hold the original id there and -100 elsewhere."""
    import torch

    continuation = masking.continuation_table(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(texts), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(texts), width), -100, dtype=torch.long)
    attention = torch.zeros((len(texts), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        ids = np.asarray(ids, dtype=np.int64)
        special = np.zeros(len(ids), dtype=bool)
        special[[0, -1]] = True
        words, lengths = masking.word_index(continuation[ids], special)
        rng = np.random.default_rng([seed, first_index + row])
        masked = masking.whole_word_masks(words, lengths, ratio, 1, rng)[0]
        input_ids[row, :len(ids)] = torch.from_numpy(np.where(masked, tokenizer.mask_token_id, ids))
        labels[row, :len(ids)] = torch.from_numpy(np.where(masked, ids, -100))
        attention[row, :len(ids)] = 1
    return input_ids, attention, labels


def masked_lm_loss(masked_lm, tokenizer, texts: Iterable[str], ratio: float = 0.15, seed: int = 0,
                   max_length: int = 128, batch_size: int = 64, device: Optional[str] = None,
                   bf16: bool = False) -> MaskedLMLoss:
    """The held-out masked-LM loss of `masked_lm` (a BertForMaskedLM) on `texts` (see the module's docstring).
    The model is put in eval mode for the measurement and given back in the mode it had."""
    import contextlib

    import torch

    device = torch.device(device) if device else next(masked_lm.parameters()).device
    was_training = masked_lm.training
    masked_lm.eval()
    total, count, number = 0.0, 0, 0
    pending: List[str] = []

    def flush():
        nonlocal total, count, number
        input_ids, attention, labels = cloze_batch(tokenizer, pending, number, ratio, seed, max_length)
        number += len(pending)
        pending.clear()
        rows = labels != -100
        if not rows.any():
            return
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            hidden = masked_lm.bert(input_ids=input_ids.to(device), attention_mask=attention.to(device))[0]
            logits = masked_lm.cls(hidden[rows.to(device)])
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows].to(device), reduction="sum")
        total += float(loss)
        count += int(rows.sum())

    try:
        for text in texts:
            pending.append(text)
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    finally:
        masked_lm.train(was_training)
    return MaskedLMLoss(total / max(count, 1), count, number)
