"""The dataset registry (MS MARCO passage, the 18 BEIR datasets) and how a name becomes a folder.

A dataset is given either as a folder (BEIR layout: corpus.jsonl, queries.jsonl,
qrels/SPLIT.tsv; or MS MARCO layout: collection.tsv, queries.SPLIT.tsv, qrels.SPLIT.txt)
or as a registry name, which is looked up in the package's bundled copies, then the
cache, then downloaded; or as `irds:<id>`, a dataset that ir_datasets serves (`irds.py`). Judgments for every registry dataset ship inside the package
(`dupmae_eval/resources/qrels`), so evaluation never needs the network.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

from dupmae_eval import cache
from dupmae_eval.data.formats import Passage, Qrels, read_qrels, read_tsv_queries
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.data.layouts import (
    BEIR_MEASURES, MSMARCO_DEV_MEASURES, TREC_DL_MEASURES, Layout, detect_layout, layout_of)
from dupmae_eval.shipped import resource_path

SHIPPED_QRELS = resource_path("qrels")
"""Test judgments and topics of every registry dataset, shipped inside the package."""
BUNDLED_DATA = resource_path("data")
"""Datasets bundled with the package (SciFact), found through the installed package, not the checkout."""

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
MSMARCO_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking/collectionandqueries.tar.gz"
MSMARCO_ARCHIVE_MD5 = "31644046b18952c1386cd4564ba2ae69"
"""The MD5 of collectionandqueries.tar.gz as Anserini's MS MARCO passage guide gives it (docs/experiments-msmarco-passage.md)."""


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: where the data comes from and how the literature scores it."""

    name: str                     # Pyserini's key: "trec-covid", "cqadupstack-android", "msmarco-passage"
    title: str                    # as the DupMAE paper's tables print it
    layout: str                   # a `layouts.LAYOUTS` name: "beir" or "msmarco"
    public: bool                  # False: BEIR's restricted sets (BioASQ, Signal-1M, TREC-NEWS, Robust04)
    default_split: str
    measures: Dict[str, Tuple[str, ...]]
    shipped: Dict[str, Tuple[str, str]]   # split -> (qrels file, topics file) under qrels/
    url: Optional[str] = None
    archive_member: Optional[str] = None  # folder inside the downloaded archive, e.g. "cqadupstack/android"
    unit: Optional[str] = None            # the BEIR unit a sub-forum averages into ("cqadupstack")
    archive_md5: Optional[str] = None     # the MD5 its publisher lists for the downloaded archive
    passages: Optional[int] = None        # corpus size as its publisher lists it (`datasets` shows it)


CQADUPSTACK_FORUMS = ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers",
                     "stats", "tex", "unix", "webmasters", "wordpress")

# MD5 of each public archive as BEIR's README lists it (beir-cellar/beir, "Available Datasets").
BEIR_ARCHIVE_MD5 = {
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1", "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307", "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9", "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563", "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167", "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9", "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d", "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

# Corpus sizes (passages) as the BEIR paper lists them (Table 1); CQADupStack per forum as Anserini's flat indexes
# count them (the 12 sum to the paper's 457,199); MS MARCO passage's collection.tsv. Shown by `datasets`, never
# downloaded to count.
CORPUS_PASSAGES = {
    "trec-covid": 171_332, "bioasq": 14_914_602, "nfcorpus": 3_633, "nq": 2_681_468, "hotpotqa": 5_233_329,
    "fiqa": 57_638, "signal1m": 2_866_316, "trec-news": 594_977, "robust04": 528_155, "arguana": 8_674,
    "webis-touche2020": 382_545, "quora": 522_931, "dbpedia-entity": 4_635_922, "scidocs": 25_657,
    "fever": 5_416_568, "climate-fever": 5_416_593, "scifact": 5_183,
    "cqadupstack-android": 22_998, "cqadupstack-english": 40_221, "cqadupstack-gaming": 45_301,
    "cqadupstack-gis": 37_637, "cqadupstack-mathematica": 16_705, "cqadupstack-physics": 38_316,
    "cqadupstack-programmers": 32_176, "cqadupstack-stats": 42_269, "cqadupstack-tex": 68_184,
    "cqadupstack-unix": 47_382, "cqadupstack-webmasters": 17_405, "cqadupstack-wordpress": 48_605,
    "msmarco-passage": 8_841_823,
}

_BEIR = [  # (key, paper title, public)
    ("trec-covid", "TREC-COVID", True), ("bioasq", "BioASQ", False), ("nfcorpus", "NFCorpus", True),
    ("nq", "NQ", True), ("hotpotqa", "HotpotQA", True), ("fiqa", "FiQA-2018", True),
    ("signal1m", "Signal-1M (RT)", False), ("trec-news", "TREC-NEWS", False),
    ("robust04", "Robust04", False), ("arguana", "ArguAna", True),
    ("webis-touche2020", "Touche-2020", True), ("cqadupstack", "CQADupStack", True),
    ("quora", "Quora", True), ("dbpedia-entity", "DBPedia", True), ("scidocs", "SCIDOCS", True),
    ("fever", "FEVER", True), ("climate-fever", "Climate-FEVER", True), ("scifact", "SciFact", True),
]
BEIR_UNITS = tuple(key for key, _, _ in _BEIR)
"""The 18 BEIR datasets of the DupMAE paper's Table 3, in its order (CQADupStack is one unit)."""
BEIR_PUBLIC_UNITS = tuple(key for key, _, public in _BEIR if public)
"""The 14 of them that can be downloaded."""


def _beir_entry(key: str, title: str, public: bool, archive: Optional[str] = None,
                member: Optional[str] = None, unit: Optional[str] = None) -> DatasetInfo:
    return DatasetInfo(
        name=key, title=title, layout="beir", public=public, default_split="test",
        measures={"test": BEIR_MEASURES},
        shipped={"test": (f"qrels.beir-v1.0.0-{key}.test.txt.gz", f"topics.beir-v1.0.0-{key}.test.tsv.gz")},
        url=BEIR_URL.format(name=archive or key) if public else None, archive_member=member, unit=unit,
        archive_md5=BEIR_ARCHIVE_MD5.get(archive or key), passages=CORPUS_PASSAGES.get(key),
    )


def _build_registry() -> Dict[str, DatasetInfo]:
    registry: Dict[str, DatasetInfo] = {}
    for key, title, public in _BEIR:
        if key == "cqadupstack":
            for forum in CQADUPSTACK_FORUMS:
                name = f"cqadupstack-{forum}"
                registry[name] = _beir_entry(name, f"CQADupStack ({forum})", True, archive="cqadupstack",
                                             member=f"cqadupstack/{forum}", unit="cqadupstack")
        else:
            registry[key] = _beir_entry(key, title, public)
    registry["msmarco-passage"] = DatasetInfo(
        name="msmarco-passage", title="MS MARCO passage", layout="msmarco", public=True,
        default_split="dev-subset",
        measures={"dev-subset": MSMARCO_DEV_MEASURES, "dl19": TREC_DL_MEASURES, "dl20": TREC_DL_MEASURES},
        shipped={"dev-subset": ("qrels.msmarco-passage.dev-subset.txt.gz", "topics.msmarco-passage.dev-subset.txt.gz"),
                 "dl19": ("qrels.dl19-passage.txt.gz", "topics.dl19-passage.txt.gz"),
                 "dl20": ("qrels.dl20-passage.txt.gz", "topics.dl20.txt.gz")},
        url=MSMARCO_URL, archive_md5=MSMARCO_ARCHIVE_MD5, passages=CORPUS_PASSAGES["msmarco-passage"],
    )
    return registry


REGISTRY: Dict[str, DatasetInfo] = _build_registry()


def unit_order(row: str) -> Tuple[int, str]:
    """Sort key for table rows ("unit" or "unit/split"): the paper's Table 3 order, then the rest by name."""
    unit = row.split("/")[0]
    return (BEIR_UNITS.index(unit) if unit in BEIR_UNITS else len(BEIR_UNITS), row)


def coverage_label(rows: Sequence[str], covered: Sequence[str]) -> str:
    """What an average over `covered` (of a table's `rows`) stands for: '18' (all of BEIR), '14 public'
    (the downloadable ones), 'n of 18', or 'n of N' for other tables."""
    beir = set(rows) <= set(BEIR_UNITS)
    total = len(BEIR_UNITS) if beir else len(rows)
    if len(covered) == total:
        return str(total)
    if beir and sorted(covered) == sorted(BEIR_PUBLIC_UNITS):
        return f"{len(BEIR_PUBLIC_UNITS)} public"
    return f"{len(covered)} of {total}"


def hub_dataset_id(name: str) -> Optional[str]:
    """The Hugging Face hub's name of a registry dataset (BEIR's copies under BeIR/, MS MARCO under
    microsoft/ms_marco), also for an `irds:` name of one; None for a folder, a mapped local name, a
    CQADupStack forum or a restricted dataset (a model card's `datasets` lists only names the hub has)."""
    if name.startswith("irds:"):
        parts = name[len("irds:"):].split("/")
        name = parts[1] if parts[0] == "beir" and len(parts) > 1 else parts[0]
    if Path(name).expanduser().exists() or name in dataset_roots_from_env():
        return None
    info = REGISTRY.get(name)
    if info is None or not info.public or info.unit:
        return None
    return "microsoft/ms_marco" if info.layout == "msmarco" else f"BeIR/{info.name}"


def units_of(unit: str) -> Tuple[str, ...]:
    """Registry names that make up a BEIR unit: CQADupStack's 12 forums, or the dataset itself."""
    members = tuple(name for name, info in REGISTRY.items() if info.unit == unit)
    return members or (unit,)


# --------------------------------------------------------------------------- a resolved dataset


@dataclass
class Dataset:
    """A dataset on disk, ready to stream: its corpus, queries and judgments per split."""

    name: str
    root: Path
    layout: str
    info: Optional[DatasetInfo] = None
    _corpus: Path = field(init=False)

    def __post_init__(self) -> None:
        corpus = self.spec.corpus_file(self.root)
        if corpus is None:
            stem = self.spec.corpus_stem
            raise DupMAEEvalError(f"{self.root}: no {stem} (or {stem}.gz) in this folder")
        self._corpus = corpus

    @property
    def spec(self) -> Layout:
        return layout_of(self.layout)

    @property
    def corpus_path(self) -> Path:
        return self._corpus

    @property
    def cache_name(self) -> str:
        """What the corpus's indexes and encodings are named after in the cache (with a key of its content)."""
        return self.name

    @property
    def default_split(self) -> str:
        return self.info.default_split if self.info else self.spec.default_split

    def corpus_fingerprint(self) -> str:
        """SHA-256 of the corpus file: part of every index and encoding cache key."""
        return cache.file_digest(self._corpus)

    def source(self) -> Optional[dict]:
        """Where a downloaded dataset came from: its archive's URL and MD5, and whether that MD5 was
        checked against the publisher's (`SOURCE_FILE`, written by the download); None otherwise."""
        import json

        path = self.root / SOURCE_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def passages(self) -> Iterator[Passage]:
        """Stream the corpus, validating each record (errors name the file and line)."""
        return self.spec.read_corpus(self._corpus)

    def measures(self, split: str) -> Tuple[str, ...]:
        """The measures the literature reports for this dataset and split."""
        if self.info and split in self.info.measures:
            return self.info.measures[split]
        return self.spec.measures(split)

    # -- judgments and queries ------------------------------------------------------------

    def qrels_path(self, split: str) -> Path:
        """The judgments file for `split`: the folder's own, else the shipped copy."""
        local = self.spec.qrels_candidates(self.root, split)
        for path in local:
            if path.is_file():
                return path
        shipped = self._shipped(split, 0)
        if shipped is not None:
            return shipped
        raise DupMAEEvalError(f"{self.root}: no judgments for split {split!r} "
                              f"(looked for {', '.join(p.name for p in local)})")

    def qrels(self, split: str) -> Qrels:
        return read_qrels(self.qrels_path(split))

    def queries(self, split: str) -> Dict[str, str]:
        """The split's queries, {id: text} in file order: the folder's own file, else the shipped topics.
        Where the layout keeps every split's queries in one file (BEIR), the split's are those judged."""
        for path in self.spec.queries_candidates(self.root, split):
            if not path.is_file():
                continue
            queries = self.spec.read_queries(path)
            if not self.spec.queries_are_judged_subset:
                return queries
            judged = self.qrels(split)
            chosen = {qid: text for qid, text in queries.items() if qid in judged}
            missing = sorted(set(judged) - set(chosen))
            if missing:
                raise DupMAEEvalError(f"{path}: {len(missing)} judged queries of split {split!r} are "
                                      f"missing (e.g. {missing[0]!r})")
            return chosen
        shipped = self._shipped(split, 1)
        if shipped is not None:
            return read_tsv_queries(shipped)
        raise DupMAEEvalError(f"{self.root}: no queries for split {split!r}")

    def _shipped(self, split: str, which: int) -> Optional[Path]:
        if self.info and split in self.info.shipped:
            path = SHIPPED_QRELS / self.info.shipped[split][which]
            if path.is_file():
                return path
        return None


LOCAL_FOLDERS: Dict[str, Path] = {}
"""Local folders standing in for dataset names in this process (`reproduce --data NAME=FOLDER`)."""


def map_local_folder(name: str, folder: str | Path) -> None:
    """Let `name` (a registry name or a new one) stand for a local dataset folder from now on."""
    folder = Path(folder).expanduser()
    if not name or not folder.is_dir():
        raise DupMAEEvalError(f"--data {name}={folder}: expected NAME=FOLDER with an existing folder")
    LOCAL_FOLDERS[name] = folder.resolve()


def dataset_roots_from_env() -> Dict[str, Path]:
    """Local folders standing in for names: DUPMAE_EVAL_DATA='scifact=/data/scifact:...', then those
    mapped in this process (which win)."""
    mapping: Dict[str, Path] = {}
    for item in filter(None, os.environ.get("DUPMAE_EVAL_DATA", "").split(os.pathsep)):
        name, sep, folder = item.partition("=")
        if not sep:
            raise DupMAEEvalError(f"DUPMAE_EVAL_DATA: {item!r} is not NAME=FOLDER")
        mapping[name.strip()] = Path(folder).expanduser()
    return {**mapping, **LOCAL_FOLDERS}


def shipped_judgments(name: str, split: Optional[str] = None) -> Tuple[Qrels, Tuple[str, ...]]:
    """A registry dataset's shipped judgments for `split` (default: its default split), with the measures
    the literature reports for them: what `eval` needs when given a name instead of a qrels file.
    An `irds:<id>` name reads its judgments through ir_datasets; a dataset folder (BEIR or MS MARCO layout),
    or a name DUPMAE_EVAL_DATA maps to one, its own split's judgments, as `bm25 --eval` scores them."""
    if name.startswith("irds:"):
        from dupmae_eval.data.irds import resolve_irds

        data = resolve_irds(name)
        split = split or data.default_split
        return data.qrels(split), data.measures(split)
    info = REGISTRY.get(name)
    if info is None and (Path(name).expanduser().is_dir() or name in dataset_roots_from_env()):
        data = resolve(name, download=False)
        split = split or data.default_split
        return data.qrels(split), data.measures(split)
    if info is None:
        raise DupMAEEvalError(f"{name}: neither a qrels file, a dataset folder nor a registry dataset name")
    split = split or info.default_split
    if split not in info.shipped:
        raise DupMAEEvalError(f"dataset {info.name!r} has no shipped judgments for split {split!r} "
                              f"(has: {', '.join(info.shipped)})")
    return read_qrels(SHIPPED_QRELS / info.shipped[split][0]), info.measures[split]


def lookup(name: str) -> DatasetInfo:
    """The registry entry of `name`, or one made from the folder mapped to it in DUPMAE_EVAL_DATA
    (a local collection such as Vaswani, with the measures its layout implies), or an `irds:<id>` name's."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("irds:"):
        from dupmae_eval.data.irds import info_for

        return info_for(name)
    folder = dataset_roots_from_env().get(name)
    if folder is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DupMAEEvalError(f"unknown dataset {name!r}: not a folder and not a registry name{hint}; "
                              f"`dupmae-eval datasets` lists the registry, DUPMAE_EVAL_DATA maps local folders")
    layout = detect_layout(folder)
    return DatasetInfo(name=name, title=name, layout=layout, public=True,
                       default_split=layout_of(layout).default_split, measures={}, shipped={})


def local_copy(name: str) -> Optional[Tuple[str, Path]]:
    """Where a registry name's data is on this machine, in the order `resolve` looks: ("mapped", folder) for
    a folder mapped to it (DUPMAE_EVAL_DATA, `reproduce --data`), ("bundled", folder) inside the package,
    ("cached", folder) downloaded before; None when it is nowhere here."""
    for where, candidate in (("mapped", dataset_roots_from_env().get(name)), ("bundled", BUNDLED_DATA / name),
                             ("cached", cache.home() / "datasets" / name)):
        if candidate is not None and candidate.is_dir():
            return where, candidate
    return None


def resolve(name_or_dir: str, download: bool = True) -> Dataset:
    """Turn a registry name or a folder into a `Dataset` (downloading a public dataset if needed); an
    `irds:<id>` name into one that ir_datasets serves (`irds.py`; ir_datasets downloads what it lacks)."""
    if name_or_dir.startswith("irds:") and name_or_dir not in dataset_roots_from_env():
        from dupmae_eval.data.irds import resolve_irds

        return resolve_irds(name_or_dir)
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        info = REGISTRY.get(folder.name)
        return Dataset(folder.name, folder, detect_layout(folder), info if info and
                       info.layout == detect_layout(folder) else None)
    mapped = dataset_roots_from_env().get(name_or_dir)
    if mapped is not None and name_or_dir not in REGISTRY:
        return Dataset(name_or_dir, mapped, detect_layout(mapped), None)
    info = REGISTRY.get(name_or_dir)
    if info is None:
        close = difflib.get_close_matches(name_or_dir, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DupMAEEvalError(f"unknown dataset {name_or_dir!r}: not a folder and not a registry name"
                              f"{hint}; `dupmae-eval datasets` lists the registry")
    local = local_copy(info.name)
    if local is not None:
        return Dataset(info.name, local[1], info.layout, info)
    if not download:
        raise DupMAEEvalError(f"dataset {info.name!r} is not downloaded yet")
    return Dataset(info.name, _download(info), info.layout, info)


# --------------------------------------------------------------------------- the catalogue


AVAILABILITY = {
    "bundled": "ships inside the package: runs offline",
    "cached": "downloaded before, into the cache",
    "mapped": "a local folder stands for the name (DUPMAE_EVAL_DATA=NAME=FOLDER, or reproduce --data)",
    "downloadable": "public: downloaded into the cache on first use (and its MD5 checked)",
    "restricted": "not publicly downloadable (a licence or a manual step): build the folder yourself, then "
                  "pass it or map the name to it",
}
"""Where a dataset's data comes from, as `datasets` says it: each word and what it means."""


def availability(info: DatasetInfo) -> Tuple[str, Optional[Path]]:
    """One `AVAILABILITY` word for a registry entry, with the local folder where there is one."""
    local = local_copy(info.name)
    if local is not None:
        return local
    return ("downloadable" if info.public and info.url else "restricted"), None


def _judged_queries(path: Path) -> int:
    return len(read_qrels(path))


def catalogue() -> list:
    """One row per dataset and split: every registry entry, then the folders mapped to names the registry
    does not know. Sizes come from the registry (passages) and the shipped judgments (queries); nothing is
    downloaded or read from a corpus."""
    rows = []
    for info in REGISTRY.values():
        data, folder = availability(info)
        for split, measures in info.measures.items():
            files = info.shipped.get(split)
            qrels = SHIPPED_QRELS / files[0] if files else None
            topics = SHIPPED_QRELS / files[1] if files else None
            if qrels is not None and qrels.is_file():
                queries, judged = _judged_queries(qrels), True
            elif topics is not None and topics.is_file():
                queries, judged = len(read_tsv_queries(topics)), False
            else:
                queries, judged = None, False
            rows.append({"dataset": info.name, "title": info.title, "layout": info.layout, "split": split,
                         "default": split == info.default_split, "measures": list(measures),
                         "passages": info.passages, "queries": queries, "judged": judged, "data": data,
                         "folder": str(folder) if folder else None, "url": info.url})
    for name, folder in sorted(dataset_roots_from_env().items()):
        if name in REGISTRY:
            continue
        try:
            layout = detect_layout(folder) if folder.is_dir() else None
        except DupMAEEvalError:
            layout = None
        spec = layout_of(layout) if layout else None
        split = spec.default_split if spec else None
        rows.append({"dataset": name, "title": name, "layout": layout, "split": split, "default": True,
                     "measures": list(spec.measures(split)) if spec else [], "passages": None, "queries": None,
                     "judged": False, "data": "mapped", "folder": str(folder), "url": None})
    return rows


# --------------------------------------------------------------------------- downloads


SOURCE_FILE = "dupmae-eval-source.json"


def _download(info: DatasetInfo) -> Path:
    """Fetch and unpack a public dataset into the cache; atomically, so a broken download is never used.

    The archive's MD5 is checked against the publisher's where it is known (BEIR lists one per
    archive); a mismatch deletes the archive and stops, naming both digests."""
    if not info.public or not info.url:
        raise DupMAEEvalError(f"dataset {info.name!r} is not publicly downloadable (BEIR marks it "
                              f"restricted); build it yourself and pass its folder")
    final = cache.home() / "datasets" / info.name
    archive = cache.home() / "downloads" / info.url.rsplit("/", 1)[-1]
    if not archive.is_file():
        _fetch(info.url, archive)
    md5 = archive_md5(archive)
    if info.archive_md5 and md5 != info.archive_md5:
        archive.unlink()
        raise DupMAEEvalError(f"{archive}: MD5 {md5} differs from the published {info.archive_md5} "
                              f"(a broken or changed download); deleted it, run again to download it anew")
    with cache.building(final) as scratch:
        unpacked = scratch / ".unpacked"
        _unpack(archive, unpacked)
        for item in _locate_member(unpacked, info).iterdir():
            shutil.move(str(item), scratch / item.name)
        shutil.rmtree(unpacked)
        cache.write_json(scratch / SOURCE_FILE, {"url": info.url, "archive": archive.name, "archive_md5": md5,
                                                 "published_md5": info.archive_md5,
                                                 "md5_checked": info.archive_md5 is not None})
    return final


def archive_md5(path: Path) -> str:
    """MD5 of a downloaded archive (publishers list MD5, not SHA-256), read in 1 MB blocks."""
    import hashlib

    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path) -> None:
    from tqdm import tqdm

    from dupmae_eval.files import atomic_output

    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_output(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        raise DupMAEEvalError(f"could not download {url} ({exc.__class__.__name__}: {exc}); "
                              f"offline? pass a local folder instead") from None


def _unpack(archive: Path, into: Path) -> None:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(into)
    else:
        with tarfile.open(archive) as tarred:
            tarred.extractall(into, filter="data")


def _locate_member(unpacked: Path, info: DatasetInfo) -> Path:
    """The folder inside an unpacked archive that holds this dataset's files."""
    member = info.archive_member or info.name
    for candidate in (unpacked / member, unpacked / info.name, unpacked):
        try:
            detect_layout(candidate)
            return candidate
        except DupMAEEvalError:
            continue
    raise DupMAEEvalError(f"downloaded archive for {info.name!r} has no corpus in the expected place")
