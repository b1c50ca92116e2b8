"""Corpus encoding: streamed, length-sorted batches, written in shards that survive a kill.

The corpus is read as a stream in sort windows of a fixed number of passages (`sort_window`: it depends on
the batch size alone). Each window is encoded in batches sorted by length (little padding), so the
passages that share a forward, and with them every float of every vector, never depend on the shard
size. Shards are storage: `shard_size` consecutive passages written atomically as one .npz file as soon
as all their rows are encoded (a shard may span two windows). A shard file that exists is complete, so a
rerun after a crash or kill -9 skips it (encoding again only the batches that hold a missing shard's
passages) and the final vectors are identical to an uninterrupted run. A manifest is written when every
shard is there; only then is the encoding used. The shard size is not part of the encoding's cache key:
an encoding is used whatever shard size made it, and an unfinished one resumes with its own.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dupmae_eval import cache
from dupmae_eval.runtime import memory
from dupmae_eval.files import atomic_output
from dupmae_eval.data.datasets import Dataset
from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.checkpoint import HEAD_FILE, LoadedModel

FORMAT_VERSION = 2
"""2: batches formed within sort windows (`sort_window`), independent of the shard size; 1: within each shard."""

BF16_ARITHMETIC = 2
"""In a bf16 encoding's cache key. 2: on the CPU the linear layers run oneDNN's bf16 product (weights cast once,
fp32 bias) and never the fp32 kernel. Under 1, a process whose first encoding was fp32 ran a later "bf16" one's
layers through oneDNN's fp32 kernel, so an encoding cached then as bf16 may hold fp32 products: none is reused."""

TOKENIZATION_PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "Résumé of naïve café owners in São Paulo: Ångström, Æsir, Øre, straße, İstanbul.",
    "COVID-19 vaccines (BNT162b2, mRNA-1273) cut hospitalisation by 90.5% [p < 0.001]; see doi:10.1056/NEJMoa2034577.",
    "中文分词测试，日本語のテキスト、한국어 문장.",
    "Emoji 😀👍🏽 and symbols ©®™ ±×÷ ≤≥≠ → ∞ µg/mL α-β γδ.",
    "URLs like https://example.org/a_b?c=d&e=f#g, e-mails like first.last@example.com, tabs\tand\u00a0spaces.",
    "ANTIDISESTABLISHMENTARIANISM pneumonoultramicroscopicsilicovolcanoconiosis don't won't it's O'Neill's.",
    "Zero-width\u200bjoiner, soft\u00adhyphen, combining e\u0301, full-width ＡＢＣ１２３, ligature ﬁ.",
    "",
)
"""Texts every encoding's key tokenizes (`tokenization_digest`): accents and case, other scripts, emoji and
symbols, numbers and punctuation, invisible and compatibility characters, the empty text. The checkpoint's
files are hashed into the key, but how a tokenizer library turns them into ids is code, which an upgrade of
transformers or tokenizers can change (a slow vocabulary converted to a fast tokenizer another way, another
Unicode normalisation); these texts' ids change with it, and so does the key."""

PLAN = "plan.json"
"""The shard size an unfinished encoding was started with (a rerun with another --shard-size resumes it as is)."""


SEARCH_BLOCK = 10_000
"""Documents per block that `CorpusEncoding.shards()` hands to search and indexing, whatever shard size the
encoding is stored in. The block decides the shapes of the score products, and a BLAS picks its kernels,
and so the float summation, by shape: with a fixed block the scores (and an impact index's counts) are the
same to the last bit for every shard layout, so an encoding is reused whatever --shard-size made it."""


class CorpusEncoding:
    """A finished encoding on disk. It is read one block of `SEARCH_BLOCK` documents at a time (`shards()`),
    so search over a corpus larger than memory streams; `dense` / `sparse` load everything, for the paths
    that need it whole."""

    def __init__(self, folder: Path, meta: dict, docids: List[str], offsets: List[int],
                 halves: Tuple[str, ...] = ("dense", "sparse")):
        self.folder, self.meta, self.docids, self.offsets = folder, meta, docids, offsets
        self.halves = halves          # the halves read (an encoding of another kind may hold more)
        self._dense = self._sparse = None
        self._loaded = False

    def shard_paths(self) -> List[Path]:
        return [self.folder / f"shard-{shard:05d}.npz" for shard in range(self.meta["shards"])]

    @property
    def blocks(self) -> int:
        """How many blocks `shards()` yields."""
        return -(-len(self.docids) // SEARCH_BLOCK)

    def _stored_shards(self) -> Iterator[Tuple[Optional[np.ndarray], Optional["object"]]]:
        from scipy.sparse import csr_matrix

        for path in self.shard_paths():
            with np.load(path) as arrays:
                dense = arrays["dense"] if "dense" in arrays and "dense" in self.halves else None
                sparse = (csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                     shape=tuple(arrays["shape"]))
                          if "indptr" in arrays and "sparse" in self.halves else None)
            yield dense, sparse

    def shards(self) -> Iterator[Tuple[int, Optional[np.ndarray], Optional["object"]]]:
        """(offset of the block's first document, its dense rows or None, its sparse CSR rows or None), in
        blocks of `SEARCH_BLOCK` documents (the last one shorter) cut from the stored shards, each a fresh
        array, never a view, whatever the shard layout."""
        from scipy.sparse import vstack

        dense_parts: list = []
        sparse_parts: list = []
        held, offset = 0, 0

        def cut(rows: int):
            nonlocal dense_parts, sparse_parts, held
            dense = sparse = None
            if dense_parts:
                whole = np.concatenate(dense_parts)
                dense, dense_parts = np.array(whole[:rows]), [whole[rows:]] if rows < len(whole) else []
            if sparse_parts:
                whole = vstack(sparse_parts, format="csr")
                sparse, sparse_parts = whole[:rows], [whole[rows:]] if rows < whole.shape[0] else []
            held -= rows
            return dense, sparse

        for dense, sparse in self._stored_shards():
            if dense is not None:
                dense_parts.append(dense)
            if sparse is not None:
                sparse_parts.append(sparse)
            held += len(dense) if dense is not None else sparse.shape[0] if sparse is not None else 0
            while held >= SEARCH_BLOCK:
                block_dense, block_sparse = cut(SEARCH_BLOCK)
                yield offset, block_dense, block_sparse
                offset += SEARCH_BLOCK
        if held:
            block_dense, block_sparse = cut(held)
            yield offset, block_dense, block_sparse

    def _load(self) -> None:
        from scipy.sparse import vstack

        if self._loaded:
            return
        dense, sparse = [], []
        for _, shard_dense, shard_sparse in self.shards():
            if shard_dense is not None:
                dense.append(shard_dense)
            if shard_sparse is not None:
                sparse.append(shard_sparse)
        self._dense = np.concatenate(dense) if dense else None
        self._sparse = vstack(sparse, format="csr") if sparse else None
        self._loaded = True

    @property
    def has_dense(self) -> bool:
        return self.meta.get("dense_dim") is not None and "dense" in self.halves

    @property
    def has_sparse(self) -> bool:
        from dupmae_eval.encoding.kinds import encoder_kind

        return encoder_kind(self.meta["settings"]["kind"]).sparse and "sparse" in self.halves

    @property
    def dense(self) -> Optional[np.ndarray]:
        self._load()
        return self._dense

    @property
    def sparse(self):
        self._load()
        return self._sparse


def model_fingerprint(model: LoadedModel) -> str:
    """Hash of the checkpoint's files (weights, config, tokenizer, head): part of encoding cache keys.
    Content only, so the same checkpoint reached by another path or name reuses its encodings."""
    return folder_fingerprint(model.folder)


def tokenization_digest(tokenizer) -> str:
    """A digest of the token ids `tokenizer` gives `TOKENIZATION_PROBES` (special tokens included, nothing
    cut): part of every encoding's key, so an encoding made when the tokenizer library split text otherwise is
    not reused, while an upgrade that splits it the same way keeps every cached encoding."""
    ids = tokenizer(list(TOKENIZATION_PROBES), add_special_tokens=True, truncation=False)["input_ids"]
    return cache.settings_key({"probe_ids": [list(map(int, row)) for row in ids]})


def folder_tokenization_digest(folder: Path) -> str:
    """`tokenization_digest` of a checkpoint folder's tokenizer, loaded as `load_model` loads it (reproduce's
    reuse check, which does not load the model); memoised per folder content within the process."""
    return _folder_tokenization_digest(str(Path(folder).resolve()), folder_fingerprint(folder))


@functools.lru_cache(maxsize=None)
def _folder_tokenization_digest(folder: str, fingerprint: str) -> str:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise DupMAEEvalError(f"{folder}: could not load its tokenizer ({exc.__class__.__name__}: {exc})") from None
    return tokenization_digest(tokenizer)


def folder_fingerprint(folder: Path) -> str:
    """`model_fingerprint` of a checkpoint folder, without loading the model (reproduce's reuse check)."""
    parts = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.suffix in (".json", ".txt", ".safetensors", ".bin", ".model")
                               or path.name == HEAD_FILE):
            parts.append(f"{path.name}:{cache.file_digest(path)}")
    return cache.settings_key({"model": parts})


def sort_window(batch_size: int) -> int:
    """How many consecutive passages are length-sorted and cut into batches together: the smallest of
    1,000, 2,000, 5,000, 10,000, 20,000, 50,000, ... that holds 50 batches (2,000 at batch size 32).
    It depends on the batch size alone, so the batches, and the vectors, are the same at every shard size;
    the round values make the usual shard sizes (500, 1,000, 10,000) start and end on window edges."""
    window, steps = 1_000, (2, 2.5, 2)
    while window < 50 * batch_size:
        window = int(window * steps[0])
        steps = steps[1:] + steps[:1]
    return window


def encoding_folder(dataset: Dataset, model: LoadedModel, settings: EncoderSettings, batch_size: int,
                    precision: str = "fp32") -> Path:
    """The cache folder of an encoding. The batch size is in the key (it decides which passages share a
    forward, and so the exact float rounding of each vector); the shard size is not (shards are storage).
    A bf16 encoding (`precision.py`) has its own key, with the version of its arithmetic (`BF16_ARITHMETIC`),
    the device type and whether the encoder was compiled: in bf16 these change more than summation order
    (a GPU's autocast and the CPU's oneDNN route round different intermediates to bf16, and the compiler
    fuses away some roundings; SciFact nDCG@10 moves in the fourth digit, docs/performance.md), so a bf16
    encoding is never reused, or resumed, by another device or mode. In fp32 they change only the order
    of float sums, like the thread count, and are left out. An encoding whose batches keep their exact
    lengths (DUPMAE_EVAL_MEMORY_GUARD=0: another padding, other last digits) has its own key too."""
    return encoding_folder_of(dataset, model_fingerprint(model), settings, batch_size, precision,
                              model.device.type, model.compiled, tokenization_digest(model.tokenizer))


def encoding_folder_of(dataset: Dataset, fingerprint: str, settings: EncoderSettings, batch_size: int,
                       precision: str = "fp32", device_type: str = "cpu", compiled: bool = False,
                       tokenization: str = "") -> Path:
    """`encoding_folder` from a checkpoint's `folder_fingerprint` and `folder_tokenization_digest`, without
    loading the model: what reproduce puts in a cell's identity, so a change that makes another encoding (its
    arithmetic's version, the format, the padding, the tokenizer library's splitting) also redoes the run made
    from it. `device_type` ("cpu", "cuda") and `compiled` matter only to a bf16 encoding."""
    key = cache.settings_key({"corpus": dataset.corpus_fingerprint(), "model": fingerprint,
                              "tokenization": tokenization,
                              "settings": settings.as_dict(), "format": FORMAT_VERSION, "batch_size": batch_size,
                              **({"precision": precision, "bf16_arithmetic": BF16_ARITHMETIC,
                                  "device": device_type, "compiled": compiled}
                                 if precision != "fp32" else {}),
                              **({"exact_lengths": True} if not memory.enabled() else {})})
    return cache.home() / "encodings" / f"{dataset.cache_name}-{settings.kind}-{key}"


def _document_identity(settings: EncoderSettings) -> dict:
    """The settings that decide a document encoding's numbers, beside the halves' on/off switches: the
    query-only ones are left out, and the top-k only matters to a sparse half."""
    identity = settings.as_dict()
    for name in ("kind", "query_topk", "max_query_length"):
        identity.pop(name)
    if not settings.has_sparse:
        identity.pop("doc_topk")
    pooling = asdict(settings.pooling())
    identity.update({f"pooling.{name}": value for name, value in pooling.items() if name not in ("dense", "sparse")})
    return identity


def _holds_halves_of(theirs: EncoderSettings, wanted: EncoderSettings) -> bool:
    """True when an encoding made with `theirs` holds every half `wanted` makes, each computed the same way:
    the same dense pooling, the same sparse pooling, and equal settings otherwise. One forward makes all
    of a kind's halves, and no half depends on another, so such a half is the very array an encoding of
    `wanted` would hold."""
    if theirs.kind == wanted.kind or (wanted.has_dense and theirs.spec.dense_pooling != wanted.spec.dense_pooling):
        return False
    if wanted.has_sparse and not theirs.has_sparse:
        return False
    mine, other = _document_identity(wanted), _document_identity(theirs)
    if not wanted.has_sparse:
        other.pop("doc_topk", None)
    return mine == other


def covering_encoding(dataset: Dataset, encoder: DupMAEDocumentEncoder, batch_size: int) -> Optional[Path]:
    """A finished, undamaged encoding of another kind that holds every half of this encoder's (`dupmae`'s
    holds `ot`'s and `cls`'s), made from the same corpus, checkpoint files, batch size, precision, padding
    and format with the same settings for those halves; None when there is none (then encode)."""
    import json

    root = cache.home() / "encodings"
    if not root.is_dir():
        return None
    wanted = encoder.settings
    expected = {"corpus_sha256": dataset.corpus_fingerprint(), "model_fingerprint": model_fingerprint(encoder.model),
                "precision": encoder.precision, "batch_size": batch_size, "format": FORMAT_VERSION,
                "padding_quantum": _padding_quantum()}
    for folder in sorted(root.iterdir()):
        if not folder.name.startswith(f"{dataset.cache_name}-") or not (folder / "manifest.json").is_file():
            continue
        try:
            meta = json.loads((folder / "manifest.json").read_text())
            theirs = EncoderSettings(**meta["settings"])
            theirs.spec
        except (OSError, ValueError, KeyError, TypeError, DupMAEEvalError):
            continue
        if any(meta.get(key) != value for key, value in expected.items()) or not _holds_halves_of(theirs, wanted):
            continue
        if folder != encoding_folder(dataset, encoder.model, theirs, batch_size, encoder.precision):
            continue                         # not where that encoding would be made now: not trusted
        if _damaged_shards(folder, meta):
            continue                         # it is repaired when it is used as itself, never read damaged
        return folder
    return None


def _padding_quantum() -> Optional[int]:
    from dupmae_eval.encoding.encoders import _SEQUENCE_QUANTUM

    return _SEQUENCE_QUANTUM if memory.enabled() else None


def encode_corpus(dataset: Dataset, encoder: DupMAEDocumentEncoder, batch_size: int = 32,
                  shard_size: int = 10_000, rank: int = 0, world_size: int = 1,
                  progress: bool = True) -> Path:
    """Encode the corpus into the cache (resuming finished shards); return the encoding folder. When a
    finished encoding of another kind holds every half this one would (`covering_encoding`), that folder
    is returned instead and nothing is encoded.

    With world_size > 1 (torchrun), rank r encodes the shards `_owner` gives it; the caller's rank 0
    writes the manifest once every rank is done (see `finish_manifest`).
    """
    import sys

    folder = encoding_folder(dataset, encoder.model, encoder.settings, batch_size, encoder.precision)
    if (folder / "manifest.json").is_file():
        if rank != 0 or not _clear_damaged_shards(folder):
            return folder
    elif (covering := covering_encoding(dataset, encoder, batch_size)) is not None:
        if rank == 0:
            kind = covering.name[len(dataset.cache_name) + 1:].rsplit("-", 1)[0]
            print(f"dupmae-eval: the {kind} encoding {covering} holds this "
                  f"{encoder.settings.kind} encoding's vectors; reading them from it", file=sys.stderr, flush=True)
        return covering
    total, shards, shard_size = _plan(dataset, shard_size, folder)   # refuses duplicate ids before any write
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="passage", desc=f"encode {dataset.name} [{encoder.settings.kind}]",
               disable=not progress, smoothing=0.05)
    try:
        if not (folder / PLAN).is_file():
            cache.write_json(folder / PLAN, {"shard_size": shard_size})
        missing = {s for s in range(shards) if _owner(s, shard_size, batch_size, world_size) == rank
                   and not (folder / f"shard-{s:05d}.npz").is_file()}
        _encode_windows(folder, dataset, encoder, batch_size, shard_size, total, missing, bar)
    except BaseException:
        bar.close()                       # the bar's line ends before the error's line starts
        if created and not any(p.name != PLAN for p in folder.iterdir()):   # nothing finished: no folder left
            (folder / PLAN).unlink(missing_ok=True)
            folder.rmdir()
        raise
    bar.close()
    if world_size == 1:
        finish_manifest(folder, dataset, encoder, shards, total, batch_size)
    return folder


def _owner(shard: int, shard_size: int, batch_size: int, world_size: int) -> int:
    """The torchrun rank that encodes a shard: by shard when shards are at least a sort window long, else
    by the window the shard starts in (so ranks rarely need the same batches)."""
    window = sort_window(batch_size)
    return (shard if shard_size >= window else shard * shard_size // window) % world_size


def _encode_windows(folder: Path, dataset: Dataset, encoder: DupMAEDocumentEncoder, batch_size: int,
                    shard_size: int, total: int, missing, bar) -> None:
    """Encode, window by window, the batches that hold a passage of a `missing` shard; write each such
    shard as soon as all its rows are there."""
    window = sort_window(batch_size)
    rows: dict = {}                   # shard -> {position in the shard: (docid, dense row, sparse row, cut)}
    stream = dataset.passages()
    for start in range(0, total, window):
        passages = list(islice(stream, window))
        wanted = [(start + i) // shard_size in missing for i in range(len(passages))]
        if not any(wanted):
            bar.update(len(passages))
            continue
        texts = [p.flat_text() for p in passages]
        for batch in sorted_batches([len(t) for t in texts], batch_size):
            if not any(wanted[i] for i in batch):
                bar.update(len(batch))
                continue
            encoded = encoder.encode_texts([texts[i] for i in batch])
            for row, i in enumerate(batch):
                if wanted[i]:
                    shard, position = divmod(start + i, shard_size)
                    rows.setdefault(shard, {})[position] = (
                        passages[i].docid, None if encoded.dense is None else encoded.dense[row],
                        None if encoded.sparse is None else encoded.sparse.row(row), encoded.truncated_rows[row])
            bar.update(len(batch))
        for shard in sorted(rows):
            if len(rows[shard]) == min(shard_size, total - shard * shard_size):
                _write_shard(folder / f"shard-{shard:05d}.npz", rows.pop(shard), encoder.model.vocab_size)
        memory.release()  # hand the window's freed heap pages back (see memory.py)


def finish_manifest(folder: Path, dataset: Dataset, encoder: DupMAEDocumentEncoder, shards: int,
                    total: int, batch_size: int) -> None:
    """Write the manifest once all shards exist: from then on the encoding counts as cached."""
    missing = [s for s in range(shards) if not (folder / f"shard-{s:05d}.npz").is_file()]
    if missing:
        raise DupMAEEvalError(f"{folder}: shards {missing[:5]} are missing; rerun to resume")
    cache.write_json(folder / "manifest.json", {
        "dataset": dataset.name, "corpus": str(dataset.corpus_path),
        "corpus_sha256": dataset.corpus_fingerprint(), "model": encoder.model.source,
        "model_revision": encoder.model.revision, "model_fingerprint": model_fingerprint(encoder.model),
        "settings": encoder.settings.as_dict(), "precision": encoder.precision,
        "dense_dim": encoder.model.dense_dim if
        encoder.settings.has_dense else None, "vocabulary": encoder.model.vocab_size,
        "documents": total, "shards": shards, "shard_size": -(-total // shards), "format": FORMAT_VERSION,
        "batch_size": batch_size, "sort_window": sort_window(batch_size), "padding_quantum": _padding_quantum(),
        "shard_sha256": [cache.file_digest(folder / f"shard-{s:05d}.npz") for s in range(shards)],
        "finished": time.time()})


def _clear_damaged_shards(folder: Path) -> bool:
    """Check a finished encoding's shards against the SHA-256s its manifest records; remove the manifest and
    every shard that differs (one line on stderr), so that encoding resumes with just those. True when
    something was removed. A manifest without checksums (an older version's) can only be checked for
    missing shards; when none is missing its shards are hashed into it, so a later change is caught."""
    import json
    import sys

    manifest = folder / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())
        int(meta["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        manifest.unlink(missing_ok=True)
        print(f"dupmae-eval: encoding {folder}: manifest.json unreadable; checking its shards again", file=sys.stderr)
        return True
    bad = _damaged_shards(folder, meta)
    if not bad:
        if not isinstance(meta.get("shard_sha256"), list):
            cache.write_json(manifest, {**meta, "shard_sha256": [
                cache.file_digest(folder / f"shard-{s:05d}.npz") for s in range(int(meta["shards"]))]})
        return False
    print(f"dupmae-eval: encoding {folder}: {len(bad)} shard(s) damaged or missing "
          f"({', '.join(f'shard-{s:05d}.npz' for s in bad[:3])}); encoding them again", file=sys.stderr, flush=True)
    manifest.unlink()
    for shard in bad:
        (folder / f"shard-{shard:05d}.npz").unlink(missing_ok=True)
    return True


def _damaged_shards(folder: Path, meta: dict) -> List[int]:
    """The shards of a finished encoding that are missing or differ from the SHA-256 its manifest records
    (only the missing ones when the manifest records no checksums)."""
    shards = int(meta["shards"])
    recorded = meta.get("shard_sha256")
    if not isinstance(recorded, list) or len(recorded) != shards:
        return [s for s in range(shards) if not (folder / f"shard-{s:05d}.npz").is_file()]
    return [s for s in range(shards) if not (folder / f"shard-{s:05d}.npz").is_file()
            or cache.file_digest(folder / f"shard-{s:05d}.npz") != recorded[s]]


def encode_distributed(dataset: str, model: str, encoder: str, batch_size: int = 32, shard_size: int = 10_000,
                       device: Optional[str] = None, compile: bool = False, precision: Optional[str] = None,
                       **overrides) -> Path:
    """Encode a corpus into the cache, split across torchrun's processes when launched by torchrun.

    Each rank encodes shards rank, rank + world, ...; after a barrier rank 0 writes the manifest.
    Backend: gloo on CPU, nccl on GPUs (one per local rank). Without torchrun: one process.
    """
    import os

    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.encoding.checkpoint import load_model

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    settings = EncoderSettings.for_kind(encoder, **overrides)
    data = resolve(dataset)
    distributed = None
    if world > 1:
        import torch
        import torch.distributed as distributed

        on_gpu = (device or "").startswith("cuda")
        distributed.init_process_group("nccl" if on_gpu else "gloo")
        if on_gpu:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        else:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    loaded = load_model(model, need_mlm_head=settings.has_sparse, lengths=settings.lengths())
    settings = EncoderSettings.for_checkpoint(encoder, loaded.folder, **overrides)   # a fine-tuned model's own
    if compile:
        loaded.compile_encoder()
    document_encoder = DupMAEDocumentEncoder(loaded, settings, device, precision)
    try:
        folder = encode_corpus(data, document_encoder, batch_size, shard_size, rank, world, progress=rank == 0)
        if distributed is not None:
            distributed.barrier()
            if rank == 0 and not (folder / "manifest.json").is_file():
                total, shards, _ = _plan(data, shard_size, folder)
                finish_manifest(folder, data, document_encoder, shards, total, batch_size)
            distributed.barrier()
    finally:
        if distributed is not None:
            distributed.destroy_process_group()
    return folder


def _plan(dataset: Dataset, shard_size: int, folder: Optional[Path] = None):
    """(passages in the corpus, shards, shard size), from the corpus census, which refuses duplicate ids
    before any shard is encoded. An unfinished encoding in `folder` keeps the shard size it was started
    with. Empty passages are encoded like any other."""
    import json

    from dupmae_eval.data.census import take_census

    if shard_size < 1:
        raise DupMAEEvalError("--shard-size must be positive")
    if folder is not None and (folder / PLAN).is_file():
        try:
            shard_size = int(json.loads((folder / PLAN).read_text())["shard_size"])
        except (OSError, ValueError, KeyError, TypeError):
            (folder / PLAN).unlink(missing_ok=True)   # unreadable: its shards cannot be placed, so start again
            for stale in folder.glob("shard-*.npz"):
                stale.unlink()
    total = take_census(dataset).passages
    if total == 0:
        raise DupMAEEvalError(f"{dataset.corpus_path}: the corpus has no documents")
    return total, (total + shard_size - 1) // shard_size, shard_size


def _write_shard(path: Path, rows: dict, vocabulary: int) -> None:
    """Write one shard atomically, in corpus order, from its rows ({position: (docid, dense row or None,
    (sparse indices, values) or None, truncated)})."""
    ordered = [rows[position] for position in range(len(rows))]
    arrays = {"docids": np.asarray([docid for docid, _, _, _ in ordered]),
              "truncated": np.asarray(sum(bool(cut) for _, _, _, cut in ordered))}
    if ordered[0][1] is not None:
        arrays["dense"] = np.stack([dense for _, dense, _, _ in ordered])
    if ordered[0][2] is not None:
        indptr = np.zeros(len(ordered) + 1, dtype=np.int64)
        np.cumsum([len(sparse[0]) for _, _, sparse, _ in ordered], out=indptr[1:])
        arrays.update(indptr=indptr,
                      indices=np.concatenate([sparse[0] for _, _, sparse, _ in ordered]).astype(np.int32),
                      data=np.concatenate([sparse[1] for _, _, sparse, _ in ordered]).astype(np.float32),
                      shape=np.asarray((len(ordered), vocabulary)))
    with atomic_output(path, "wb") as out:
        np.savez(out, **arrays)


def load_encoding(folder: Path, settings: Optional[EncoderSettings] = None) -> CorpusEncoding:
    """Open a finished encoding: its manifest and doc ids (vectors stay on disk until asked for). With
    `settings`, only the halves their kind has are read (an encoding of another kind may hold more)."""
    import json

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DupMAEEvalError(f"{folder}: encoding is not finished (no manifest.json); rerun to resume")
    meta = json.loads(manifest_path.read_text())
    docids: List[str] = []
    offsets: List[int] = []
    for shard in range(meta["shards"]):
        offsets.append(len(docids))
        with np.load(folder / f"shard-{shard:05d}.npz") as arrays:
            docids.extend(arrays["docids"].tolist())
    halves = ("dense", "sparse") if settings is None else \
        tuple(half for half, has in (("dense", settings.has_dense), ("sparse", settings.has_sparse)) if has)
    return CorpusEncoding(folder, meta, docids, offsets, halves)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
