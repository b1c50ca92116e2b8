"""The memory-bounded OT max-pool with gradients against autograd through the full logits."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from dupmae_eval.training.ot_pool import ot_max_pool


def _random_bert(seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=3001, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=64)
    model = BertForMaskedLM(config).double().eval()   # no dropout: both passes see the same network
    with torch.no_grad():   # the padding row starts at zero: its logit would tie across every position
        model.bert.embeddings.word_embeddings.weight[0].normal_(std=0.02)
    return model


def _batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    lengths = [13, 1, 29, 7, 0, 22]                 # one text with a single pooled position, one with none
    width = max(lengths) + 2
    ids = torch.randint(5, 3001, (len(lengths), width), generator=generator)
    attention = torch.zeros_like(ids)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, length in enumerate(lengths):
        attention[row, :length + 2] = 1
        mask[row, 1:length + 1] = True              # ordinary tokens: [CLS] and the last position out
    return ids, attention, mask


def _full_logits_pool(model, hidden, mask):
    """The formula, through autograd: every position's logits, padding and [CLS] at -inf, max over positions."""
    logits = model.cls(hidden)
    pooled = logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))


@pytest.mark.parametrize("backward", ["sparse", "chunked"])
@pytest.mark.parametrize("chunk", [7, 500, 3001, None])
def test_values_and_gradients_equal_autograd_through_the_full_logits(chunk, backward, monkeypatch):
    """Both backward routes: sparse products (the CPU's) and dense per-chunk products (the GPU's), here
    forced onto the CPU."""
    from dupmae_eval.training import ot_pool

    monkeypatch.setattr(ot_pool, "CHUNKED_BACKWARD_DEVICES", ("cpu",) if backward == "chunked" else ())
    model = _random_bert()
    ids, attention, mask = _batch()
    upstream = torch.randn(len(ids), 3001, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def gradients(pool):
        model.zero_grad()
        hidden = model.bert(input_ids=ids, attention_mask=attention).last_hidden_state
        pooled = pool(hidden)
        (pooled.double() * upstream).sum().backward()
        named = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return pooled.detach().double(), named, hidden

    ours, our_grads, hidden = gradients(lambda h: ot_max_pool(model.cls.predictions, h, mask, chunk))
    reference, reference_grads, _ = gradients(lambda h: _full_logits_pool(model, h, mask))

    # ties would let autograd split a gradient where ours routes it to one row: there must be none
    logits = model.cls(hidden.detach()).masked_fill(~mask.unsqueeze(-1), float("-inf"))
    top2 = logits.topk(2, dim=1).values
    pooled_twice = mask.sum(dim=1) > 1
    assert ((top2[:, 0] - top2[:, 1])[pooled_twice] > 1e-9).all()

    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (ours[4] == 0).all()                         # the text with nothing to pool
    assert set(our_grads) == set(reference_grads)
    for name, expected in reference_grads.items():
        torch.testing.assert_close(our_grads[name], expected, rtol=1e-5, atol=1e-5, msg=name)
    assert reference_grads["bert.embeddings.word_embeddings.weight"].abs().sum() > 0   # tied to the decoder
    assert reference_grads["bert.encoder.layer.0.attention.self.query.weight"].abs().sum() > 0


def test_the_gradient_goes_to_the_argmax_row_only():
    """Hand-worked: two texts, rows [1, 0], [0, 2] and [3, 1], an identity head and no bias."""
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transform = torch.nn.Identity()
            self.decoder = torch.nn.Linear(2, 2, bias=False)
            self.decoder.weight.data = torch.eye(2)
            self.bias = None

    head = Head()
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 1.0], [0.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    pooled = ot_max_pool(head, hidden, mask, chunk=1)
    assert pooled.tolist() == [[1.0, 2.0], [3.0, 1.0]]
    pooled.sum().backward()
    # entry 0 of text 0 comes from row 0, entry 1 from row 1; text 1 has one row for both
    assert hidden.grad.tolist() == [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]]
    assert head.decoder.weight.grad.tolist() == [[1.0 + 3.0, 0.0 + 1.0], [0.0 + 3.0, 2.0 + 1.0]]
