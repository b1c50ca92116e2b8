"""The registry and dataset resolution: counts, shipped judgments, layouts, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, TEST_DATA
from dupmae_eval.data.formats import read_qrels, read_tsv_queries
from dupmae_eval.data.datasets import BEIR_UNITS, CQADUPSTACK_FORUMS, REGISTRY, SHIPPED_QRELS, resolve, units_of
from dupmae_eval.errors import DupMAEEvalError


def test_registry_has_the_18_beir_units_and_msmarco():
    assert len(BEIR_UNITS) == 18
    assert len(units_of("cqadupstack")) == 12 == len(CQADUPSTACK_FORUMS)
    restricted = {name for name, info in REGISTRY.items() if not info.public}
    assert restricted == {"bioasq", "signal1m", "trec-news", "robust04"}
    assert REGISTRY["msmarco-passage"].measures == {
        "dev-subset": ("RR@10", "R@1000"), "dl19": ("nDCG@10", "AP(rel=2)", "R(rel=2)@1000"),
        "dl20": ("nDCG@10", "AP(rel=2)", "R(rel=2)@1000")}
    assert REGISTRY["scifact"].measures["test"] == ("nDCG@10", "R@100", "R@1000")
    assert all(info.url for info in REGISTRY.values() if info.public)


# Query counts of the published test sets (BEIR paper, Table 1; TREC DL; MS MARCO dev subset).
JUDGED_QUERIES = {"scifact": 300, "nfcorpus": 323, "arguana": 1406, "trec-covid": 50, "fiqa": 648,
                  "webis-touche2020": 49, "quora": 10000, "scidocs": 1000, "nq": 3452}


@pytest.mark.parametrize("name", sorted(n for n, info in REGISTRY.items() if info.name != "robust04"))
def test_every_registry_dataset_ships_judgments_and_topics(name):
    info = REGISTRY[name]
    for split, (qrels_file, topics_file) in info.shipped.items():
        qrels = read_qrels(SHIPPED_QRELS / qrels_file)
        topics = read_tsv_queries(SHIPPED_QRELS / topics_file)
        assert set(qrels) <= set(topics), f"{name}/{split}: judged queries without topics"
        if split == info.default_split and name in JUDGED_QUERIES:
            assert len(qrels) == JUDGED_QUERIES[name]
    if name == "msmarco-passage":
        assert len(read_qrels(SHIPPED_QRELS / info.shipped["dev-subset"][0])) == 6980
        assert len(read_qrels(SHIPPED_QRELS / info.shipped["dl19"][0])) == 43
        assert len(read_qrels(SHIPPED_QRELS / info.shipped["dl20"][0])) == 54


def test_shipped_qrels_carry_their_licence_notes():
    notes = (REPO / "qrels" / "README.md").read_text()
    assert "Apache" in notes and "NIST" in notes


def test_bundled_scifact_resolves_offline_and_matches_its_counts():
    data = resolve("scifact", download=False)
    import dupmae_eval

    # found through the installed package (package data), not relative to the checkout
    assert data.layout == "beir" and data.root == Path(dupmae_eval.__file__).parent / "resources" / "data" / "scifact"
    assert len(data.queries("test")) == 300
    assert sum(1 for _ in data.passages()) == 5183


def test_folder_in_msmarco_layout():
    data = resolve(str(TEST_DATA / "msmarco-passage-sample"))
    assert data.layout == "msmarco"
    assert len(data.queries("dl19")) == 43 and len(data.queries("dl20")) == 54
    assert data.measures("dl19") == ("nDCG@10", "AP(rel=2)", "R(rel=2)@1000")
    assert sum(1 for _ in data.passages()) == 24884


def test_unknown_dataset_name_is_refused_with_a_hint():
    with pytest.raises(DupMAEEvalError, match=r"unknown dataset 'scifakt'.*did you mean 'scifact'"):
        resolve("scifakt")


def test_folder_without_corpus_is_refused(tmp_path):
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    with pytest.raises(DupMAEEvalError, match="neither corpus.jsonl"):
        resolve(str(tmp_path))


def test_restricted_dataset_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path))
    with pytest.raises(DupMAEEvalError, match="not publicly downloadable"):
        resolve("bioasq")


def test_offline_download_fails_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path))
    info = REGISTRY["nfcorpus"]
    monkeypatch.setitem(REGISTRY, "nfcorpus", type(info)(**{**info.__dict__, "url": "http://127.0.0.1:9/nfcorpus.zip"}))
    with pytest.raises(DupMAEEvalError, match=r"could not download http://127.0.0.1:9/nfcorpus.zip"):
        resolve("nfcorpus")
    assert not (tmp_path / "datasets" / "nfcorpus").exists()


def test_download_unpacks_a_beir_zip_into_the_cache(tmp_path, monkeypatch):
    """The real download path, fed a local BEIR-style zip through a file:// address."""
    import zipfile

    archive = tmp_path / "nfcorpus.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("nfcorpus/corpus.jsonl", json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
        zipped.writestr("nfcorpus/queries.jsonl", json.dumps({"_id": "q1", "text": "y"}) + "\n")
        zipped.writestr("nfcorpus/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    import hashlib

    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "home"))
    info = REGISTRY["nfcorpus"]
    assert info.archive_md5 == "a89dba18a62ef92f7d323ec890a0d38d"   # BEIR's README lists it
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(REGISTRY, "nfcorpus", type(info)(**{**info.__dict__, "url": archive.as_uri(),
                                                            "archive_md5": md5}))
    data = resolve("nfcorpus")
    assert data.root == tmp_path / "home" / "datasets" / "nfcorpus"
    assert [p.docid for p in data.passages()] == ["d1"]
    assert data.queries("test") == {"q1": "y"}
    assert data.source()["archive_md5"] == md5 and data.source()["md5_checked"]


def test_a_download_whose_md5_differs_from_the_published_one_is_refused(tmp_path, monkeypatch):
    import zipfile

    archive = tmp_path / "scifact.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("scifact/corpus.jsonl", json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DUPMAE_EVAL_DATA", raising=False)
    monkeypatch.setattr("dupmae_eval.data.datasets.BUNDLED_DATA", tmp_path / "no-bundle")
    info = REGISTRY["scifact"]
    monkeypatch.setitem(REGISTRY, "scifact", type(info)(**{**info.__dict__, "url": archive.as_uri()}))
    with pytest.raises(DupMAEEvalError, match="MD5 [0-9a-f]{32} differs from the published "
                                              "5f7d1de60b170fc8027bb7898e2efca1"):
        resolve("scifact")
    assert not (tmp_path / "home" / "datasets" / "scifact").exists()
    assert not (tmp_path / "home" / "downloads" / "scifact.zip").exists()


def test_local_names_can_stand_in_for_registry_names(monkeypatch):
    monkeypatch.setenv("DUPMAE_EVAL_DATA", f"trec-covid={TEST_DATA / 'vaswani'}")
    data = resolve("trec-covid")
    assert data.root == TEST_DATA / "vaswani" and data.info is REGISTRY["trec-covid"]
    assert data.qrels_path("test") == TEST_DATA / "vaswani" / "qrels" / "test.tsv"


def test_shipped_files_match_their_checksums():
    import hashlib

    lines = (SHIPPED_QRELS / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == len(list(SHIPPED_QRELS.glob("*.gz")))
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((SHIPPED_QRELS / name).read_bytes()).hexdigest() == digest, name


def test_every_downloadable_dataset_has_a_published_checksum():
    from dupmae_eval.data.datasets import REGISTRY

    unchecked = [name for name, info in REGISTRY.items() if info.url and not info.archive_md5]
    assert unchecked == []


def test_crafted_archives_cannot_write_outside_their_folder(tmp_path):
    """A zip with '../' and absolute member names, a tar with '../', an absolute path and a symlink out:
    everything lands inside the target folder, or is refused, and nothing appears beside it."""
    import io
    import os
    import tarfile
    import zipfile

    from dupmae_eval.data.datasets import _unpack

    target = tmp_path / "box" / "into"
    target.parent.mkdir()
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escaped-zip.txt", "x")
        zipped.writestr("/tmp/escaped-absolute.txt", "x")
        zipped.writestr("fine/corpus.jsonl", "{}")
    _unpack(archive, target)
    tarred = tmp_path / "evil.tar.gz"
    with tarfile.open(tarred, "w:gz") as tar:
        for name in ("../escaped-tar.txt", "/tmp/escaped-tar-absolute.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("link-out")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tar.addfile(link)
    try:
        _unpack(tarred, target / "t")
    except tarfile.TarError:
        pass                                            # refused outright: as good
    inside = {p.resolve() for p in target.rglob("*")}
    assert all(str(p).startswith(str(target.resolve())) for p in inside)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "evil.tar.gz", "evil.zip"]
    assert [p.name for p in target.parent.iterdir()] == ["into"]
    assert not os.path.exists("/tmp/escaped-absolute.txt") and not os.path.exists("/tmp/escaped-tar-absolute.txt")
