"""The arithmetic an encoder's forward runs in: fp32, or bf16 products with fp32 sums (autocast).

- fp32: the CPU's default, so published figures reproduce to the last digit.
- bf16: torch's autocast (CUDA, or the CPU): the matrix products in bfloat16, LayerNorm, softmax and every
  sum kept in fp32; on the CPU the linear layers run oneDNN's bf16 product with each weight's bf16 copy made
  once (`runtime/onednn.py`). The OT max-pool selects in the tile's bf16 and widens the maxima to fp32, and
  the exact score accumulates in fp32 as on the GPU. A CPU with AVX512-BF16 or AMX runs bf16 products in
  hardware (on a Zen 4 AMD EPYC with AVX512-BF16 a 2048-cube product measured about 2x the fp32 rate).
- auto: bf16 where the device has it in hardware (a CUDA GPU; a CPU whose flags list avx512_bf16 or
  amx_bf16), fp32 elsewhere; the choice is printed.
- not given: the device's default as before: fp32 on a CPU, bf16 on a GPU.

The resolved precision is part of an encoding's cache key (bf16 only, so fp32 keys are unchanged) and is
recorded in the run's sidecar.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Optional, Tuple

from dupmae_eval.errors import DupMAEEvalError

PRECISIONS = ("fp32", "bf16", "auto")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_features() -> Tuple[str, ...]:
    """The bf16-related instruction-set flags this CPU reports (Linux /proc/cpuinfo; none elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in ("avx2", "avx512f", *BF16_FLAGS, "amx_tile") if flag in flags)
    except OSError:
        pass
    return ()


def cpu_has_bf16() -> bool:
    return any(flag in cpu_features() for flag in BF16_FLAGS)


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device or "cpu").split(":")[0]


def resolve_precision(precision: Optional[str], device=None) -> str:
    """'fp32' or 'bf16' for this device (see the module's docstring)."""
    on_gpu = _device_type(device) == "cuda"
    if precision is None:
        return "bf16" if on_gpu else "fp32"
    if precision not in PRECISIONS:
        raise DupMAEEvalError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if on_gpu or cpu_has_bf16() else "fp32"
    return precision


def describe_auto(device=None) -> str:
    """One line saying what `auto` chose and why."""
    chosen = resolve_precision("auto", device)
    if _device_type(device) == "cuda":
        return "precision auto: bf16 (a CUDA device)"
    flags = [flag for flag in cpu_features() if flag in BF16_FLAGS]
    return (f"precision auto: bf16 (this CPU has {', '.join(flags)})" if chosen == "bf16"
            else "precision auto: fp32 (this CPU has no bf16 instructions: neither avx512_bf16 nor amx_bf16)")


def autocast(device, precision: str):
    """The context an encoder's forward runs in: bf16 autocast on the device's type, or nothing for fp32."""
    import torch

    if precision == "bf16":
        return torch.autocast(_device_type(device), dtype=torch.bfloat16)
    return contextlib.nullcontext()
