"""Pre-training data: a corpus tokenized once into a token store, cut into sequences, masked per example.

Corpus sources (`read_texts`): any dataset the registry resolves (its passages, title + " " + text, as
the encoders read them) or a plain text file, one text per line, compressed when it ends in `.txt.gz` or
`.txt.xz` (blank
lines skipped; a file that is not UTF-8 is refused with its line number).

`TokenStore` tokenizes the corpus once (no special tokens), streaming it to `tokens.bin` (int32) and
`offsets.bin` (int64) in the run's output folder with a progress bar, and renames them into place at the
end: a killed run tokenizes again, a finished store is reused on resume. MS MARCO's 8.8M passages are
about 0.6 G tokens (2.4 GB), read back as memory maps.

Sequences (`SEQUENCE_LAYOUTS`): `truncate` — each text is one sequence, cut at max_length - 2 tokens;
`pack` — the texts' tokens laid end to end and cut into windows of max_length - 2 (the released code's
preprocessing for Wikipedia/BookCorpus packs sentences the same way; texts shorter than a window then
share one). Each sequence gets [CLS] ... [SEP].

`PretrainDataset[i]` draws the encoder's whole-word mask (with BERT's 80/10/10 replacement) and, when the
objective decodes [CLS], the decoder's per-row attention, from a generator seeded with (seed, epoch, i): a
resumed run sees exactly the masks an uninterrupted one does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from dupmae_eval.errors import DupMAEEvalError, InputFormatError
from dupmae_eval.registry import Registry
from dupmae_eval.training import masking


def read_texts(source: str) -> Iterator[str]:
    """The corpus's texts: a plain text file (one per line; `.txt.gz`/`.txt.xz` compressed) or a dataset's passages."""
    import gzip
    import lzma

    path = Path(source).expanduser()
    compressed = {".txt.gz": gzip.open, ".txt.xz": lzma.open}.get("".join(path.suffixes[-2:]))
    if path.is_file() and (compressed or path.suffix not in (".jsonl", ".gz", ".tsv", ".xz")):
        with (compressed or open)(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise InputFormatError(path, number, "not UTF-8 text") from None
                if line:
                    yield line
        return
    from dupmae_eval.data.datasets import resolve

    for passage in resolve(source).passages():
        text = passage.flat_text()
        if text.strip():
            yield text


class TokenStore:
    """A corpus's token ids (int32) and each text's start offset, as memory maps."""

    TOKENS, OFFSETS = "tokens.bin", "offsets.bin"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.tokens = np.memmap(self.folder / self.TOKENS, dtype=np.int32, mode="r") \
            if (self.folder / self.TOKENS).stat().st_size else np.zeros(0, dtype=np.int32)
        self.offsets = np.fromfile(self.folder / self.OFFSETS, dtype=np.int64)

    @property
    def texts(self) -> int:
        return len(self.offsets) - 1

    def text(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index]:self.offsets[index + 1]]

    @classmethod
    def build(cls, source: str, tokenizer, folder: Path, batch: int = 1000) -> "TokenStore":
        """Tokenize `source` into `folder` (reused when already complete). A failure part way (a line that
        is not UTF-8, an interrupt) removes the partial files, so the folder holds a complete store or none."""
        folder = Path(folder)
        if (folder / cls.OFFSETS).is_file() and (folder / cls.TOKENS).is_file():
            return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        partial = {name: folder / f".{name}.partial" for name in (cls.TOKENS, cls.OFFSETS)}
        try:
            cls._write(source, tokenizer, partial, batch)
        except BaseException:
            for path in partial.values():
                path.unlink(missing_ok=True)
            raise
        for name, path in partial.items():
            os.replace(path, folder / name)
        return cls(folder)

    @classmethod
    def _write(cls, source: str, tokenizer, partial: Dict[str, Path], batch: int) -> None:
        from tqdm import tqdm

        total = 0
        with open(partial[cls.TOKENS], "wb") as tokens, open(partial[cls.OFFSETS], "wb") as offsets, \
                tqdm(desc=f"tokenize {source}", unit="text", leave=False) as bar:
            offsets.write(np.zeros(1, dtype=np.int64).tobytes())
            pending: List[str] = []

            def flush():
                nonlocal total
                ids = tokenizer(pending, add_special_tokens=False, truncation=False)["input_ids"]
                lengths = np.array([len(x) for x in ids], dtype=np.int64)
                if len(ids):
                    tokens.write(np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]).tobytes()
                                 if lengths.sum() else b"")
                offsets.write((total + np.cumsum(lengths)).astype(np.int64).tobytes())
                total += int(lengths.sum())
                bar.update(len(pending))
                pending.clear()

            for text in read_texts(source):
                pending.append(text)
                if len(pending) == batch:
                    flush()
            if pending:
                flush()


@dataclass(frozen=True)
class SequenceLayout:
    name: str
    cut: Callable[[TokenStore, int], np.ndarray]     # (store, body length) -> (n + 1) start/stop boundaries
    summary: str


def _truncate(store: TokenStore, body: int) -> np.ndarray:
    """One sequence per text: [start, min(end, start + body))."""
    starts = store.offsets[:-1]
    stops = np.minimum(store.offsets[1:], starts + body)
    keep = stops > starts
    return np.stack([starts[keep], stops[keep]], axis=1)


def _pack(store: TokenStore, body: int) -> np.ndarray:
    """Windows of `body` tokens over all texts end to end (the last one may be shorter)."""
    total = int(store.offsets[-1])
    starts = np.arange(0, total, body, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + body, total)], axis=1)


SEQUENCE_LAYOUTS: Registry = Registry("sequence layout")
SEQUENCE_LAYOUTS.register(SequenceLayout("truncate", _truncate, "each text one sequence, cut at max_length"))
SEQUENCE_LAYOUTS.register(SequenceLayout("pack", _pack, "texts end to end, cut into max_length windows"))


class PretrainDataset:
    """Item i: sequence i with its encoder mask drawn from (seed, epoch, i). `epoch` is set by the trainer."""

    def __init__(self, store: TokenStore, tokenizer, max_length: int, layout: str, encoder_ratio: float,
                 decoder_ratio: Optional[float], seed: int):
        if max_length < 3:
            raise DupMAEEvalError("max_length must leave room for [CLS], one token and [SEP]")
        self.store, self.seed, self.epoch = store, seed, 0
        self.spans = SEQUENCE_LAYOUTS.lookup(layout).cut(store, max_length - 2)
        self.encoder_ratio, self.decoder_ratio = encoder_ratio, decoder_ratio
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self.continuation = masking.continuation_table(tokenizer)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        start, stop = self.spans[index]
        body = np.asarray(self.store.tokens[start:stop], dtype=np.int64)
        ids = np.concatenate([[self.cls_id], body, [self.sep_id]])
        special = np.zeros(len(ids), dtype=bool)
        special[[0, -1]] = True
        rng = np.random.default_rng([self.seed, self.epoch, index])
        words, lengths = masking.word_index(self.continuation[ids], special)
        masked = masking.whole_word_masks(words, lengths, self.encoder_ratio, 1, rng)[0]
        inputs, labels = masking.replace_masked(ids, masked, self.mask_id, self.vocab_size, rng)
        item = {"input_ids": inputs, "labels": labels, "original_ids": ids}
        if self.decoder_ratio is not None:
            item["decoder_allowed"] = masking.decoder_attention(words, lengths, self.decoder_ratio, rng)
        return item


class PretrainCollator:
    """Pads a list of items into the model's batch (attention masks, -100 labels, the bag-of-words and
    decoder label masks; padding rows of the decoder attend to [CLS] only and predict nothing)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: List[dict]) -> dict:
        import torch

        width = max(len(item["original_ids"]) for item in items)
        batch = len(items)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        original = torch.full((batch, width), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        decoder = "decoder_allowed" in items[0]
        allowed = torch.zeros((batch, width, width), dtype=torch.bool) if decoder else None
        for row, item in enumerate(items):
            n = len(item["original_ids"])
            input_ids[row, :n] = torch.from_numpy(item["input_ids"])
            original[row, :n] = torch.from_numpy(item["original_ids"])
            labels[row, :n] = torch.from_numpy(item["labels"])
            attention[row, :n] = 1
            if decoder:
                allowed[row, :n, :n] = torch.from_numpy(item["decoder_allowed"])
                allowed[row, n:, 0] = True
        ordinary = attention.bool().clone()
        ordinary[:, 0] = False
        ordinary[torch.arange(batch), attention.sum(dim=1) - 1] = False        # [SEP]
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "original_ids": original,
               "bow_mask": ordinary}
        if decoder:
            out["decoder_allowed"] = allowed
            out["decoder_labels"] = torch.where(ordinary, original, torch.full_like(original, -100))
        return out
