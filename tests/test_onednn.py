"""The oneDNN route for CPU matrix products: same numbers as PyTorch's ordinary (MKL) route, every
layer swapped, and the ordinary route wherever oneDNN does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from dupmae_eval.runtime import onednn


def _random_bert(hidden_act: str = "gelu") -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, hidden_act=hidden_act)
    return BertForMaskedLM(config).eval()


def _inputs():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 1000, (3, 17), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0                                       # one padded row
    return input_ids, attention_mask


def test_linear_equals_the_ordinary_product_with_and_without_gelu():
    generator = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(4, 7, 96, generator=generator), torch.randn(200, 96, generator=generator), \
        torch.randn(200, generator=generator)
    with torch.inference_mode():
        expected = x @ weight.T + bias                              # written out, not through F.linear
        torch.testing.assert_close(onednn.linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(onednn.linear(x[:, 2:5], weight, bias), expected[:, 2:5], rtol=1e-5, atol=1e-5)
        gelu = 0.5 * expected * (1 + torch.erf(expected / 2 ** 0.5))
        torch.testing.assert_close(onednn.linear(x, weight, bias, gelu=True), gelu, rtol=1e-5, atol=1e-5)


def test_vocabulary_linear_equals_the_product_and_leaves_autocast_its_dtype():
    """The objective's vocabulary blocks (oneDNN's product, then the bias in place) equal the product
    written out; under autocast the ordinary route keeps autocast's bf16."""
    generator = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(33, 96, generator=generator), torch.randn(700, 96, generator=generator), \
        torch.randn(700, generator=generator)
    with torch.no_grad():
        expected = x.double() @ weight.double().T + bias.double()
        torch.testing.assert_close(onednn.vocabulary_linear(x, weight, bias).double(), expected, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(onednn.vocabulary_linear(x, weight).double(), expected - bias.double(),
                                   rtol=1e-5, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert onednn.vocabulary_linear(x, weight, bias).dtype == torch.bfloat16


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_routed_bert_gives_the_same_outputs_and_keeps_its_weights(hidden_act):
    model = _random_bert(hidden_act)
    routed = copy.deepcopy(model)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert onednn.route_linears(routed) == linears                  # every layer, the decoder too
    assert not any(type(m) is torch.nn.Linear for m in routed.modules())
    assert routed.state_dict().keys() == model.state_dict().keys()
    fused = [m for m in routed.modules() if isinstance(m, onednn.OneDNNLinear) and m.gelu]
    # exact GELU (BERT's "gelu") is fused into the intermediate and MLM-transform layers; tanh GELU is not
    assert len(fused) == (3 if hidden_act == "gelu" else 0)
    input_ids, attention_mask = _inputs()
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        got = routed(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    torch.testing.assert_close(got.hidden_states[-1], expected.hidden_states[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-4)


def test_routed_layers_still_train_and_follow_the_ordinary_route_with_gradients():
    model = _random_bert()
    onednn.route_linears(model)
    input_ids, attention_mask = _inputs()
    loss = model(input_ids=input_ids, attention_mask=attention_mask).logits.square().mean()
    loss.backward()                                                 # oneDNN's op has no gradient; F.linear does
    assert model.bert.encoder.layer[0].intermediate.dense.weight.grad is not None


def test_switched_off_by_the_environment(monkeypatch):
    onednn.available.cache_clear()
    monkeypatch.setenv("DUPMAE_EVAL_ONEDNN", "0")
    try:
        assert onednn.available() is False
        x, weight = torch.randn(3, 8), torch.randn(5, 8)
        torch.testing.assert_close(onednn.linear(x, weight, gelu=True), torch.nn.functional.gelu(x @ weight.T))
    finally:
        onednn.available.cache_clear()


def test_loaded_checkpoints_are_routed():
    from conftest import SPLADE_TINY
    from dupmae_eval.encoding.checkpoint import load_model

    model = load_model(str(SPLADE_TINY), need_mlm_head=True)
    modules = list(model.encoder.modules()) + list(model.mlm_head.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert sum(isinstance(m, onednn.OneDNNLinear) for m in modules) == 2 * 6 + 2  # 6 per layer, transform, decoder
