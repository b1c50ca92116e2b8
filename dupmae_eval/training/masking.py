"""Whole-word masking for WordPiece, written here (transformers' whole-word collator is deprecated and no
longer does the 80/10/10 replacement), and the decoder's position-specific attention masks.

A WordPiece word is a token that does not start with "##" followed by the "##" tokens that continue
it; special tokens ([CLS], [SEP], padding) belong to no word and are never masked. A mask of ratio r
covers about r of a text's maskable tokens: the words are put in a random order and the longest prefix
of that order whose tokens number at most round(r x maskable) is masked. transformers' old collator counted the special tokens in the length and, after a word that
did not fit, went on looking for shorter ones; both differences move the ratio by less than one word.

Everything draws from a numpy Generator the caller seeds (the datasets seed it per example and epoch),
so a resumed run masks exactly what an uninterrupted one does.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def word_index(is_continuation: np.ndarray, special: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(word of each token, -1 for special tokens; tokens per word). `is_continuation[t]`: token t starts
    with "##"; a continuation right after a special token (or at the start) begins a word of its own."""
    starts = ~special & (~is_continuation | np.concatenate([[True], special[:-1]]))
    words = np.cumsum(starts) - 1
    words = np.where(special, -1, words)
    count = int(starts.sum())
    lengths = np.bincount(words[words >= 0], minlength=count) if count else np.zeros(0, dtype=np.int64)
    return words, lengths


def whole_word_masks(words: np.ndarray, lengths: np.ndarray, ratio: float, rows: int,
                     rng: np.random.Generator) -> np.ndarray:
    """`rows` independent whole-word masks of one text (rows x tokens, True = masked)."""
    masks = np.zeros((rows, len(words)), dtype=bool)
    if len(lengths) == 0 or ratio <= 0:
        return masks
    target = int(round(ratio * int(lengths.sum())))
    order = np.argsort(rng.random((rows, len(lengths))), axis=1)
    fits = np.cumsum(lengths[order], axis=1) <= target
    chosen = np.zeros((rows, len(lengths)), dtype=bool)
    np.put_along_axis(chosen, order, fits, axis=1)
    maskable = words >= 0
    masks[:, maskable] = chosen[:, words[maskable]]
    return masks


def replace_masked(ids: np.ndarray, masked: np.ndarray, mask_token_id: int, vocab_size: int,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """BERT's replacement of the masked tokens: 80 % [MASK], 10 % a random token, 10 % unchanged.
    Returns (encoder input ids, labels: the original id where masked, -100 elsewhere)."""
    labels = np.where(masked, ids, -100)
    draw = rng.random(len(ids))
    random_ids = rng.integers(0, vocab_size, len(ids))
    inputs = np.where(masked & (draw < 0.8), mask_token_id, ids)
    inputs = np.where(masked & (draw >= 0.8) & (draw < 0.9), random_ids, inputs)
    return inputs, labels


def decoder_attention(words: np.ndarray, lengths: np.ndarray, ratio: float,
                      rng: np.random.Generator) -> np.ndarray:
    """The enhanced decoder's attention (tokens x tokens, True = row may attend to column): each row sees
    the positions a whole-word mask of `ratio` leaves unmasked, drawn for that row, and never itself;
    special positions ([CLS], whose place holds the sentence embedding, and [SEP]) are never masked, so
    every row sees [CLS] (row 0 itself excepted, which predicts nothing)."""
    n = len(words)
    allowed = ~whole_word_masks(words, lengths, ratio, n, rng)
    allowed[np.arange(n), np.arange(n)] = False
    return allowed


def continuation_table(tokenizer) -> np.ndarray:
    """is_continuation[id] for the whole vocabulary (WordPiece's "##" prefix), computed once."""
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([token.startswith("##") for token in vocabulary], dtype=bool)

