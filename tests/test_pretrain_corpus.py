"""scripts/build_pretrain_corpus.py without downloads: its cleaners on small hand-made inputs with
hand-worked outputs, and a build from the bundled SciFact source only (the first 200 documents) run twice
into two folders: byte-identical files and a manifest that matches them."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import lzma
import sys

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("build_pretrain_corpus", REPO / "scripts" / "build_pretrain_corpus.py")
bpc = importlib.util.module_from_spec(_spec)
sys.modules["build_pretrain_corpus"] = bpc
_spec.loader.exec_module(bpc)


def test_normalize_nfc_and_whitespace():
    assert bpc.normalize("  Cafe\u0301\t\n au\u00a0lait \x0c ") == "Caf\u00e9 au lait"


def test_rfc_page_furniture_removed_and_paragraph_rejoined():
    text = (
        "   The quick protocol sends a message to the server and\n"
        "   waits for the reply.\n"
        "\n"
        "\n"
        "Doe                          Standards Track                    [Page 3]\n"
        "\f\n"
        "RFC 9999                 Quick Protocol                     June 2020\n"
        "\n"
        "\n"
        "   The reply carries the answer.\n"
    )
    lines = bpc.remove_rfc_furniture(text)
    # the footer/header pair and their blank lines are gone; the previous line ends a sentence, so a
    # blank line separates the two paragraphs
    assert lines == [
        "   The quick protocol sends a message to the server and",
        "   waits for the reply.",
        "",
        "   The reply carries the answer.",
    ]
    cut = "   The server answers\n\nDoe     Informational     [Page 1]\n\fRFC 1 Title   May 1990\n\n   with a list.\n"
    assert bpc.remove_rfc_furniture(cut) == ["   The server answers", "   with a list."]


RFC = """\
Network Working Group                                         J. Doe
Request for Comments: 9999                                   Example
Category: Standards Track                                  June 2020

                        The Quick Protocol

Status of This Memo

   This is an Internet Standards Track document. It has been approved
   for publication by the Internet Engineering Steering Group.

Table of Contents

   1. Introduction ....................................................2
   2. Message Format ..................................................3

1.  Introduction

   The quick protocol lets a client ask a server for the time of day
   in a single round trip, and it is meant for small devices that
   cannot run a full time protocol.  It is not a secure protocol.

   o  The client sends a request to the server on port 37 and waits
      for an answer from the server.

2.  Message Format

       0                   1
       0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
      +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
      |    Version    |     Flags     |
      +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

   The version field is set to one by the sender, and the receiver
   ignores a message whose version is not known to it.



Doe                          Standards Track                    [Page 2]
\f
RFC 9999                     Quick Protocol                    June 2020


   A multi-
   homed server answers on each of its addresses, and the client
   takes the first answer that arrives.

3.  References

   [1] Postel, J., "Time Protocol", STD 26, RFC 868, May 1983, and some
       more words to make this a long enough reference entry.

4.  Security Considerations

   An attacker on the path can change the time that the client sees,
   so the client should not trust the answer for security decisions.
"""


def test_clean_rfc_keeps_running_prose_only():
    assert bpc.clean_rfc(RFC) == [
        "The quick protocol lets a client ask a server for the time of day in a single round trip, and "
        "it is meant for small devices that cannot run a full time protocol. It is not a secure protocol.",
        "The client sends a request to the server on port 37 and waits for an answer from the server.",
        "The version field is set to one by the sender, and the receiver ignores a message whose version "
        "is not known to it.",
        "A multi-homed server answers on each of its addresses, and the client takes the first answer "
        "that arrives.",
        "An attacker on the path can change the time that the client sees, so the client should not "
        "trust the answer for security decisions.",
    ]


def test_dictd_index_numbers_and_entries():
    assert bpc.dictd_number("A") == 0
    assert bpc.dictd_number("Fz") == 5 * 64 + 51
    data = b"00-database-short\n   junk\nCat \\Cat\\, n.\n   A small animal.\n"
    # offsets: the licence pseudo entry at 0 (26 bytes), the entry at 26 (36 bytes)
    index = "00-database-short\tA\t0\ncat\t0\tk\nCat\t0\tk\n"
    assert bpc.dictd_number("0") == 52 and bpc.dictd_number("k") == 36
    index = "00-database-short\tA\ta\ncat\ta\tk\nCat\ta\tk\n"
    assert bpc.dictd_number("a") == 26
    assert bpc.dictd_entries(index, data) == [("cat", "Cat \\Cat\\, n.\n   A small animal.\n")]


def test_gcide_entry_parsed():
    entry = (
        "Affect \\Af*fect\"\\, v. t. [imp. & p. p. {Affected}; p. pr. & vb.\n"
        "   n. {Affecting}.] [L. affectus, p. p. of afficere.]\n"
        "   1. To act upon; to produce an effect or change upon.\n"
        "      [1913 Webster]\n"
        "\n"
        "            As might affect the earth with cold heat. --Milton.\n"
        "      [1913 Webster]\n"
        "\n"
        "   2. To love; to regard with {affection}. [Obs.]\n"
        "      [1913 Webster]\n"
    )
    assert bpc.parse_gcide_entry(entry) == (
        "Affect: To act upon; to produce an effect or change upon. As might affect the earth with cold "
        "heat. To love; to regard with affection."
    )


def test_wordnet_entry_parsed():
    entry = (
        "appetence\n"
        "    n 1: a feeling of craving something; \"an appetite for life\"\n"
        "         [syn: {appetite}, {appetency}]\n"
        "    2: a natural desire [ant: {aversion}]\n"
    )
    assert bpc.parse_wordnet_entry(entry) == (
        'appetence: a feeling of craving something; "an appetite for life". a natural desire.'
    )


def test_brown_pos_tags_stripped():
    tagged = ("\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc ``/`` Why/wrb ?/. ''/'' "
              "?/. asked/vbd the/at judge/nn ;/. ;/.")
    assert bpc.brown_detokenize(tagged) == 'The jury said "no evidence," and "Why?" asked the judge;'
    text = "\n\n\tA/at dog/nn ran/vbd ./.\n\tIt/pps barked/vbd ./.\n\n\n\tThe/at end/nn ./.\n"
    assert bpc.parse_brown(text) == ["A dog ran. It barked.", "The end."]


def test_sisu_markup_stripped():
    sst = (
        "% SiSU 4.0\n\n@title: A Book\n :author: Someone\n\n:A~ @title @author\n\n1~one Chapter One\n\n"
        "_1 The /{first}/ paragraph has *{bold}* text~{ 1. A footnote. }~ and a {link}http://example.org here.\n"
        "={ index : entry }\n\n"
        "``` code\nint x = 1;\n```\n\n"
        "``` quote\nA quoted line\nthat continues.\n```\n"
    )
    assert bpc.clean_sisu(sst) == [
        "The first paragraph has bold text and a link here.",
        "A quoted line that continues.",
    ]


def test_play_speakers_and_stage_directions_dropped():
    text = "ACT I. SCENE I. Elsinore.\n\nHam.\nTo be, or not to be:\nthat is the question.\n\n[Exit Ghost.]\n"
    assert bpc.clean_play(text) == ["To be, or not to be: that is the question."]


def test_sentence_split_and_long_paragraph_split():
    assert bpc.split_sentences("Mr. Smith went home. He slept! Did he? Yes, at 5 p.m. on Monday.") == [
        "Mr. Smith went home.", "He slept!", "Did he?", "Yes, at 5 p.m. on Monday."]
    sentence = "Word " + " ".join(["word"] * 28) + "."  # 29 words
    para = " ".join([sentence] * 10)  # 290 words: two pieces of 145 at sentence boundaries
    pieces = bpc.split_long(para, max_words=200)
    assert [len(p.split()) for p in pieces] == [145, 145]
    assert all(p.endswith(".") for p in pieces)
    assert [len(p.split()) for p in bpc.split_long(" ".join(["w"] * 450), max_words=200)] == [200, 200, 50]


def test_pack_joins_short_and_drops_leftovers():
    units = ["a b c d e f g h i j"] * 7  # 10 words each
    # joined until >= 60 words, the 10-word leftover (< 30) is dropped
    assert [len(p.split()) for p in bpc.pack(units, min_words=30, target=60, max_words=200)] == [60]
    first = "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e."  # 31 words, under target
    # a 150-word unit still fits beside it (181 <= 200); a 180-word one does not, so the 31 stand alone
    assert [len(p.split()) for p in bpc.pack([first, " ".join(["x"] * 150)], 30, 60, 200)] == [181]
    assert [len(p.split()) for p in bpc.pack([first, " ".join(["x"] * 180)], 30, 60, 200)] == [31, 180]


def test_prose_filters():
    assert not bpc.keep_unit("STATUS OF THIS MEMO AND MORE")
    assert not bpc.keep_unit("12 34 56 78 -- ++")
    assert not bpc.keep_unit("Ham.")
    assert bpc.keep_unit("The cat sat on the mat.")
    prose = "The cat sat on the mat and looked at the dog, which was asleep in the sun by the door of the house " \
            "where they had lived for all of their years together."
    assert bpc.is_prose(prose)
    assert not bpc.is_prose("x = 1; y = 2; " * 10)


def test_dedup_first_occurrence_wins():
    d = bpc.Deduper()
    assert [d.first(t) for t in ["a b", "c", "a b", "c", "d"]] == [True, True, False, False, True]


def test_heldout_selection_deterministic_and_disjoint():
    texts = [f"passage number {i} of the test" for i in range(2000)]
    held = [t for t in texts if bpc.is_heldout(t)]
    assert held == [t for t in texts if int(hashlib.sha1(t.encode()).hexdigest(), 16) % 200 == 0]
    assert 2 <= len(held) <= 30
    assert held == [t for t in texts if bpc.is_heldout(t)]


def test_pinned_sources_table():
    names = [s.name for s in bpc.SOURCES]
    assert len(names) == len(set(names))
    for s in bpc.SOURCES:
        for a in s.archives:
            assert len(a.sha256) == 64 and a.version and a.filename
    scifact = next(s for s in bpc.SOURCES if s.name == "scifact")
    assert bpc.sha256_file(bpc.REPO / scifact.archives[0].package) == scifact.archives[0].sha256


def test_unknown_source_is_a_one_line_error(tmp_path, capsys):
    assert bpc.main(["--sources", "nope", "--output", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown source(s) nope") and err.count("\n") == 1


def test_scifact_subset_build_is_byte_identical(tmp_path, monkeypatch):
    scifact = next(s for s in bpc.SOURCES if s.name == "scifact")
    small = dataclasses.replace(scifact, extract=lambda paths: itertools.islice(scifact.extract(paths), 200))
    monkeypatch.setattr(bpc, "SOURCES", (small,))
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        bpc.build(out, tmp_path / f"cache-{run}", ["scifact"], log=lambda *a, **k: None)
        outs.append(out)
    names = ["corpus.txt", "heldout.txt", "corpus.txt.xz", "manifest.json"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    corpus = (outs[0] / "corpus.txt").read_text(encoding="utf-8").splitlines()
    heldout = (outs[0] / "heldout.txt").read_text(encoding="utf-8").splitlines()
    for name in ("corpus.txt", "heldout.txt", "corpus.txt.xz"):
        assert manifest["sha256"][name] == hashlib.sha256((outs[0] / name).read_bytes()).hexdigest()
    assert lzma.decompress((outs[0] / "corpus.txt.xz").read_bytes()) == (outs[0] / "corpus.txt").read_bytes()
    [entry] = manifest["sources"]
    assert entry["name"] == "scifact" and entry["passages"] == len(corpus) > 200
    assert entry["words"] == sum(len(p.split()) for p in corpus)
    assert entry["heldout_passages"] == len(heldout)
    assert not set(corpus) & set(heldout) and len(set(corpus)) == len(corpus)
    assert all(bpc.is_heldout(p) for p in heldout) and not any(bpc.is_heldout(p) for p in corpus)
    assert corpus == sorted(corpus, key=lambda p: hashlib.sha1(p.encode()).digest())
    assert all(30 <= len(p.split()) <= 200 for p in corpus)
    assert not list(tmp_path.glob("*/.*"))  # no temp files left behind
