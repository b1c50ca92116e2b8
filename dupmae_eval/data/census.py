"""One validating pass over a corpus before any work: counts, empty passages, duplicate ids.

Real collections are not clean fixtures. BEIR corpora hold passages with neither title nor
text (TREC-COVID, FiQA, Signal-1M, TREC-NEWS, Robust04), and a corpus with a repeated id
would make BM25 keep one copy while the dense and exact routes keep both, so a run could list
one docid twice and the metrics would be wrong without a sign. The census reads the corpus
once, refuses a repeated id naming the file, the id and both lines, and counts what each index
should hold, so every index can be checked against it. It is cached by the corpus's SHA-256,
so an 8.8M-passage collection is read for it once.

Empty, as Anserini decides it: `DefaultLuceneDocumentGenerator` skips a document whose
`contents` field is empty after Java's `String.trim()` (which strips every character up to
U+0020, and nothing else). The flat index's contents are title + " " + text; the multifield
index's are the text alone (the title is a field of its own), so a passage with a title and
no text is in the flat index and not in the multifield one, as in Pyserini's prebuilt indexes
(TREC-COVID: 171,331 flat, 129,192 multifield documents).
"""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable

from dupmae_eval import cache
from dupmae_eval.data.formats import Passage
from dupmae_eval.errors import InputFormatError

_JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))
FORMAT_VERSION = 1


def java_blank(text: str) -> bool:
    """True when Java's `text.trim().length() == 0`, Anserini's test for an empty document."""
    return not text.strip(_JAVA_TRIMMED)


def indexed_contents(passage: Passage, fields: str) -> str:
    """The text Anserini's `contents` field gets for a passage in the flat or multifield layout."""
    return passage.flat_text() if fields == "flat" else passage.text


@dataclass(frozen=True)
class CorpusCensus:
    """What a corpus holds, counted once; recorded in index metadata and run sidecars."""

    corpus: str
    corpus_sha256: str
    passages: int
    empty_passages: int        # neither title nor text: skipped by the flat index, encoded as [CLS] [SEP]
    empty_text_passages: int   # no text (a title at most): skipped by the multifield index

    def expected_documents(self, fields: str) -> int:
        """Documents a Lucene index of this corpus holds: the passages Anserini does not skip as empty."""
        return self.passages - (self.empty_passages if fields == "flat" else self.empty_text_passages)

    def as_dict(self) -> dict:
        return asdict(self)


def take_census(dataset) -> CorpusCensus:
    """The census of `dataset`'s corpus (cached by its SHA-256): refuses duplicate ids, counts empties."""
    import json

    digest = dataset.corpus_fingerprint()
    path = cache.home() / "census" / f"{digest}-v{FORMAT_VERSION}.json"
    if path.is_file():
        return CorpusCensus(**{**json.loads(path.read_text()), "corpus": str(dataset.corpus_path)})
    census = census_of(dataset.passages, str(dataset.corpus_path), digest)
    cache.write_json(path, census.as_dict())
    return census


def census_of(read: Callable[[], Iterable[Passage]], corpus: str, digest: str) -> CorpusCensus:
    """Count passages and empties, and screen the ids for repeats, in one pass over `read()`.

    The screen keeps a 64-bit hash per id (8 bytes a passage: 70 MB for MS MARCO's 8.8M, where a
    set of the strings would take ten times that). Only when two hashes are equal is the corpus
    read again, keeping just the suspect ids, to name the repeated id and both of its lines."""
    import numpy as np

    hashes = array("q")
    total = empty = empty_text = 0
    for passage in read():
        total += 1
        if java_blank(passage.text):
            empty_text += 1
            if java_blank(passage.flat_text()):
                empty += 1
        hashes.append(hash(passage.docid))
    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if suspects:
        lines: Dict[str, int] = {}
        for passage in read():
            if hash(passage.docid) in suspects:
                earlier = lines.setdefault(passage.docid, passage.line)
                if earlier != passage.line:
                    raise InputFormatError(corpus, passage.line, f"duplicate id {passage.docid!r} (first at line "
                                                                 f"{earlier}): ids must be unique, or a run could "
                                                                 f"list one document twice")
    return CorpusCensus(corpus, digest, total, empty, empty_text)
