"""CPU matrix products through oneDNN instead of MKL: fp32, and bf16 under autocast.

Why: PyTorch's CPU build sends fp32 `nn.Linear` / `addmm` to MKL, and MKL picks its code path by
processor vendor: on AMD processors it runs AVX2 kernels even where the core has AVX-512. oneDNN,
shipped in the same PyTorch build, picks by instruction set. Measured on this project's 2-core AMD
EPYC (Zen 5, AVX-512): a 2048^3 fp32 GEMM at 199 GFLOP/s through MKL and 451 through oneDNN; the
vocabulary projection of splade-tiny (256 x 128 x 30,522) at 125 vs 405. The arithmetic stays fp32;
only the summation order differs (relative differences ~1e-7, zero in the vocabulary projection).

Under CPU bf16 autocast (`--precision bf16`) the same op runs with bfloat16 inputs and weights, fp32
accumulation and the bias added before the one rounding to bf16; the weight's bf16 copy is made once per
layer (`OneDNNLinear.bf16_weight`), not at every call as autocast's own route does, and the bias and
GELU are fused rather than a broadcast copy and a pass of their own. fp32 inputs are never sent to an
fp32 kernel under bf16 autocast: the precision asked for is the precision computed.

`linear()` is the function; `OneDNNLinear` is a drop-in `nn.Linear` (same parameters, optional
fused erf-GELU); `route_linears()` swaps a loaded model's layers in place. Anywhere oneDNN does not
apply (GPU, gradients, torch.compile, autocast to another dtype, a PyTorch without the op) the ordinary
`torch.nn.functional.linear` runs, so results never depend on the route. `DUPMAE_EVAL_ONEDNN=0`
turns the route off (for comparisons).
"""

from __future__ import annotations

import os
import weakref
from functools import lru_cache
from typing import Optional

import torch


@lru_cache(maxsize=None)
def available() -> bool:
    """Whether oneDNN's fused linear op exists here and agrees with `F.linear` on a probe.

    The op (`torch.ops.mkldnn._linear_pointwise`) is the one PyTorch's own compiler emits for
    CPU linears; it is not public API, so it is checked once rather than trusted."""
    if os.environ.get("DUPMAE_EVAL_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=generator) for shape in ((5, 3, 16), (24, 16), (24,)))
        # the probe compares fp32 with fp32 whatever context the first caller is in (under autocast the
        # ordinary route would round to bf16, and the answer, cached for the process, would be wrong)
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            fast = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
            slow = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
        return fast.shape == slow.shape and bool(torch.allclose(fast, slow, rtol=1e-5, atol=1e-5))
    except (RuntimeError, AttributeError, TypeError):
        return False


@lru_cache(maxsize=None)
def available_bf16() -> bool:
    """Whether the op also takes bfloat16 here (oneDNN's bf16 kernels, native with AVX512-BF16 or AMX)
    and agrees with the product written out in fp32 on a probe to bf16's rounding."""
    if not available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=generator) for shape in ((5, 3, 64), (24, 64), (24,)))
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            fast = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), w.bfloat16(), b, "none", [], "")
            slow = x.bfloat16().float() @ w.bfloat16().float().T + b
        return fast.dtype == torch.bfloat16 and bool(torch.allclose(fast.float(), slow, rtol=2e-2, atol=2e-2))
    except (RuntimeError, AttributeError, TypeError):
        return False


def _plain(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """No gradients wanted, not being traced, on the CPU. Under torch.compile (`--compile`) the compiler
    lowers `F.linear` itself; its lowering of this op requires frozen weights, so traced code takes the
    ordinary route."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return not torch.compiler.is_compiling() and x.device.type == "cpu" and not needs_grad


def _eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The fp32 route: fp32 operands and no CPU autocast (which asks for another precision)."""
    return (_plain(x, weight) and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and available())


def bf16_autocast(x: torch.Tensor) -> bool:
    """Whether a product on `x` should run in bf16 through oneDNN: CPU autocast to bfloat16 is on, no
    gradients are wanted, and oneDNN's bf16 op is here."""
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and x.requires_grad) and available_bf16())


def linear(x: torch.Tensor, weight: torch.Tensor, bias=None, gelu: bool = False,
           weight_bf16: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x @ weight.T + bias (then erf-GELU if asked), through oneDNN where it applies: in fp32, or in bf16
    under CPU bf16 autocast (`weight_bf16`: the weight's bf16 copy where the caller keeps one)."""
    if _eligible(x, weight):
        return _pointwise(x, weight, bias, gelu)
    if _plain(x, weight) and bf16_autocast(x):   # gradients wanted (training under autocast): F.linear below
        return _bf16_product(x, weight_bf16 if weight_bf16 is not None else weight.detach().to(torch.bfloat16),
                             bias, gelu)
    out = torch.nn.functional.linear(x, weight, bias)
    return torch.nn.functional.gelu(out) if gelu else out


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias, gelu: bool) -> torch.Tensor:
    """oneDNN's linear op, with the exact GELU fused when asked."""
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _bf16_product(x: torch.Tensor, weight_bf16: torch.Tensor, bias, gelu: bool) -> torch.Tensor:
    """The bf16 route: x rounded to bf16 (if it is not already), the fp32 bias added in the fp32 sums."""
    operand = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
    return _pointwise(operand, weight_bf16, None if bias is None else bias.detach().float(), gelu)


def vocabulary_linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """x @ weight.T + bias for a vocabulary-wide output (the training objective's blocks): on a CPU in fp32
    without autocast, oneDNN's product without the bias, then the bias added in place. Measured twice here
    for a 549-row block of BERT-base's vocabulary projection (549 x 768 x 30,522): 187 / 200 ms this way,
    244 / 185 ms with the bias fused into oneDNN's product, 365 / 283 ms through MKL's `addmm` (the route
    before). Elsewhere (a GPU, autocast, gradients) `F.linear` with its fused bias, as before."""
    if not _eligible(x, weight) or torch.is_autocast_enabled(x.device.type):
        return torch.nn.functional.linear(x, weight, bias)
    out = torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return out if bias is None else out.add_(bias)


class OneDNNLinear(torch.nn.Linear):
    """An `nn.Linear` (same parameters, same state-dict keys) computed by `linear()`; with
    `gelu=True` it also applies the exact GELU that followed it, in the same pass."""

    def __init__(self, source: torch.nn.Linear, gelu: bool = False):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = source.in_features, source.out_features
        self.weight, self.bias = source.weight, source.bias
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain(x, self.weight) and bf16_autocast(x):
            return _bf16_product(x, self.bf16_weight(), self.bias, self.gelu)
        return linear(x, self.weight, self.bias, gelu=self.gelu)

    def bf16_weight(self) -> torch.Tensor:
        """The weight in bfloat16, made once and made again only when the weight changes: another tensor,
        new storage under the same parameter (`.data =`), or an in-place update. The weight is held by a
        weak reference, so a new tensor at a freed one's address is never taken for it. Not a parameter or
        buffer: the state dict is unchanged."""
        weight = self.weight
        source = getattr(self, "_bf16_source", None)   # (weak reference to the weight, its storage, its version)
        if source is None or source[0]() is not weight or source[1:] != (weight.data_ptr(), weight._version):
            with torch.no_grad():
                self._bf16_copy = weight.detach().to(torch.bfloat16)
            self._bf16_source = (weakref.ref(weight), weight.data_ptr(), weight._version)
        return self._bf16_copy

    def extra_repr(self) -> str:
        return super().extra_repr() + (", gelu=True" if self.gelu else "")


def route_linears(module: torch.nn.Module) -> int:
    """Replace every `nn.Linear` under `module` by a `OneDNNLinear` sharing its parameters, fusing the
    exact GELU of BERT's intermediate and MLM-transform layers; returns how many layers are routed
    (those replaced now and any routed before, so a second call changes nothing and counts the same)."""
    replaced = 0
    for parent in list(module.modules()):
        _fuse_gelu(parent, "dense", "intermediate_act_fn")   # BertIntermediate
        _fuse_gelu(parent, "dense", "transform_act_fn")      # BertPredictionHeadTransform
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, OneDNNLinear(child))
                replaced += 1
            elif isinstance(child, OneDNNLinear):
                replaced += 1
    return replaced


def _fuse_gelu(parent: torch.nn.Module, linear_name: str, activation_name: str) -> None:
    dense, activation = getattr(parent, linear_name, None), getattr(parent, activation_name, None)
    # transformers' GELUActivation for BERT's hidden_act "gelu" holds the exact (erf) GELU as `.act`
    if type(dense) is torch.nn.Linear and getattr(activation, "act", None) is torch.nn.functional.gelu:
        setattr(parent, linear_name, OneDNNLinear(dense, gelu=True))
        setattr(parent, activation_name, torch.nn.Identity())
