"""Streaming readers and atomic writers for the formats the toolkit meets.

Every reader names the file and the line of the first malformed record it sees (one
`InputFormatError`), so a bad corpus or run is reported in one line instead of a traceback
from deep inside Lucene or ir-measures. Every writer goes through `atomic_output`, so a
crash or a bad record never leaves a half-written file under the final name.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from dupmae_eval.errors import DupMAEEvalError, InputFormatError
from dupmae_eval.files import atomic_output

Qrels = Dict[str, Dict[str, int]]
"""query id -> {doc id: relevance grade}"""

Run = Dict[str, List[Tuple[str, float]]]
"""query id -> [(doc id, score), ...] in rank order"""


class TrecRun(dict):
    """A `Run` read from a TREC file, with the queries whose rank column runs against their scores
    (`rank_conflicts`): trec_eval ranks by score and ignores the ranks, so such a run is scored in an order
    its author did not write (a run of distances, where lower is better, is scored upside down)."""

    rank_conflicts: frozenset = frozenset()


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


def open_bytes(path: str | Path) -> IO[bytes]:
    """Open a file's bytes for reading, transparently gunzipping `*.gz`; the readers decode them as UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DupMAEEvalError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


READ_ERRORS = (EOFError, OSError, zlib.error, UnicodeDecodeError)
"""What a truncated or corrupt (compressed) file raises while it is being read."""


def read_error(path: str | Path, line: int, exc: BaseException) -> InputFormatError:
    """One line for a file that cannot be read to its end: where it broke and why."""
    if isinstance(exc, UnicodeDecodeError):
        return InputFormatError(path, line, "not valid UTF-8 text")
    what = "truncated" if isinstance(exc, EOFError) else "corrupt"
    return InputFormatError(path, line, f"the file is {what} ({exc.__class__.__name__}: {exc}); "
                                        f"download or unpack it again")


_BLOCK = 1 << 16
"""Bytes read at a time by `numbered_lines`."""


def numbered_lines(path: str | Path) -> Iterator[Tuple[int, str]]:
    """Yield (1-based line number, line without its newline), skipping blank lines.

    A file that ends early or is corrupt (a truncated .gz, bad UTF-8) stops with one
    `InputFormatError` naming the file and the line where reading broke. The bytes are decoded a block
    of whole lines at a time, so bad UTF-8 is named at the line that holds it (a text stream decodes
    8 KB at a time and names the line where that block began, dozens of lines earlier), at the speed of
    a text stream (decoding line by line costs 4-7% more).

    UTF-8 with or without a byte-order mark: files saved by Windows tools often start with one,
    and it must not turn the first record into malformed JSON or an id with an invisible prefix.
    Lines end at "\n" only (a "\r\n" ending is stripped): a lone "\r" is text, as it is to the
    byte-offset `PassageStore` and to JSON, not a line break that would split a passage or query in
    two and shift every later line number.
    """
    number = 0
    pending: List[bytes] = []
    with open_bytes(path) as handle:
        while True:
            try:
                chunk = handle.read1(_BLOCK)
            except READ_ERRORS as exc:
                raise read_error(path, number + 1, exc) from None
            if chunk:
                pending.append(chunk)
                if b"\n" not in chunk:
                    continue                    # a line longer than the block: read on
                block, _, rest = b"".join(pending).rpartition(b"\n")
                pending = [rest]
            else:
                block = b"".join(pending)       # the end: a last line without its newline, if any
                if not block:
                    return
            try:
                text = block.decode("utf-8-sig" if number == 0 else "utf-8")
            except UnicodeDecodeError as exc:
                raise read_error(path, number + exc.object.count(b"\n", 0, exc.start) + 1, exc) from None
            for line in text.split("\n"):
                number += 1
                line = line.rstrip("\r")
                if line.strip():
                    yield number, line
            if not chunk:
                return


def check_id(path: str | Path, line: Optional[int], value: str, what: str) -> str:
    """Refuse an empty id or one holding whitespace: TREC runs and qrels are whitespace-separated,
    so such an id would silently become extra columns in every file written from it."""
    if not value:
        raise InputFormatError(path, line, f"empty {what}")
    if any(char.isspace() for char in value):
        raise InputFormatError(path, line, f"{what} {value!r} contains whitespace (runs and qrels are "
                                           f"whitespace-separated, so it cannot be written or read back)")
    return value


def _first_occurrence(seen: Dict[str, int], path: str | Path, line: int, value: str, what: str) -> None:
    """Record `value`'s line; refuse it, naming both lines, when it was seen before."""
    earlier = seen.setdefault(value, line)
    if earlier != line:
        raise InputFormatError(path, line, f"duplicate {what} {value!r} (first at line {earlier})")


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
    for number, line in numbered_lines(path):
        record = _json_object(path, number, line)
        docid = check_id(path, number, _string_field(path, number, record, "_id"), "_id")
        yield Passage(docid, _string_field(path, number, record, "title", required=False),
                      _string_field(path, number, record, "text"), number)


def read_beir_queries(path: str | Path) -> Dict[str, str]:
    """Read a BEIR queries.jsonl(.gz) into {query id: text}, in file order (ids unique, no whitespace)."""
    path = Path(path)
    queries: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    for number, line in numbered_lines(path):
        record = _json_object(path, number, line)
        qid = check_id(path, number, _string_field(path, number, record, "_id"), "query id")
        _first_occurrence(lines, path, number, qid, "query id")
        queries[qid] = _string_field(path, number, record, "text")
    return queries


def read_beir_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (`query-id  corpus-id  score`, header optional)."""
    path = Path(path)
    qrels: Qrels = {}
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0].strip() == "query-id":
            continue
        if len(fields) != 3:
            raise InputFormatError(path, number, f"expected 3 tab-separated columns "
                                                 f"(query-id, corpus-id, score), found {len(fields)}")
        qid = check_id(path, number, fields[0].strip(), "query-id")
        docid = check_id(path, number, fields[1].strip(), "corpus-id")
        _judge(qrels, path, number, qid, docid, _grade(path, number, fields[2]), _beir_pair)
    return qrels


def _grade(path: Path, number: int, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputFormatError(path, number, f"relevance {text.strip()!r} is not an integer") from None


def _beir_pair(line: str) -> Tuple[str, ...]:
    return tuple(field.strip() for field in line.split("\t")[:2])


def _trec_pair(line: str) -> Tuple[str, ...]:
    return tuple(line.split()[0:3:2])


def _judge(qrels: Qrels, path: Path, number: int, qid: str, docid: str, grade: int, pair) -> None:
    """Record one judgment. A pair judged again with the same grade changes no score and is kept once; with
    another grade it is refused naming both lines, since keeping either grade would change the scores without
    a sign. Only then is the file read again (`pair`: a line's (query id, doc id)) for the first line, so
    reading keeps no line numbers (MS MARCO's training qrels judge over half a million pairs)."""
    earlier = qrels.setdefault(qid, {}).setdefault(docid, grade)
    if earlier != grade:
        first = next(line for line, text in numbered_lines(path) if pair(text) == (qid, docid))
        raise InputFormatError(path, number, f"document {docid!r} is judged twice for query {qid!r} with "
                                             f"different grades: {grade} here, {earlier} at line {first}")


# --------------------------------------------------------------------------- MS MARCO / TREC


def read_tsv_collection(path: str | Path) -> Iterator[Passage]:
    """Stream MS MARCO's collection.tsv(.gz): `pid <TAB> passage` per line."""
    path = Path(path)
    for number, line in numbered_lines(path):
        docid, sep, text = line.partition("\t")
        if not sep or not docid.strip():
            raise InputFormatError(path, number, "expected `id<TAB>text`")
        yield Passage(check_id(path, number, docid.strip(), "passage id"), "", text, number)


def read_tsv_queries(path: str | Path) -> Dict[str, str]:
    """Read a queries TSV(.gz) (`qid <TAB> text`) into {query id: text}, in file order (ids unique,
    no whitespace)."""
    path = Path(path)
    queries: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    for number, line in numbered_lines(path):
        qid, sep, text = line.partition("\t")
        if not sep or not qid.strip():
            raise InputFormatError(path, number, "expected `query-id<TAB>text`")
        qid = check_id(path, number, qid.strip(), "query id")
        _first_occurrence(lines, path, number, qid, "query id")
        queries[qid] = text.strip()
    return queries


def read_trec_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (`qid iteration docid relevance`, whitespace-separated)."""
    path = Path(path)
    qrels: Qrels = {}
    for number, line in numbered_lines(path):
        fields = line.split()
        if len(fields) != 4:
            raise InputFormatError(path, number, f"expected 4 columns (query-id, iteration, doc-id, "
                                                 f"relevance), found {len(fields)}")
        _judge(qrels, path, number, fields[0], fields[2], _grade(path, number, fields[3]), _trec_pair)
    return qrels


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels in either TREC (4 columns) or BEIR (3 tab-separated columns) format.

    The format is told by the first data line, so a 2-column file is reported as
    malformed rather than silently read as something else.
    """
    path = Path(path)
    for number, line in numbered_lines(path):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) == 3 or fields[0].strip() == "query-id":
            return read_beir_qrels(path)
        if len(fields) == 4:
            return read_trec_qrels(path)
        run = " (a TREC run's 6 columns: are the judgments and the run the other way round?)" \
            if len(fields) == 6 else ""
        raise InputFormatError(path, number, f"qrels lines need 4 columns (TREC: qid iter docid rel) "
                                             f"or 3 (BEIR: query-id corpus-id score); found {len(fields)}{run}")
    raise InputFormatError(path, None, "qrels file is empty")


def queries_digest(queries: Mapping[str, str]) -> str:
    """A digest of the queries a run searches, {id: text}, order aside (a run does not depend on it). A run's
    sidecar and its metrics record hold it, and a reproduce cell's identity: results for other query texts,
    or another set of queries, are never reused as, or compared with, these."""
    from dupmae_eval import cache

    return cache.settings_key({"queries": dict(queries)})


def judgments_digest(qrels: Qrels) -> str:
    """A digest of the judgments a run was scored against, {query id: {document id: grade}}, as read (so a
    CRLF copy of a qrels file, or its lines in another order, has the same digest). A metrics record holds
    it: two results scored against different judgments are refused in one table row."""
    from dupmae_eval import cache

    return cache.settings_key({"judgments": qrels})


def _plain(number: str) -> bool:
    """Whether a number in a run file is written as C reads it whole (trec_eval reads scores with atof):
    Python's float and int also take "1_5" (15, where atof stops at the "_": 1) and other scripts' digits
    ("١٥"), which would rank a document differently from trec_eval without a sign; such a number is refused."""
    return number.isascii() and "_" not in number


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`), keeping the file's order per query.

    A score that is not a finite number (NaN and infinities: what an fp16 overflow produces) and
    a document listed twice for one query are refused with file:line: either would change the
    metrics without any sign (trec_eval, too, refuses duplicate documents). A query where one line
    ranks a document better than the line before it and scores it strictly lower (or worse and
    strictly higher) is noted in the result's `rank_conflicts` (`TrecRun`)."""
    path = Path(path)
    run: Run = TrecRun()
    last: Dict[str, Tuple[int, float]] = {}
    conflicts = set()
    seen: Dict[str, set] = {}        # per query, its documents so far (line numbers only looked up for a repeat)
    for number, line in numbered_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise InputFormatError(path, number, f"not TREC run format: expected 6 columns "
                                                 f"(qid Q0 docid rank score tag), found {len(fields)}")
        try:
            if not (_plain(fields[3]) and _plain(fields[4])):
                raise ValueError
            rank = int(fields[3])
            score = float(fields[4])
        except ValueError:
            raise InputFormatError(path, number, "not TREC run format: rank must be an integer "
                                                 "and score a number") from None
        before = last.get(fields[0])
        if before is not None and (before[0] - rank) * (before[1] - score) > 0:
            conflicts.add(fields[0])
        last[fields[0]] = (rank, score)
        if not math.isfinite(score):
            raise InputFormatError(path, number, f"score {fields[4]!r} of document {fields[2]!r} for query "
                                                 f"{fields[0]!r} is not a finite number")
        documents = seen.get(fields[0])
        if documents is None:
            documents = seen[fields[0]] = set()
        elif fields[2] in documents:
            earlier = next(line for line, text in numbered_lines(path) if text.split()[0:3:2] == fields[0:3:2])
            raise InputFormatError(path, number, f"document {fields[2]!r} is listed twice for query "
                                                 f"{fields[0]!r} (first at line {earlier})")
        documents.add(fields[2])
        run.setdefault(fields[0], []).append((fields[2], score))
    if not run:
        raise InputFormatError(path, None, "run file is empty")
    run.rank_conflicts = frozenset(conflicts)
    return run


def ranked(hits: Sequence[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """The order trec_eval evaluates: score descending, then doc id descending (deterministic, so equal runs
    are equal bytes, and a file's rank column is the rank each document is scored at)."""
    return sorted(hits, key=lambda hit: (hit[1], hit[0]), reverse=True)


SIDECAR_SUFFIX = ".meta.json"
"""A run file's sidecar is `RUN.meta.json`: what made the run (written by `bm25`, `run`, `fuse`, `reproduce`)."""


def metrics_path_for(run_path: str | Path) -> Path:
    """Where `reproduce` keeps a run's metrics record (`results.write_metrics`): `DATASET.metrics.json`."""
    return Path(run_path).with_suffix(".metrics.json")


def forget_run_records(run_path: str | Path) -> None:
    """Remove what describes a run file (its `.meta.json` sidecar and its `.metrics.json`) before the file is
    made again or replaced. Both are written after the run, so an interruption between the run's rename and
    their writing would otherwise leave the new run beside the old ones: a reproduce sidecar's cell identity
    would make a run of another condition reusable, an old metrics record would put old scores in a table.
    With them gone first, an interrupted run has no sidecar, so it is redone, never reused or tabled."""
    for path in (Path(f"{run_path}{SIDECAR_SUFFIX}"), metrics_path_for(run_path)):
        path.unlink(missing_ok=True)


def run_tag_problem(tag: str) -> Optional[str]:
    """What is wrong with a run tag, or None. The tag is a TREC run's last column, so it must be one
    whitespace-free word (an empty one leaves lines of 5 columns, which no reader takes back). The one rule:
    `write_run` applies it, and the `--tag` flags, the API's `name=` and a suite's condition names (which
    become tags) are checked by it before any encoding or search, instead of failing when the run is written."""
    if not tag:
        return "must not be empty"
    if any(char.isspace() for char in tag):
        return "must not contain whitespace"
    return None


def check_run_tag(tag: str, where: str = "run tag") -> str:
    """`tag` if `run_tag_problem` finds nothing, else one line naming `where` (a flag, a key) and the tag."""
    problem = run_tag_problem(tag)
    if problem:
        raise DupMAEEvalError(f"{where} {tag!r} {problem} (it is the run's tag, the TREC file's last column)")
    return tag


def write_trec_run(path: str | Path, run: Mapping[str, Sequence[Tuple[str, float]]], tag: str) -> None:
    """Write a TREC run atomically; queries in id order, hits ranked by `ranked`.

    Scores are written with 6 decimals, as Pyserini does; ranking happens on the rounded
    scores so that the file's order is the order trec_eval will see. A score that is not a finite
    number (a model that produced NaN or an overflow), an id with whitespace or a document twice
    for one query is refused naming the query, and nothing is written.
    """
    check_run_tag(tag)
    for qid, hits in run.items():
        _check_hits(path, qid, hits)
    with atomic_output(path) as out:
        for qid in sorted(run, key=_natural_key):
            hits = ranked([(docid, float(f"{score:.6f}")) for docid, score in run[qid]])
            for rank, (docid, score) in enumerate(hits, start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def _check_hits(path: str | Path, qid: str, hits: Sequence[Tuple[str, float]]) -> None:
    if not qid or any(char.isspace() for char in qid):
        raise DupMAEEvalError(f"{path}: query id {qid!r} is empty or contains whitespace; the run was not written")
    docids = set()
    for docid, score in hits:
        if not math.isfinite(score):
            raise DupMAEEvalError(f"{path}: query {qid!r}: score of document {docid!r} is {score} (not a finite "
                                  f"number); the model or the search produced it, and the run was not written")
        if not docid or any(char.isspace() for char in docid):
            raise DupMAEEvalError(f"{path}: query {qid!r}: document id {docid!r} is empty or contains whitespace; "
                                  f"the run was not written")
        if docid in docids:
            raise DupMAEEvalError(f"{path}: query {qid!r}: document {docid!r} is ranked twice (duplicate id in the "
                                  f"corpus?); the run was not written")
        docids.add(docid)


def _natural_key(qid: str) -> Tuple[int, int | str]:
    """Numeric ids in numeric order, then the rest alphabetically."""
    return (0, int(qid)) if qid.isdigit() else (1, qid)


# --------------------------------------------------------------------------- topics without judgments

TOPIC_FORMATS = ("tsv", "trec", "jsonl")
"""What `--topics FILE` reads: `qid<TAB>text` lines, TREC topic files (<top> <num> <title>), JSON lines
(BEIR's `_id`/`text`, or `qid`/`query`); any of them gzipped."""


def detect_topics_format(path: str | Path) -> str:
    """The topics format told by the first non-blank line: `{` JSON lines, `<top>` a TREC topic file,
    a tab `qid<TAB>text`; anything else is refused naming the file and the line."""
    path = Path(path)
    for number, line in numbered_lines(path):
        stripped = line.strip()
        if stripped.startswith("{"):
            return "jsonl"
        if stripped.lower().startswith("<top>"):
            return "trec"
        if "\t" in line:
            return "tsv"
        raise InputFormatError(path, number, "not a topics file: expected `query-id<TAB>text` lines, a TREC topic "
                                             "file (<top> <num> <title>) or JSON lines ({\"_id\", \"text\"} or "
                                             "{\"qid\", \"query\"})")
    raise InputFormatError(path, None, "topics file is empty")


def read_topics(path: str | Path) -> Tuple[Dict[str, str], str]:
    """Read a topics file in any of `TOPIC_FORMATS` into ({query id: text} in file order, format). Ids are
    unique and without whitespace, texts non-empty; the first bad record is refused naming file and line."""
    path = Path(path)
    fmt = detect_topics_format(path)
    if fmt == "jsonl":
        queries = _read_jsonl_topics(path)
    elif fmt == "trec":
        queries = _read_trec_topics(path)
    else:
        queries = _with_text(path, read_tsv_queries(path), numbered_lines(path))
    return queries, fmt


def _with_text(path: Path, queries: Dict[str, str], lines) -> Dict[str, str]:
    """Refuse a query with empty text at its line (a search for nothing is a mistake, not a result)."""
    for (number, _), (qid, text) in zip(lines, queries.items()):
        if not text.strip():
            raise InputFormatError(path, number, f"query {qid!r} has empty text")
    return queries


def _read_jsonl_topics(path: Path) -> Dict[str, str]:
    queries: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    for number, line in numbered_lines(path):
        record = _json_object(path, number, line)
        if "_id" in record:
            id_key, text_key = "_id", "text"
        elif "qid" in record:
            id_key, text_key = "qid", "query"
        else:
            raise InputFormatError(path, number, 'expected {"_id", "text"} (BEIR) or {"qid", "query"}')
        qid = check_id(path, number, _string_field(path, number, record, id_key), "query id")
        _first_occurrence(lines, path, number, qid, "query id")
        text = _string_field(path, number, record, text_key)
        if not text.strip():
            raise InputFormatError(path, number, f"query {qid!r} has empty text")
        queries[qid] = text
    return queries


_TREC_TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z]+)\s*>")


def _read_trec_topics(path: Path) -> Dict[str, str]:
    """A TREC topic file: <top> blocks with <num> (`Number:` optional) and <title> (`Topic:` optional),
    closing tags optional for <num> and <title> as in the classic TREC files; the title is the query, as
    Anserini's TrecTopicReader takes it."""
    queries: Dict[str, str] = {}
    seen: Dict[str, int] = {}
    block: Optional[List[Tuple[int, str]]] = None
    start = 0
    for number, line in numbered_lines(path):
        tags = [(closing, name.lower()) for closing, name in _TREC_TAG.findall(line)]
        if ("", "top") in tags:
            if block is not None:
                raise InputFormatError(path, number, f"<top> inside the topic opened at line {start} (missing </top>)")
            block, start = [], number
            line = line[line.lower().index("<top>") + len("<top>"):]
        if block is None:
            if line.strip():
                raise InputFormatError(path, number, "text outside a <top> ... </top> topic")
            continue
        closes = ("/", "top") in tags
        block.append((number, line.split("</top>")[0] if closes else line))
        if closes:
            qid, text = _trec_topic(path, start, block)
            _first_occurrence(seen, path, start, qid, "query id")
            queries[qid] = text
            block = None
    if block is not None:
        raise InputFormatError(path, start, "topic is not closed (missing </top>)")
    return queries


def _trec_topic(path: Path, start: int, block: List[Tuple[int, str]]) -> Tuple[str, str]:
    fields: Dict[str, Tuple[int, List[str]]] = {}
    current: Optional[str] = None
    for number, line in block:
        pieces = _TREC_TAG.split(line)      # text, closing, name, text, closing, name, ...
        for index, piece in enumerate(pieces):
            kind = index % 3
            if kind == 1:
                closing, name = piece, pieces[index + 1].lower()
                current = None if closing else name
                if current is not None:
                    fields.setdefault(current, (number, []))
            elif kind == 0 and current is not None:
                fields[current][1].append(piece)
    for needed in ("num", "title"):
        if needed not in fields:
            raise InputFormatError(path, start, f"topic without <{needed}>")
    number, parts = fields["num"]
    qid = " ".join(parts).strip()
    qid = re.sub(r"^Number:\s*", "", qid, flags=re.IGNORECASE).strip()
    check_id(path, number, qid, "topic number")
    number, parts = fields["title"]
    text = re.sub(r"^Topic:\s*", "", " ".join(" ".join(parts).split()), flags=re.IGNORECASE)
    if not text:
        raise InputFormatError(path, number, f"topic {qid!r} has an empty <title>")
    return qid, text


# --------------------------------------------------------------------------- run formats

RUN_FORMATS = ("trec", "msmarco", "json")
"""trec: `qid Q0 docid rank score tag`; msmarco: `qid<TAB>docid<TAB>rank` (scores 1/rank when read);
json: `{qid: {docid: score}}` (ranx's and Pyserini's JSON runs)."""


def detect_run_format(path: str | Path) -> str:
    """The run format told by the first non-blank line: `{` JSON, 6 columns TREC, 3 columns MS MARCO."""
    path = Path(path)
    for number, line in numbered_lines(path):
        if line.lstrip().startswith("{"):
            return "json"
        columns = len(line.split())
        if columns == 6:
            return "trec"
        if columns == 3:
            return "msmarco"
        raise InputFormatError(path, number, f"not a run: expected TREC (6 columns: qid Q0 docid rank score tag), "
                                             f"MS MARCO (3: qid docid rank) or JSON ({{qid: {{docid: score}}}}); "
                                             f"found {columns} columns")
    raise InputFormatError(path, None, "run file is empty")


def read_run(path: str | Path, fmt: Optional[str] = None) -> Run:
    """Read a run in any of `RUN_FORMATS` (`fmt` None or 'auto': told from the content)."""
    fmt = detect_run_format(path) if fmt in (None, "auto") else fmt
    if fmt == "trec":
        return read_trec_run(path)
    if fmt == "msmarco":
        return read_msmarco_run(path)
    if fmt == "json":
        return read_json_run(path)
    raise DupMAEEvalError(f"unknown run format {fmt!r} (known: {', '.join(RUN_FORMATS)})")


def read_msmarco_run(path: str | Path) -> Run:
    """Read an MS MARCO run (`qid<TAB>docid<TAB>rank`): hits in rank order, each scored 1/rank (as
    Pyserini's conversion to TREC does), so every evaluator sees the file's order. A rank that is not a
    whole number of at least 1, a rank or a document listed twice for a query are refused with file:line."""
    path = Path(path)
    hits: Dict[str, Dict[int, Tuple[str, int]]] = {}
    seen: Dict[Tuple[str, str], int] = {}
    for number, line in numbered_lines(path):
        fields = line.split()
        if len(fields) != 3:
            raise InputFormatError(path, number, f"not MS MARCO run format: expected 3 columns "
                                                 f"(qid docid rank), found {len(fields)}")
        qid, docid, rank_text = fields
        try:
            rank = int(rank_text) if _plain(rank_text) else 0
        except ValueError:
            rank = 0
        if rank < 1:
            raise InputFormatError(path, number, f"rank {rank_text!r} is not a whole number of at least 1")
        earlier = seen.setdefault((qid, docid), number)
        if earlier != number:
            raise InputFormatError(path, number, f"document {docid!r} is listed twice for query {qid!r} "
                                                 f"(first at line {earlier})")
        ranks = hits.setdefault(qid, {})
        if rank in ranks:
            raise InputFormatError(path, number, f"rank {rank} is given twice for query {qid!r} (first at line "
                                                 f"{ranks[rank][1]})")
        ranks[rank] = (docid, number)
    if not hits:
        raise InputFormatError(path, None, "run file is empty")
    return {qid: [(ranks[rank][0], 1.0 / rank) for rank in sorted(ranks)] for qid, ranks in hits.items()}


def read_json_run(path: str | Path) -> Run:
    """Read a JSON run `{qid: {docid: score}}` (ranx's and Pyserini's), hits ordered by score (ties by
    document id, descending: the order trec_eval evaluates). Malformed JSON, a score that is not a finite
    number and a key given twice are refused naming the file and the line."""
    path = Path(path)
    try:
        with open_bytes(path) as handle:
            data = handle.read()
    except READ_ERRORS as exc:
        raise read_error(path, 1, exc) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:          # named at the line that holds the bad byte
        raise read_error(path, exc.object.count(b"\n", 0, exc.start) + 1, exc) from None
    run: Run = {}
    for qid, at, value in _members(path, text, _SPACE.match(text).end(), "query id"):
        check_id(path, _line_at(text, at), qid, "query id")
        if not isinstance(value, _Pairs):
            raise InputFormatError(path, _line_at(text, at), f"query {qid!r}: expected an object {{docid: score}}")
        docs: Dict[str, int] = {}
        for index, (docid, score) in enumerate(value):
            if (docid in docs or isinstance(score, bool) or not isinstance(score, (int, float))
                    or not math.isfinite(score) or not docid or any(char.isspace() for char in docid)):
                line = _line_at(text, _member_position(text, at, index))
                check_id(path, line, docid, "document id")
                if docid in docs:
                    raise InputFormatError(path, line, f"document {docid!r} is listed twice for query {qid!r} "
                                                       f"(first at line {_line_at(text, _member_position(text, at, docs[docid]))})")
                raise InputFormatError(path, line, f"score of document {docid!r} for query {qid!r} is not a "
                                                   f"finite number")
            docs[docid] = index
        run[qid] = sorted(((docid, float(score)) for docid, score in value), key=lambda hit: (hit[1], hit[0]),
                          reverse=True)
    if not run:
        raise InputFormatError(path, None, "run file is empty")
    return run


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in file order (duplicate keys kept, to be refused)."""


_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs)
_SPACE = re.compile(r"\s*")


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _members(path: Path, text: str, position: int, what: str):
    """Walk the JSON object at `position`: yield (key, position of its value, value), refusing a key given
    twice and malformed JSON with the line where it is."""
    def fail(at: int, message: str):
        raise InputFormatError(path, _line_at(text, at), message)

    if not text.startswith("{", position):
        fail(position, "not a JSON run: expected an object {qid: {docid: score}}")
    position = _SPACE.match(text, position + 1).end()
    if text.startswith("}", position):
        return
    seen: Dict[str, int] = {}
    while True:
        if not text.startswith('"', position):
            fail(position, "malformed JSON (expected a string key)")
        try:
            key, position = _DECODER.raw_decode(text, position)
            line = _line_at(text, position)
            if key in seen:
                fail(position, f"duplicate {what} {key!r} (first at line {seen[key]})")
            seen[key] = line
            position = _SPACE.match(text, position).end()
            if not text.startswith(":", position):
                fail(position, "malformed JSON (expected ':')")
            start = _SPACE.match(text, position + 1).end()
            value, position = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            fail(exc.pos, f"malformed JSON ({exc.msg})")
        yield key, start, value
        position = _SPACE.match(text, position).end()
        if text.startswith(",", position):
            position = _SPACE.match(text, position + 1).end()
        elif text.startswith("}", position):
            if text[position + 1:].strip():
                fail(position + 1, "malformed JSON (text after the run's object)")
            return
        else:
            fail(position, "malformed JSON (expected ',' or '}')")


def _member_position(text: str, start: int, index: int) -> int:
    """Where the `index`-th member of the (well-formed) JSON object at `start` begins."""
    position = _SPACE.match(text, start + 1).end()
    for _ in range(index):
        _, position = _DECODER.raw_decode(text, position)                              # key
        position = _SPACE.match(text, position).end() + 1                              # ':'
        _, position = _DECODER.raw_decode(text, _SPACE.match(text, position).end())    # value
        position = _SPACE.match(text, _SPACE.match(text, position).end() + 1).end()    # ','
    return position


def write_run(path: str | Path, run: Mapping[str, Sequence[Tuple[str, float]]], tag: str, fmt: str = "trec") -> None:
    """Write a run atomically in one of `RUN_FORMATS`. Every format holds the same run: scores rounded to
    6 decimals as the TREC file has them; an MS MARCO file ranks each query's hits in the order trec_eval
    and ir-measures evaluate the TREC file (score descending, ties by document id descending), so the two
    files score the same; the JSON file lists them in that order too. Refused as `write_trec_run` refuses, the
    tag included in every format (`run_tag_problem`)."""
    if fmt == "trec":
        write_trec_run(path, run, tag)
        return
    if fmt not in RUN_FORMATS:
        raise DupMAEEvalError(f"unknown run format {fmt!r} (known: {', '.join(RUN_FORMATS)})")
    check_run_tag(tag)                   # not written here, but the sidecar's condition, and a TREC copy's tag
    for qid, hits in run.items():
        _check_hits(path, qid, hits)
    with atomic_output(path) as out:
        if fmt == "json":
            out.write("{")
        for index, qid in enumerate(sorted(run, key=_natural_key)):
            hits = sorted(((docid, float(f"{score:.6f}")) for docid, score in run[qid]),
                          key=lambda hit: (hit[1], hit[0]), reverse=True)
            if fmt == "msmarco":
                out.writelines(f"{qid}\t{docid}\t{rank}\n" for rank, (docid, _) in enumerate(hits, start=1))
            else:
                scores = ", ".join(f"{json.dumps(docid)}: {score:.6f}" for docid, score in hits)
                out.write(f"{',' if index else ''}\n{json.dumps(qid)}: {{{scores}}}")
        if fmt == "json":
            out.write("\n}\n")
