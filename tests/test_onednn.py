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


def test_the_probe_answers_the_same_under_autocast_and_fp32_keeps_its_route_after_bf16():
    """The probe's answer is cached for the process, so it must not depend on the first caller's context:
    probed under bf16 autocast it would have compared a bf16 product with fp32 and switched the fp32 route
    off for good, and a later fp32 encoding would differ in its last bits from one in a fresh process."""
    onednn.available.cache_clear()
    onednn.available_bf16.cache_clear()
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert onednn.available() is True
        generator = torch.Generator().manual_seed(4)
        x, weight = torch.randn(6, 32, generator=generator), torch.randn(40, 32, generator=generator)
        with torch.inference_mode():
            oneDNN = torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
            assert torch.equal(onednn.linear(x, weight), oneDNN)                    # the fp32 route, bit for bit
    finally:
        onednn.available.cache_clear()
        onednn.available_bf16.cache_clear()


@pytest.mark.skipif(not onednn.available_bf16(), reason="this PyTorch's oneDNN has no bf16 kernels here")
def test_under_cpu_bf16_autocast_the_products_are_bf16_with_fp32_sums():
    """Under CPU bf16 autocast a routed layer computes in bf16 (never the fp32 kernel on fp32 inputs): its
    output is the product of the bf16-rounded operands, summed in fp32 with the fp32 bias, rounded once;
    GELU is fused. Written out in float64 here, it agrees to bf16's rounding of the output (2^-8) and is
    not the fp32 product."""
    generator = torch.Generator().manual_seed(5)
    layer = torch.nn.Linear(256, 96)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(96, 256, generator=generator) * 0.1)
    routed = onednn.OneDNNLinear(layer, gelu=True)
    x = torch.randn(7, 256, generator=generator)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    rounded = x.bfloat16().double() @ weight.bfloat16().double().T + bias.double()
    expected = torch.nn.functional.gelu(rounded)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = routed(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=2 ** -8, atol=1e-3)
    fp32 = torch.nn.functional.gelu(x.double() @ weight.double().T + bias.double())
    assert float((got.double() - fp32).abs().max()) > 1e-3                          # bf16 did change the arithmetic
    with torch.autocast("cpu", dtype=torch.bfloat16):                            # training: autograd's route
        routed(x).float().sum().backward()                                         # x needs no gradient, the weight does
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


def test_the_bf16_copy_of_a_weight_follows_the_weight():
    """Made once, and made again when the weight is updated in place (a fine-tuned model reloaded into the
    same module), so a stale copy is never used; the state dict does not gain it."""
    layer = onednn.OneDNNLinear(torch.nn.Linear(8, 4))
    first = layer.bf16_weight()
    assert first is layer.bf16_weight() and first.dtype == torch.bfloat16
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert torch.equal(layer.bf16_weight(), layer.weight.detach().bfloat16())
    layer.weight = torch.nn.Parameter(torch.ones(4, 8))                            # another tensor
    assert torch.equal(layer.bf16_weight(), torch.ones(4, 8, dtype=torch.bfloat16))
    layer.weight.data = torch.full((4, 8), 2.0)                                    # new storage, same parameter
    assert torch.equal(layer.bf16_weight(), torch.full((4, 8), 2.0, dtype=torch.bfloat16))
    assert set(layer.state_dict()) == {"weight", "bias"}


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
