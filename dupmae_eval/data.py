"""Streaming readers and atomic writers for the formats the toolkit meets.

Every reader names the file and the line of the first malformed record it sees (one
`InputFormatError`), so a bad corpus or run is reported in one line instead of a traceback
from deep inside Lucene or ir-measures. Every writer goes through `atomic_output`, so a
crash or a bad record never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Iterator, List, Mapping, Sequence, Tuple

from .errors import DupMAEEvalError, InputFormatError

Qrels = Dict[str, Dict[str, int]]
"""query id -> {doc id: relevance grade}"""

Run = Dict[str, List[Tuple[str, float]]]
"""query id -> [(doc id, score), ...] in rank order"""


@dataclass(frozen=True)
class Passage:
    """One corpus record; `title` is empty where the collection has none (MS MARCO)."""

    docid: str
    title: str
    text: str
    line: int = 0     # line in the corpus file, for error messages

    def flat_text(self) -> str:
        """Title and text as one string, the way BEIR's and Pyserini's flat conditions see it."""
        return f"{self.title} {self.text}" if self.title else self.text


# --------------------------------------------------------------------------- opening files


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, transparently gunzipping `*.gz`."""
    path = Path(path)
    if not path.is_file():
        raise DupMAEEvalError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _numbered_lines(path: str | Path) -> Iterator[Tuple[int, str]]:
    """Yield (1-based line number, line without its newline), skipping blank lines."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w"):
    """Write to a temporary file beside `path`, and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        **({"encoding": "utf-8"} if "b" not in mode else {}),
    )
    try:
        with handle:
            yield handle
        os.chmod(handle.name, 0o666 & ~_umask())  # temp files are private; the result should not be
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- BEIR layout


def _json_object(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFormatError(path, number, f"malformed JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InputFormatError(path, number, "expected a JSON object")
    return record


def _string_field(path: Path, number: int, record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise InputFormatError(path, number, f'missing field "{key}"')
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputFormatError(path, number, f'field "{key}" must be a string')
    return value


def read_beir_corpus(path: str | Path) -> Iterator[Passage]:
    """Stream a BEIR corpus.jsonl(.gz): one {"_id", "title"?, "text"} object per line."""
    path = Path(path)
    for number, line in _numbered_lines(path):
        record = _json_object(path, number, line)
        docid = _string_field(path, number, record, "_id")
        if not docid.strip():
            raise InputFormatError(path, number, 'empty "_id"')
        yield Passage(docid, _string_field(path, number, record, "title", required=False),
                      _string_field(path, number, record, "text"), number)


def read_beir_queries(path: str | Path) -> Dict[str, str]:
    """Read a BEIR queries.jsonl(.gz) into {query id: text}, in file order."""
    path = Path(path)
    queries: Dict[str, str] = {}
    for number, line in _numbered_lines(path):
        record = _json_object(path, number, line)
        queries[_string_field(path, number, record, "_id")] = _string_field(path, number, record, "text")
    return queries


def read_beir_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (`query-id  corpus-id  score`, header optional)."""
    path = Path(path)
    qrels: Qrels = {}
    for number, line in _numbered_lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0].strip() == "query-id":
            continue
        if len(fields) != 3:
            raise InputFormatError(path, number, f"expected 3 tab-separated columns "
                                                 f"(query-id, corpus-id, score), found {len(fields)}")
        qrels.setdefault(fields[0].strip(), {})[fields[1].strip()] = _grade(path, number, fields[2])
    return qrels


def _grade(path: Path, number: int, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputFormatError(path, number, f"relevance {text.strip()!r} is not an integer") from None


# --------------------------------------------------------------------------- MS MARCO / TREC


def read_tsv_collection(path: str | Path) -> Iterator[Passage]:
    """Stream MS MARCO's collection.tsv(.gz): `pid <TAB> passage` per line."""
    path = Path(path)
    for number, line in _numbered_lines(path):
        docid, sep, text = line.partition("\t")
        if not sep or not docid.strip():
            raise InputFormatError(path, number, "expected `id<TAB>text`")
        yield Passage(docid.strip(), "", text, number)


def read_tsv_queries(path: str | Path) -> Dict[str, str]:
    """Read a queries TSV(.gz) (`qid <TAB> text`) into {query id: text}, in file order."""
    path = Path(path)
    queries: Dict[str, str] = {}
    for number, line in _numbered_lines(path):
        qid, sep, text = line.partition("\t")
        if not sep or not qid.strip():
            raise InputFormatError(path, number, "expected `query-id<TAB>text`")
        queries[qid.strip()] = text.strip()
    return queries


def read_trec_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (`qid iteration docid relevance`, whitespace-separated)."""
    path = Path(path)
    qrels: Qrels = {}
    for number, line in _numbered_lines(path):
        fields = line.split()
        if len(fields) != 4:
            raise InputFormatError(path, number, f"expected 4 columns (query-id, iteration, doc-id, "
                                                 f"relevance), found {len(fields)}")
        qrels.setdefault(fields[0], {})[fields[2]] = _grade(path, number, fields[3])
    return qrels


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels in either TREC (4 columns) or BEIR (3 tab-separated columns) format.

    The format is told by the first data line, so a 2-column file is reported as
    malformed rather than silently read as something else.
    """
    path = Path(path)
    for number, line in _numbered_lines(path):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) == 3 or fields[0].strip() == "query-id":
            return read_beir_qrels(path)
        if len(fields) == 4:
            return read_trec_qrels(path)
        raise InputFormatError(path, number, f"qrels lines need 4 columns (TREC: qid iter docid rel) "
                                             f"or 3 (BEIR: query-id corpus-id score); found {len(fields)}")
    raise InputFormatError(path, None, "qrels file is empty")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`), keeping the file's order per query."""
    path = Path(path)
    run: Run = {}
    for number, line in _numbered_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise InputFormatError(path, number, f"not TREC run format: expected 6 columns "
                                                 f"(qid Q0 docid rank score tag), found {len(fields)}")
        try:
            int(fields[3])
            score = float(fields[4])
        except ValueError:
            raise InputFormatError(path, number, "not TREC run format: rank must be an integer "
                                                 "and score a number") from None
        run.setdefault(fields[0], []).append((fields[2], score))
    if not run:
        raise InputFormatError(path, None, "run file is empty")
    return run


def ranked(hits: Sequence[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """Deterministic order: score descending, then doc id ascending, so equal runs are equal bytes."""
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))


def write_trec_run(path: str | Path, run: Mapping[str, Sequence[Tuple[str, float]]], tag: str) -> None:
    """Write a TREC run atomically; queries in id order, hits ranked by `ranked`.

    Scores are written with 6 decimals, as Pyserini does; ranking happens on the rounded
    scores so that the file's order is the order trec_eval will see.
    """
    if any(char.isspace() for char in tag):
        raise DupMAEEvalError(f"run tag {tag!r} must not contain whitespace")
    with atomic_output(path) as out:
        for qid in sorted(run, key=_natural_key):
            hits = ranked([(docid, float(f"{score:.6f}")) for docid, score in run[qid]])
            for rank, (docid, score) in enumerate(hits, start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def _natural_key(qid: str) -> Tuple[int, int | str]:
    """Numeric ids in numeric order, then the rest alphabetically."""
    return (0, int(qid)) if qid.isdigit() else (1, qid)
