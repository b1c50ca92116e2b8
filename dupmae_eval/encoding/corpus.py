"""Corpus encoding: streamed, length-sorted batches, written in shards that survive a kill.

The corpus is read as a stream and cut into shards of `shard_size` passages. Each shard is
encoded in batches sorted by length (little padding), then written atomically as one .npz
file; a shard file that exists is complete, so a rerun after a crash or kill -9 skips it and
the final vectors are identical to an uninterrupted run. A manifest is written when every
shard is there; only then is the encoding used.
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dupmae_eval import cache
from dupmae_eval.runtime import memory
from dupmae_eval.data.formats import Passage
from dupmae_eval.files import atomic_output
from dupmae_eval.data.datasets import Dataset
from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings, SparseRows
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.encoding.checkpoint import HEAD_FILE, LoadedModel

FORMAT_VERSION = 1


class CorpusEncoding:
    """A finished encoding on disk. Shards are read one at a time (`shards()`), so search over a corpus
    larger than memory streams; `dense` / `sparse` load everything, for the paths that need it whole."""

    def __init__(self, folder: Path, meta: dict, docids: List[str], offsets: List[int]):
        self.folder, self.meta, self.docids, self.offsets = folder, meta, docids, offsets
        self._dense = self._sparse = None
        self._loaded = False

    def shard_paths(self) -> List[Path]:
        return [self.folder / f"shard-{shard:05d}.npz" for shard in range(self.meta["shards"])]

    def shards(self) -> Iterator[Tuple[int, Optional[np.ndarray], Optional["object"]]]:
        """(offset of the shard's first document, its dense rows or None, its sparse CSR rows or None)."""
        from scipy.sparse import csr_matrix

        for offset, path in zip(self.offsets, self.shard_paths()):
            with np.load(path) as arrays:
                dense = arrays["dense"] if "dense" in arrays else None
                sparse = (csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                     shape=tuple(arrays["shape"])) if "indptr" in arrays else None)
            yield offset, dense, sparse

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
        return self.meta.get("dense_dim") is not None

    @property
    def has_sparse(self) -> bool:
        from dupmae_eval.encoding.kinds import encoder_kind

        return encoder_kind(self.meta["settings"]["kind"]).sparse

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


def folder_fingerprint(folder: Path) -> str:
    """`model_fingerprint` of a checkpoint folder, without loading the model (reproduce's reuse check)."""
    parts = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.suffix in (".json", ".txt", ".safetensors", ".bin", ".model")
                               or path.name == HEAD_FILE):
            parts.append(f"{path.name}:{cache.file_digest(path)}")
    return cache.settings_key({"model": parts})


def encoding_folder(dataset: Dataset, model: LoadedModel, settings: EncoderSettings, batch_size: int,
                    shard_size: int, precision: str = "fp32") -> Path:
    """The cache folder of an encoding. Shard and batch sizes are in the key: shards are the unit of
    resumption, and batch composition decides the exact float rounding of each vector. A bf16 encoding
    (`precision.py`) has its own key; fp32 keys are those of versions that had no precision."""
    key = cache.settings_key({"corpus": dataset.corpus_fingerprint(), "model": model_fingerprint(model),
                              "settings": settings.as_dict(), "format": FORMAT_VERSION,
                              "batch_size": batch_size, "shard_size": shard_size,
                              **({"precision": precision} if precision != "fp32" else {})})
    return cache.home() / "encodings" / f"{dataset.cache_name}-{settings.kind}-{key}"


def encode_corpus(dataset: Dataset, encoder: DupMAEDocumentEncoder, batch_size: int = 32,
                  shard_size: int = 10_000, rank: int = 0, world_size: int = 1,
                  progress: bool = True) -> Path:
    """Encode the corpus into the cache (resuming finished shards); return the encoding folder.

    With world_size > 1 (torchrun), rank r encodes shards r, r + world, ...; the caller's rank 0
    writes the manifest once every rank is done (see `finish_manifest`).
    """
    folder = encoding_folder(dataset, encoder.model, encoder.settings, batch_size, shard_size, encoder.precision)
    if (folder / "manifest.json").is_file():
        if rank != 0 or not _clear_damaged_shards(folder):
            return folder
    total, shards = _plan(dataset, shard_size)   # refuses duplicate ids before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="passage", desc=f"encode {dataset.name} [{encoder.settings.kind}]",
               disable=not progress, smoothing=0.05)
    stream = dataset.passages()
    try:
        for shard in range(shards):
            passages = list(islice(stream, shard_size))
            path = folder / f"shard-{shard:05d}.npz"
            if shard % world_size != rank or path.is_file():
                bar.update(len(passages))
                continue
            _write_shard(path, passages, encoder, batch_size, bar)
            memory.release()  # hand the shard's freed heap pages back (see memory.py)
    except BaseException:
        bar.close()                       # the bar's line ends before the error's line starts
        if not any(folder.iterdir()):     # nothing finished: no empty cache folder left behind
            folder.rmdir()
        raise
    bar.close()
    if world_size == 1:
        finish_manifest(folder, dataset, encoder, shards, total)
    return folder


def finish_manifest(folder: Path, dataset: Dataset, encoder: DupMAEDocumentEncoder, shards: int,
                    total: int) -> None:
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
        "shard_sha256": [cache.file_digest(folder / f"shard-{s:05d}.npz") for s in range(shards)],
        "finished": time.time()})


def _clear_damaged_shards(folder: Path) -> bool:
    """Check a finished encoding's shards against the SHA-256s its manifest records; remove the manifest and
    every shard that differs (one line on stderr), so that encoding resumes with just those. True when
    something was removed. A manifest without checksums (an older version's) is checked once: its shards
    are hashed into it."""
    import json
    import sys

    manifest = folder / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())
        shards = int(meta["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        manifest.unlink(missing_ok=True)
        print(f"dupmae-eval: encoding {folder}: manifest.json unreadable; checking its shards again", file=sys.stderr)
        return True
    recorded = meta.get("shard_sha256")
    if not isinstance(recorded, list) or len(recorded) != shards:
        return False
    bad = [s for s in range(shards) if not (folder / f"shard-{s:05d}.npz").is_file()
           or cache.file_digest(folder / f"shard-{s:05d}.npz") != recorded[s]]
    if not bad:
        return False
    print(f"dupmae-eval: encoding {folder}: {len(bad)} shard(s) damaged or missing "
          f"({', '.join(f'shard-{s:05d}.npz' for s in bad[:3])}); encoding them again", file=sys.stderr, flush=True)
    manifest.unlink()
    for shard in bad:
        (folder / f"shard-{shard:05d}.npz").unlink(missing_ok=True)
    return True


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
    loaded = load_model(model, need_mlm_head=settings.has_sparse)
    settings = EncoderSettings.for_checkpoint(encoder, loaded.folder, **overrides)   # a fine-tuned model's own
    if compile:
        loaded.compile_encoder()
    document_encoder = DupMAEDocumentEncoder(loaded, settings, device, precision)
    try:
        folder = encode_corpus(data, document_encoder, batch_size, shard_size, rank, world, progress=rank == 0)
        if distributed is not None:
            distributed.barrier()
            if rank == 0 and not (folder / "manifest.json").is_file():
                total, shards = _plan(data, shard_size)
                finish_manifest(folder, data, document_encoder, shards, total)
            distributed.barrier()
    finally:
        if distributed is not None:
            distributed.destroy_process_group()
    return folder


def _plan(dataset: Dataset, shard_size: int):
    """(passages in the corpus, shards of `shard_size`), from the corpus census, which refuses
    duplicate ids before any shard is encoded. Empty passages are encoded like any other."""
    from dupmae_eval.data.census import take_census

    if shard_size < 1:
        raise DupMAEEvalError("--shard-size must be positive")
    total = take_census(dataset).passages
    if total == 0:
        raise DupMAEEvalError(f"{dataset.corpus_path}: the corpus has no documents")
    return total, (total + shard_size - 1) // shard_size


def _write_shard(path: Path, passages: Sequence[Passage], encoder: DupMAEDocumentEncoder, batch_size: int,
                 bar) -> None:
    """Encode one shard in length-sorted batches and write it atomically, in corpus order."""
    texts = [p.flat_text() for p in passages]
    batches = sorted_batches([len(t) for t in texts], batch_size)
    order = [i for batch in batches for i in batch]
    dense_parts, sparse_parts, truncated = [], [], 0
    for batch in batches:
        encoded = encoder.encode_texts([texts[i] for i in batch])
        truncated += encoded.truncated
        if encoded.dense is not None:
            dense_parts.append(encoded.dense)
        if encoded.sparse is not None:
            sparse_parts.append(encoded.sparse)
        bar.update(len(batch))
    inverse = np.argsort(np.asarray(order))
    arrays = {"docids": np.asarray([p.docid for p in passages]), "truncated": np.asarray(truncated)}
    if dense_parts:
        arrays["dense"] = np.concatenate(dense_parts)[inverse]
    if sparse_parts:
        rows = _concat_rows(sparse_parts)[inverse]
        arrays.update(indptr=rows.indptr, indices=rows.indices, data=rows.data,
                      shape=np.asarray(rows.shape))
    with atomic_output(path, "wb") as out:
        np.savez(out, **arrays)


def _concat_rows(parts: Sequence[SparseRows]):
    from scipy.sparse import vstack

    return vstack([part.to_scipy() for part in parts], format="csr")


def load_encoding(folder: Path) -> CorpusEncoding:
    """Open a finished encoding: its manifest and doc ids (vectors stay on disk until asked for)."""
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
    return CorpusEncoding(folder, meta, docids, offsets)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
