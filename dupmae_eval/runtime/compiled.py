"""The BERT encoder under `torch.compile`: one place for it, used by `encode`/`run --compile` and by the
training verbs' `compile` setting.

Why: on a GPU an eager BERT forward under bf16 autocast spends more than half its time outside the matrix
products - LayerNorm kept in fp32, the casts autocast inserts, residual sums, GELU, each its own kernel
launched from Python (docs/performance.md, "On a GPU"). The compiler fuses those into a few kernels; on an
H200 the bf16 encoding forward went from 39.1 % to 44.5 % of the card's bf16 matrix rate. On a CPU the same
fusion pays little and the first batch waits for a C++ compile, so it stays opt-in everywhere.

Shapes are compiled dynamically: batches are padded to a multiple of 16 tokens and the last batch of a
corpus is short, so a static compile would recompile for every (batch, length) pair it meets - up to 16
lengths for passages and 4 for queries - and fall back to eager past dynamo's recompile limit. One dynamic
graph serves them all (a batch of one text is specialised once more).

The module is compiled in place (`nn.Module.compile`), so its parameter names and state dict (and so the
checkpoints training writes) are the eager module's: compiling changes how the forward runs, not what it
computes, up to float summation order (like the device, it is not part of the encoding's cache key).
"""

from __future__ import annotations


def compile_encoder(encoder) -> None:
    """Compile `encoder` (a transformers BertModel, or any nn.Module) in place, dynamic shapes."""
    encoder.compile(dynamic=True)

