"""Readers and writers: round trips, and one clear located error per kind of bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from dupmae_eval.files import atomic_output
from dupmae_eval.data.formats import (
    read_beir_corpus, read_beir_queries, read_json_run, read_qrels, read_topics, read_trec_run, read_tsv_collection,
    read_tsv_queries, write_trec_run)
from dupmae_eval.errors import DupMAEEvalError, InputFormatError


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_beir_corpus_streams_records_and_reads_gzip(tmp_path):
    lines = [{"_id": "d1", "title": "T", "text": "one"}, {"_id": 2, "text": "two"}]
    plain = _write(tmp_path / "corpus.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    packed = tmp_path / "corpus.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        passages = list(read_beir_corpus(path))
        assert [(p.docid, p.title, p.text) for p in passages] == [("d1", "T", "one"), ("2", "", "two")]
        assert passages[0].flat_text() == "T one" and passages[1].flat_text() == "two"


def test_malformed_json_line_is_named(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    with pytest.raises(InputFormatError, match=r"corpus.jsonl:2: malformed JSON"):
        list(read_beir_corpus(path))


def test_corpus_line_without_id_is_named(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "x"}\n\n{"title": "t", "text": "y"}\n')
    with pytest.raises(InputFormatError, match=r'corpus.jsonl:3: missing field "_id"'):
        list(read_beir_corpus(path))


def test_qrels_with_two_columns_is_refused(tmp_path):
    path = _write(tmp_path / "qrels.txt", "q1 d1\nq2 d2\n")
    with pytest.raises(InputFormatError, match=r"qrels.txt:1: .*found 2"):
        read_qrels(path)


def test_qrels_formats_trec_and_beir_agree(tmp_path):
    trec = _write(tmp_path / "q.trec", "1 0 d1 2\n1 0 d2 0\n2 0 d3 1\n")
    beir = _write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n2\td3\t1\n")
    assert read_qrels(trec) == read_qrels(beir) == {"1": {"d1": 2, "d2": 0}, "2": {"d3": 1}}


@pytest.mark.parametrize("name, text, line, first", [
    ("q.trec", "1 0 d1 2\n1 0 d2 0\n\n2 0 d3 1\n1 0 d1 0\n", 5, 1),
    ("q.tsv", "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n2\td3\t1\n1\td1\t0\n", 5, 2),
])
def test_a_pair_judged_twice_with_different_grades_is_refused_naming_both_lines(name, text, line, first, tmp_path):
    """Keeping either grade would change the scores without a sign; the same grade twice changes nothing."""
    path = _write(tmp_path / name, text)
    with pytest.raises(InputFormatError, match=rf"{name}:{line}: document 'd1' is judged twice for query '1' with "
                                               rf"different grades: 0 here, 2 at line {first}$"):
        read_qrels(path)
    _write(path, text.replace("d1\t0\n", "d1\t2\n").replace("d1 0\n", "d1 2\n"))
    assert read_qrels(path) == {"1": {"d1": 2, "d2": 0}, "2": {"d3": 1}}


def test_run_that_is_not_trec_format_is_refused(tmp_path):
    path = _write(tmp_path / "run.txt", "1 Q0 d1 1 3.0 tag\n1\td2\t2\n")
    with pytest.raises(InputFormatError, match=r"run.txt:2: not TREC run format"):
        read_trec_run(path)
    path = _write(tmp_path / "run2.txt", "1 Q0 d1 first 3.0 tag\n")
    with pytest.raises(InputFormatError, match=r"run2.txt:1: not TREC run format"):
        read_trec_run(path)


def test_msmarco_collection_line_without_tab(tmp_path):
    path = _write(tmp_path / "collection.tsv", "0\tfirst passage\n1 second passage\n")
    with pytest.raises(InputFormatError, match=r"collection.tsv:2"):
        list(read_tsv_collection(path))


def test_a_lone_carriage_return_is_text_not_a_line_break(tmp_path):
    """Only "\n" ends a line: a stray "\r" inside a passage or query stays in its text instead of starting a
    record of its own (here a fake passage 7 and query q7) and moving every later line number."""
    collection = tmp_path / "collection.tsv"
    collection.write_bytes(b"1\tthe price was 5\r7\tdollars today\n2\tsecond\n")
    packed = tmp_path / "collection.tsv.gz"
    packed.write_bytes(gzip.compress(collection.read_bytes()))
    for path in (collection, packed):
        assert [(p.docid, p.text, p.line) for p in read_tsv_collection(path)] == [
            ("1", "the price was 5\r7\tdollars today", 1), ("2", "second", 2)]
    from dupmae_eval.training.finetune_data import PassageStore

    store = PassageStore(collection, "msmarco")      # reads the file by byte offset: the same two passages
    assert [store.docid_at(i) for i in range(len(store))] == ["1", "2"] and "7" not in store
    queries = tmp_path / "queries.tsv"
    queries.write_bytes(b"q1\tfive\rq7\tseven\nq2\ttwo\n")
    assert read_tsv_queries(queries) == read_topics(queries)[0] == {"q1": "five\rq7\tseven", "q2": "two"}
    corpus = tmp_path / "corpus.jsonl"               # "\r" is JSON whitespace between a record's fields
    corpus.write_bytes(b'{"_id": "a",\r "text": "x"}\n{"_id": "b", "text": "y"}\n')
    assert [(p.docid, p.text, p.line) for p in read_beir_corpus(corpus)] == [("a", "x", 1), ("b", "y", 2)]


@pytest.mark.parametrize("name, text, read", [
    ("corpus.jsonl", '{"_id": "d1", "title": "T", "text": "one"}\n\n{"_id": "d2", "text": "two "}\n',
     lambda path: list(read_beir_corpus(path))),
    ("collection.tsv", "1\tfirst passage \n2\tsecond\n", lambda path: list(read_tsv_collection(path))),
    ("queries.jsonl", '{"_id": "1", "text": "q one"}\n{"_id": "2", "text": "q two"}\n', read_beir_queries),
    ("queries.tsv", "1\tq one\n2\tq two\n", read_topics),
    ("topics.txt", "<top>\n<num> Number: 7\n<title> a topic\n\n</top>\n", read_topics),
    ("qrels.tsv", "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n", read_qrels),
    ("qrels.txt", "1 0 d1 2\n1 0 d2 0\n", read_qrels),
    ("run.trec", "1 Q0 d1 1 2.5 t\n1 Q0 d2 2 1.5 t\n", read_trec_run),
    ("run.json", '{\n"1": {"d1": 2.5,\n "d2": 1.5}\n}\n', read_json_run),
])
def test_a_crlf_file_reads_as_the_lf_file(name, text, read, tmp_path):
    """Windows line endings change nothing: same records, same texts (no trailing "\r"), same line numbers."""
    (tmp_path / "lf").mkdir()
    (tmp_path / "crlf").mkdir()
    lf = tmp_path / "lf" / name
    lf.write_bytes(text.encode())
    crlf = tmp_path / "crlf" / name
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    assert b"\r\n" in crlf.read_bytes() and read(crlf) == read(lf)


def _lines_with_a_bad_byte(name, count=3000, bad=2500):
    """`count` lines (about 130 KB, far past a text stream's 8 KB and the readers' 64 KB blocks) of a file
    of kind `name`, after a byte-order mark; line `bad` holds a Latin-1 byte that is not UTF-8."""
    if name.startswith("corpus"):
        lines = [json.dumps({"_id": str(i), "text": f"caf {i} " + "x" * 20}) for i in range(1, count + 1)]
    elif name.startswith("queries"):
        lines = [f"q{i}\tcaf {i} " + "x" * 20 for i in range(1, count + 1)]
    else:                                                   # a JSON run: "{", one query a line, "}"
        lines = ["{"] + [f'"q{i}": {{"caf{i}": 1.5}},' for i in range(2, count)] + ['"last": {"d": 1.0}', "}"]
    data = [line.encode() for line in lines]
    data[bad - 1] = data[bad - 1].replace(b"caf", b"caf\xe9", 1)
    assert b"\xe9" in data[bad - 1]
    return b"\xef\xbb\xbf" + b"\n".join(data) + b"\n"


@pytest.mark.parametrize("name, read", [
    ("corpus.jsonl", lambda path: list(read_beir_corpus(path))),
    ("corpus.jsonl.gz", lambda path: list(read_beir_corpus(path))),
    ("queries.tsv", read_tsv_queries),
    ("run.json", read_json_run),
])
def test_bad_utf8_is_named_at_the_line_that_holds_it(name, read, tmp_path):
    """Not at the line where the block the bad byte came in began (line 2497 instead of 2500, say)."""
    path = tmp_path / name
    data = _lines_with_a_bad_byte(name)
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(InputFormatError, match=rf"{name}:2500: not valid UTF-8 text$"):
        read(path)


def test_queries_jsonl_missing_text(tmp_path):
    path = _write(tmp_path / "queries.jsonl", '{"_id": "1", "text": "q"}\n{"_id": "2"}\n')
    with pytest.raises(InputFormatError, match=r'queries.jsonl:2: missing field "text"'):
        read_beir_queries(path)


def test_atomic_output_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.trec"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as out:
            out.write("partial\n")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_trec_run_reader_holds_little_beside_the_run_while_reading(tmp_path):
    """The duplicate check keeps each query's document ids, not a (query, document) -> line tuple per line, which
    doubled the reader's peak memory (an MS MARCO dev run has 7 million lines). A repeat is still named with
    the line of its first listing, the same document under another query being no repeat."""
    import tracemalloc

    path = tmp_path / "big.trec"
    path.write_text("".join(f"{q} Q0 doc{d} {d + 1} {1000 - d}.5 t\n" for q in range(50) for d in range(1000)))
    tracemalloc.start()
    try:
        run = read_trec_run(path)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(map(len, run.values())) == 50_000
    assert peak < 1.5 * kept          # the reader's own bookkeeping: well under the run it returns
    path.write_text("2 Q0 d1 1 3.0 t\n1 Q0 d2 1 2.0 t\n1 Q0 d1 2 1.0 t\n1 Q0 d1 3 0.5 t\n")
    with pytest.raises(InputFormatError, match="big.trec:4: document 'd1' is listed twice for query '1' "
                                               "\\(first at line 3\\)"):
        read_trec_run(path)


def test_trec_run_ties_break_by_docid_and_bytes_are_stable(tmp_path):
    run = {"10": [("b", 1.0), ("a", 1.0), ("c", 2.0)], "9": [("x", 0.5)]}
    write_trec_run(tmp_path / "r1.trec", run, "t")
    write_trec_run(tmp_path / "r2.trec", {k: list(reversed(v)) for k, v in reversed(list(run.items()))}, "t")
    text = (tmp_path / "r1.trec").read_text()
    assert text == (tmp_path / "r2.trec").read_text()
    # tied documents by id, descending, as trec_eval ranks them
    assert text.splitlines() == ["9 Q0 x 1 0.500000 t", "10 Q0 c 1 2.000000 t", "10 Q0 b 2 1.000000 t",
                                 "10 Q0 a 3 1.000000 t"]
    assert read_trec_run(tmp_path / "r1.trec")["10"] == [("c", 2.0), ("b", 1.0), ("a", 1.0)]


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(DupMAEEvalError, match="no such file"):
        read_qrels(tmp_path / "nope.txt")


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    write_trec_run(tmp_path / "r.trec", {"1": [("d", 1.0)]}, "t")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.trec").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("fmt", ["trec", "msmarco", "json"])
@pytest.mark.parametrize("tag, problem", [("a b", "must not contain whitespace"), ("a\tb", "must not contain whitespace"),
                                          ("", "must not be empty")])
def test_a_run_tag_that_would_break_a_trec_line_is_refused_in_every_format(tmp_path, fmt, tag, problem):
    """The tag is the TREC file's last column (and the sidecar's condition): a space splits it, an empty one
    leaves 5 columns. The same rule (`run_tag_problem`) that the flags and suites are checked with up front."""
    import re

    from dupmae_eval.data.formats import run_tag_problem, write_run

    assert run_tag_problem(tag) == problem and run_tag_problem("bm25-flat") is None
    with pytest.raises(DupMAEEvalError, match=re.escape(f"run tag {tag!r} {problem}")):
        write_run(tmp_path / "r.run", {"1": [("d", 1.0)]}, tag, fmt)
    assert list(tmp_path.iterdir()) == []
