"""Pyserini-compatible query and document encoders over one model forward.

The encoder kinds (dupmae, cls, mean, splade, and any registered later) are one code path with
different settings, chosen by an explicit option, never by a substring of the model name; what
each kind does is written once, in `kinds.ENCODER_KINDS`.

`DupMAEQueryEncoder(..., half="dense")` is what Pyserini's FaissSearcher takes (encode(str) -> vector);
`half="sparse"` is what LuceneImpactSearcher takes (encode(str) -> {term: integer weight}).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.kinds import EncoderKind, encoder_kind
from dupmae_eval.encoding.checkpoint import ACTIVATIONS, LoadedModel, PoolingSettings, check_lengths, load_model

DEFAULT_QUANTIZATION_SCALE = 100.0


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that decides what an encoder outputs (and so part of every encoding cache key)."""

    kind: str = "dupmae"
    activation: str = "none"
    doc_topk: Optional[int] = 384          # None keeps every non-zero entry ("all")
    query_topk: Optional[int] = None
    include_sep: bool = True               # DupMAE: [SEP] pooled, as the released pre-training code does
    normalize: bool = False                # mean/cls: L2-normalise the dense half
    max_query_length: int = 64
    max_passage_length: int = 256

    @classmethod
    def for_kind(cls, kind: str, **overrides) -> "EncoderSettings":
        """Defaults of an encoder kind, with explicit overrides (None keeps the default; a top-k of
        "all" keeps every entry)."""
        settings = cls(kind=kind, **encoder_kind(kind).defaults)
        chosen = {key: (None if value == "all" else value) for key, value in overrides.items() if value is not None}
        settings = replace(settings, **chosen)
        settings.validate()
        return settings

    @classmethod
    def for_checkpoint(cls, kind: str, folder, **overrides) -> "EncoderSettings":
        """`for_kind`, where a checkpoint fine-tuned by this toolkit as the same kind supplies the defaults
        it was trained with (activation, [SEP], document top-k; recorded in its head file) and explicit
        overrides still win. Any other checkpoint gets the kind's defaults."""
        from dupmae_eval.encoding.checkpoint import trained_settings

        trained = trained_settings(folder)
        if trained.get("kind") != kind:
            return cls.for_kind(kind, **overrides)
        defaults = {key: trained[key] for key in ("activation", "include_sep", "doc_topk") if key in trained}
        if defaults.get("doc_topk", "") is None:
            defaults["doc_topk"] = "all"
        chosen = {key: value for key, value in overrides.items() if value is not None}
        return cls.for_kind(kind, **{**defaults, **chosen})

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise DupMAEEvalError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        for name in ("doc_topk", "query_topk"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DupMAEEvalError(f"--{name.replace('_', '-')} must be a positive number or 'all'")
        if self.max_query_length < 2 or self.max_passage_length < 2:
            raise DupMAEEvalError("max lengths must leave room for [CLS] and [SEP]")

    def lengths(self) -> Dict[str, int]:
        """The token lengths this encoder feeds a model (for `checkpoint.check_lengths`)."""
        return {"max_query_length": self.max_query_length, "max_passage_length": self.max_passage_length}

    @property
    def spec(self) -> EncoderKind:
        return encoder_kind(self.kind)

    @property
    def has_dense(self) -> bool:
        return self.spec.dense

    @property
    def has_sparse(self) -> bool:
        return self.spec.sparse

    def pooling(self) -> PoolingSettings:
        spec = self.spec
        return PoolingSettings(
            dense=spec.dense_pooling, sparse=spec.sparse, sparse_include_cls=spec.pools_cls,
            sparse_include_sep=self.include_sep or spec.always_pools_sep,
            activation=self.activation, normalize=self.normalize)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SparseRows:
    """A batch of sparse vectors in CSR form (vocabulary ids, float32 weights)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    dim: int

    def row(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.indices[self.indptr[i]:self.indptr[i + 1]], self.values[self.indptr[i]:self.indptr[i + 1]]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def to_scipy(self):
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))


@dataclass
class Encoded:
    """Both halves for a batch of texts; a half the encoder kind lacks is None."""

    dense: Optional[np.ndarray]            # B x d float32
    sparse: Optional[SparseRows]           # documents: top-k CSR; queries: every non-zero entry
    truncated: int                         # texts cut at the max length
    truncated_rows: Tuple[bool, ...] = ()  # which ones


class _Encoder:
    """Shared core: tokenize, one forward, split into halves. Subclasses fix documents vs queries."""

    _is_query = False

    def __init__(self, model: Union[str, LoadedModel], settings: Optional[EncoderSettings] = None,
                 device: Optional[str] = None, precision: Optional[str] = None, **overrides):
        from dupmae_eval.encoding.precision import resolve_precision

        self.precision = resolve_precision(precision, device)   # fp32 | bf16 (precision.py); part of cache keys
        self.settings = settings or EncoderSettings.for_kind(overrides.pop("kind", "dupmae"), **overrides)
        if isinstance(model, str):
            model = load_model(model, need_mlm_head=self.settings.has_sparse, lengths=self.settings.lengths())
        else:
            if self.settings.has_sparse and model.mlm_head is None:
                model = load_model(model.source, need_mlm_head=True)  # raises the clear error
            check_lengths(self.settings.lengths(), model.encoder.config.max_position_embeddings,
                          model.folder / "config.json")    # a model loaded by the caller: before any text
        self.model = model.to(device or "cpu")
        self._vocab: Optional[List[str]] = None

    @property
    def max_length(self) -> int:
        return self.settings.max_query_length if self._is_query else self.settings.max_passage_length

    @property
    def topk(self) -> Optional[int]:
        return self.settings.query_topk if self._is_query else self.settings.doc_topk

    def vocabulary(self) -> List[str]:
        """Vocabulary id -> token string (the terms of the impact index)."""
        if self._vocab is None:
            self._vocab = self.model.tokenizer.convert_ids_to_tokens(list(range(self.model.vocab_size)))
        return self._vocab

    def encode_texts(self, texts: Sequence[str]) -> Encoded:
        """Encode a batch of texts into both halves (no per-token Python loop; one forward).

        An empty text is encoded as what the tokenizer makes of it, [CLS] [SEP]: its dense half is
        defined, and its sparse half pools the positions it has (none: an empty vector), as for
        Pyserini's dense indexes, which hold every passage of the BEIR corpora, empty ones too."""
        import torch

        tokenizer = self.model.tokenizer
        batch = _pad_to_quantum(tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                          return_tensors="pt"), tokenizer.pad_token_id, self.max_length)
        truncated = self._truncated_rows(texts, batch)
        device = self.model.device
        input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with torch.inference_mode(), _autocast(device, self.precision):
            dense, sparse = self.model.forward(input_ids, attention_mask, self.settings.pooling())
        return Encoded(dense.cpu().numpy().astype(np.float32) if dense is not None else None,
                       _to_sparse_rows(sparse, self.topk) if sparse is not None else None, sum(truncated),
                       truncated)

    def _truncated_rows(self, texts: Sequence[str], batch) -> Tuple[bool, ...]:
        """Which texts the max length cut.

        A fast tokenizer says it itself: each text's encoding keeps what truncation cut off in its
        `overflowing` list, so no text is tokenized twice (tokenizing SciFact's long abstracts again,
        untruncated, cost 1-2 % of a MiniLM encoding on a 2-core CPU). A slow tokenizer has no
        encodings: only the texts that fill the max length exactly can have been cut, so only they are
        tokenized again, untruncated."""
        encodings = getattr(batch, "encodings", None)
        if encodings is not None and len(encodings) == len(texts):
            return tuple(bool(encoding.overflowing) for encoding in encodings)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        at_limit = [row for row, length in enumerate(lengths) if length >= self.max_length]
        cut = [False] * len(texts)
        if at_limit:
            full = self.model.tokenizer([texts[row] for row in at_limit], add_special_tokens=True)["input_ids"]
            for row, ids in zip(at_limit, full):
                cut[row] = len(ids) > self.max_length
        return tuple(cut)


def _pad_to_quantum(batch, pad_id: int, max_length: int):
    """The batch padded to a multiple of 16 tokens (never past the max length, which truncation already
    bounds it by: a max length of 150 gives 16, 32, ..., 144, 150). The encoder's products then take one of
    a few sequence lengths instead of every length a batch happens to have; oneDNN compiles and caches one
    kernel per shape, and over a long run the exact lengths keep adding cache entries whose churn fragments
    the heap (docs/performance.md, "Memory over long runs"). Padded positions carry attention mask 0 and
    are never pooled, so the halves are unchanged (up to float summation order). Padding here rather than
    by the tokenizer's pad_to_multiple_of, which refuses max lengths that are not multiples of it.
    DUPMAE_EVAL_MEMORY_GUARD=0 keeps exact lengths (the old behaviour)."""
    import torch

    from dupmae_eval.runtime import memory

    width = batch["input_ids"].shape[1]
    target = min(-(-width // _SEQUENCE_QUANTUM) * _SEQUENCE_QUANTUM, max(width, max_length))
    if not memory.enabled() or target == width:
        return batch
    for key in list(batch.keys()):
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.nn.functional.pad(batch[key], (0, target - width), value=fill)
    return batch


_SEQUENCE_QUANTUM = 16


def _autocast(device, precision: Optional[str] = None):
    """The forward's arithmetic (`precision.autocast`): bf16 autocast when the precision resolves to bf16
    (a GPU's default), nothing for fp32 (a CPU's default)."""
    from dupmae_eval.encoding.precision import autocast, resolve_precision

    return autocast(device, resolve_precision(precision, device))


def _to_sparse_rows(pooled, topk: Optional[int]) -> SparseRows:
    """Keep each row's top-k entries (or all), dropping zeros and -inf (nothing pooled)."""
    import torch

    pooled = pooled.float()
    if topk is not None and topk < pooled.shape[1]:
        values, indices = torch.topk(pooled, topk, dim=1)
        # sort kept entries by vocabulary id, so rows are canonical CSR
        order = torch.argsort(indices, dim=1)
        values, indices = torch.gather(values, 1, order), torch.gather(indices, 1, order)
    else:
        values = pooled
        indices = torch.arange(pooled.shape[1], device=pooled.device).expand_as(pooled)
    keep = torch.isfinite(values) & (values != 0)
    counts = keep.sum(dim=1)
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts.cpu().numpy(), out=indptr[1:])
    return SparseRows(indptr, indices[keep].cpu().numpy().astype(np.int32),
                      values[keep].cpu().numpy().astype(np.float32), int(pooled.shape[1]))


class DupMAEDocumentEncoder(_Encoder):
    """Encodes passages (title + " " + text) into a dense vector and a top-k sparse vector.

    `encode(texts, titles=None)` follows Pyserini's DocumentEncoder contract and returns the
    dense half when the kind has one, else the sparse half as {term: weight} dicts;
    `encode_texts` returns both halves at once.
    """

    def encode(self, texts: Sequence[str], titles: Optional[Sequence[str]] = None, **kwargs):
        if titles is not None:
            texts = [f"{title} {text}" if title else text for title, text in zip(titles, texts)]
        encoded = self.encode_texts(texts)
        if encoded.dense is not None:
            return encoded.dense
        vocab = self.vocabulary()
        return [{vocab[i]: float(w) for i, w in zip(*encoded.sparse.row(r))} for r in range(len(encoded.sparse))]


class DupMAEQueryEncoder(_Encoder):
    """Encodes a query for Pyserini's searchers.

    half="dense": encode(str) -> float32 vector (FaissSearcher's contract);
    half="sparse": encode(str) -> {term: positive integer weight} quantised with `quantization_scale`
    (LuceneImpactSearcher's contract; negative weights cannot enter a Lucene impact query).
    """

    _is_query = True

    def __init__(self, model: Union[str, LoadedModel], settings: Optional[EncoderSettings] = None,
                 half: str = "dense", quantization_scale: float = DEFAULT_QUANTIZATION_SCALE,
                 device: Optional[str] = None, precision: Optional[str] = None, **overrides):
        super().__init__(model, settings, device, precision, **overrides)
        if half not in ("dense", "sparse"):
            raise DupMAEEvalError(f"half must be 'dense' or 'sparse', not {half!r}")
        if half == "dense" and not self.settings.has_dense or half == "sparse" and not self.settings.has_sparse:
            raise DupMAEEvalError(f"encoder kind {self.settings.kind!r} has no {half} half")
        self.half = half
        self.quantization_scale = float(quantization_scale)

    def encode(self, query: str, **kwargs):
        encoded = self.encode_texts([query])
        if self.half == "dense":
            return encoded.dense[0]
        return quantized_terms(*encoded.sparse.row(0), self.vocabulary(), self.quantization_scale)

    def encode_batch(self, queries: Sequence[str], batch_size: int = 64):
        """Many queries in batches of `batch_size` forwards rather than one each: a Q x d float32 array
        (dense half) or a list of {term: weight} (sparse half). Pyserini's FaissSearcher.batch_search
        calls this when the encoder has it; values equal `encode` up to float summation order."""
        if self.half == "dense" and not queries:
            return np.zeros((0, self.model.dense_dim), dtype=np.float32)
        parts = [self.encode_texts(list(queries[start:start + batch_size]))
                 for start in range(0, len(queries), batch_size)]
        if self.half == "dense":
            return np.concatenate([part.dense for part in parts])
        vocabulary = self.vocabulary()
        return [quantized_terms(*part.sparse.row(row), vocabulary, self.quantization_scale)
                for part in parts for row in range(len(part.sparse))]


def quantized_terms(indices: np.ndarray, values: np.ndarray, vocabulary: Sequence[str],
                    scale: float) -> Dict[str, int]:
    """{term: round(weight * scale)} for the entries that stay positive after rounding."""
    quantized = np.rint(values.astype(np.float64) * scale).astype(np.int64)
    return {vocabulary[i]: int(q) for i, q in zip(indices.tolist(), quantized.tolist()) if q > 0}


def encode_queries(encoder: DupMAEQueryEncoder, texts: Sequence[str], batch_size: int = 64):
    """Both halves for many queries: (dense Q x d or None, sparse Q x vocabulary dense array or None,
    number truncated). The sparse half keeps every entry unless the settings give a query top-k."""
    dense, sparse, truncated = [], [], 0
    for start in range(0, len(texts), batch_size):
        encoded = encoder.encode_texts(texts[start:start + batch_size])
        truncated += encoded.truncated
        if encoded.dense is not None:
            dense.append(encoded.dense)
        if encoded.sparse is not None:
            sparse.append(encoded.sparse.to_scipy().toarray())
    return (np.concatenate(dense) if dense else None, np.concatenate(sparse) if sparse else None, truncated)
