"""Datasets named by ir_datasets: `irds:<id>` (e.g. `irds:beir/scifact/test`,
`irds:msmarco-passage/trec-dl-2019/judged`), PyTerrier's and many papers' convention.

The corpus, queries and judgments are read through `ir_datasets` (imported only when such a name is
used): its downloads, checksums and cache (`IR_DATASETS_HOME`, default ~/.ir_datasets) are its own, and
nothing is copied: passages are streamed from it into the index or the encoder, as a folder's are.

An id names one query set with its judgments, so it is its own split: the split is called as the
matching registry dataset calls it (`beir/scifact/test` -> test, `msmarco-passage/trec-dl-2019/judged`
-> dl19), else after the id's last part. The measures are the matching registry dataset's (SciFact:
nDCG@10, R@100, R@1000; TREC DL: nDCG@10, AP(rel=2), R(rel=2)@1000), else `DEFAULT_MEASURES`. BEIR
datasets drop the hit whose id is the query's, as their folders do; other ids keep it.

The corpus fingerprint (part of every index and encoding cache key) is the SHA-256 of the passages as
ir_datasets serves them; it is computed once and kept in the cache beside the sizes and times of the
files ir_datasets holds for that corpus, so it is read again only when those change. Indexes and
encodings are named after the corpus (`irds-beir-scifact`), so every split of one corpus shares them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from dupmae_eval import cache
from dupmae_eval.data.datasets import REGISTRY, Dataset, DatasetInfo
from dupmae_eval.data.formats import Passage, Qrels, check_id
from dupmae_eval.data.layouts import BEIR_MEASURES, Layout, layout_of
from dupmae_eval.errors import DupMAEEvalError

PREFIX = "irds:"
DEFAULT_MEASURES = BEIR_MEASURES
"""The measures of an id that matches no registry dataset: nDCG@10, R@100, R@1000 (BEIR's)."""

# ir_datasets ids -> (registry name, split), for the measures and the split's name
_MSMARCO = {"msmarco-passage/trec-dl-2019": "dl19", "msmarco-passage/trec-dl-2019/judged": "dl19",
            "msmarco-passage/trec-dl-2020": "dl20", "msmarco-passage/trec-dl-2020/judged": "dl20",
            "msmarco-passage/dev/small": "dev-subset"}
_BEIR_RENAMED = {"webis-touche2020/v2": "webis-touche2020", "cqadupstack/{}": "cqadupstack-{}"}


def is_irds(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def registry_match(irds_id: str) -> Optional[Tuple[str, str]]:
    """The registry dataset and split an ir_datasets id stands for, or None:
    beir/scifact/test -> (scifact, test); beir/arguana -> (arguana, test);
    beir/cqadupstack/android -> (cqadupstack-android, test); msmarco-passage/trec-dl-2019/judged -> (msmarco-passage, dl19)."""
    if irds_id in _MSMARCO:
        return "msmarco-passage", _MSMARCO[irds_id]
    if not irds_id.startswith("beir/"):
        return None
    rest = irds_id[len("beir/"):]
    if rest == "webis-touche2020/v2":
        return "webis-touche2020", "test"
    if rest.startswith("cqadupstack/") and rest.count("/") == 1:
        name = "cqadupstack-" + rest.split("/")[1]
        return (name, "test") if name in REGISTRY else None
    name, _, split = rest.partition("/")
    info = REGISTRY.get(name)
    if info is None or info.layout != "beir":
        return None
    split = split or info.default_split
    return (name, split) if split in info.measures else None


def info_for(name: str) -> DatasetInfo:
    """The registry-shaped entry of `irds:<id>`: its split and measures (no import of ir_datasets)."""
    irds_id = name[len(PREFIX):]
    if not irds_id or irds_id != irds_id.strip("/ "):
        raise DupMAEEvalError(f"{name!r}: expected irds:<ir_datasets id>, e.g. irds:beir/scifact/test")
    match = registry_match(irds_id)
    if match:
        registry, split = REGISTRY[match[0]], match[1]
        measures, title = registry.measures[split], registry.title
    else:
        split, measures, title = irds_id.rsplit("/", 1)[-1], DEFAULT_MEASURES, f"ir_datasets {irds_id}"
    return DatasetInfo(name=name, title=title, layout="irds", public=True, default_split=split,
                       measures={split: measures}, shipped={})


def _ir_datasets():
    try:
        import ir_datasets
    except ImportError:
        raise DupMAEEvalError("irds: dataset names need the ir_datasets package: "
                              "pip install 'dupmae-eval[irds]' (or pip install ir-datasets)") from None
    return ir_datasets


def _load(name: str):
    """ir_datasets' dataset for `irds:<id>`; an unknown id is one line with the nearest known ids."""
    ir_datasets = _ir_datasets()
    irds_id = name[len(PREFIX):]
    try:
        return ir_datasets.load(irds_id)
    except KeyError:
        close = difflib.get_close_matches(irds_id, list(ir_datasets.registry), n=3)
        hint = f" (did you mean {', '.join(repr(PREFIX + c) for c in close)}?)" if close else ""
        raise DupMAEEvalError(f"unknown ir_datasets id {irds_id!r} in dataset name {name!r}{hint}; "
                              f"ir_datasets' catalogue lists them: https://ir-datasets.com") from None


def _fail(name: str, what: str, exc: BaseException) -> DupMAEEvalError:
    """ir_datasets could not produce a file (offline, a checksum mismatch, a licence-gated download)."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DupMAEEvalError(f"{name}: ir_datasets could not read its {what} ({type(exc).__name__}: {detail}); "
                           f"its cache is IR_DATASETS_HOME (default ~/.ir_datasets)")


class IrdsDataset(Dataset):
    """A `Dataset` whose corpus, queries and judgments ir_datasets serves (see the module's notes)."""

    def __init__(self, name: str, info: DatasetInfo, handle):
        self.name, self.info, self.layout, self._handle = name, info, "irds", handle
        self.root = Path(name)            # not a folder: sidecars name it, and `resolve` reads it back as the name
        self._corpus = None
        self.irds_id = name[len(PREFIX):]
        for has, what in ((handle.has_docs, "documents"), (handle.has_queries, "queries")):
            if not has():
                raise DupMAEEvalError(f"{name}: ir_datasets has no {what} for this id; name one that has a "
                                      f"corpus, queries and judgments, e.g. irds:beir/scifact/test")
        self.docs_id = _ir_datasets().docs_parent_id(self.irds_id)
        self._home = _ir_datasets().util.home_path() / self.docs_id     # ir_datasets' files of this corpus

    # -- what the rest of the toolkit asks a dataset ----------------------------------------

    @property
    def spec(self) -> Layout:
        beir = self.irds_id.startswith("beir/")
        return dataclasses.replace(layout_of("beir" if beir else "msmarco"), name="irds", default_split=self.split)

    @property
    def split(self) -> str:
        return self.info.default_split

    @property
    def corpus_path(self) -> Path:
        """Not a file: the name, for messages and sidecars (`corpus` fields say where passages came from)."""
        return Path(f"{PREFIX}{self.docs_id}")

    @property
    def cache_name(self) -> str:
        return "irds-" + self.docs_id.replace("/", "-")

    def source(self) -> Optional[dict]:
        return {"ir_datasets": self.irds_id, "ir_datasets_version": _ir_datasets().__version__,
                "ir_datasets_home": str(_ir_datasets().util.home_path())}

    def passages(self) -> Iterator[Passage]:
        """The corpus as ir_datasets streams it: `title` where the document has one, `text` (or the
        document's default text where it has no text field); `line` is the document's position. An id
        that is empty or holds whitespace is refused as the file readers refuse it, before any work."""
        try:
            for number, doc in enumerate(self._handle.docs_iter(), 1):
                fields = doc._fields
                text = doc.text if "text" in fields else doc.default_text()
                title = doc.title if "title" in fields else ""
                yield Passage(self._checked(doc.doc_id, "document id"), title or "", text or "", number)
        except DupMAEEvalError:
            raise
        except Exception as exc:
            raise _fail(self.name, "documents", exc) from None

    def corpus_fingerprint(self) -> str:
        memo = cache.home() / "irds" / f"{self.cache_name}.json"
        signature = self._files_signature()
        if signature is not None and memo.is_file():
            try:
                recorded = json.loads(memo.read_text())
                if recorded.get("signature") == signature:
                    return recorded["sha256"]
            except (ValueError, KeyError, TypeError):
                pass
        digest = _stream_digest(self.passages)
        signature = self._files_signature()          # after reading: ir_datasets may have built its docstore
        if signature is not None:
            cache.write_json(memo, {"ir_datasets": self.docs_id, "signature": signature, "sha256": digest})
        return digest

    def _files_signature(self) -> Optional[list]:
        """Sizes and times of the files ir_datasets keeps for this corpus (None where it keeps none under
        the corpus's own folder: then the digest is not remembered across processes)."""
        if not self._home.is_dir():
            return None
        files = [[str(path.relative_to(self._home)), path.stat().st_size, path.stat().st_mtime_ns]
                 for path in sorted(self._home.rglob("*")) if path.is_file()]
        return files or None

    def measures(self, split: str) -> Tuple[str, ...]:
        return self.info.measures[self._check_split(split)]

    def qrels_path(self, split: str) -> Path:
        raise DupMAEEvalError(f"{self.name}: ir_datasets keeps its judgments; they are read with the dataset, "
                              f"not from a file")

    def qrels(self, split: str) -> Qrels:
        self._check_split(split)
        if not self._handle.has_qrels():
            raise DupMAEEvalError(f"{self.name}: ir_datasets has no judgments for this id, so it cannot be "
                                  f"evaluated")
        qrels: Qrels = {}
        try:
            for qrel in self._handle.qrels_iter():
                qid, docid = self._checked(qrel.query_id, "query id"), self._checked(qrel.doc_id, "document id")
                grade = int(qrel.relevance)
                earlier = qrels.setdefault(qid, {}).setdefault(docid, grade)
                if earlier != grade:        # as the file readers refuse it (see formats._judge)
                    raise DupMAEEvalError(f"{self.name}: ir_datasets judges document {docid!r} twice for query "
                                          f"{qid!r} with different grades: {earlier}, then {grade}")
        except DupMAEEvalError:
            raise
        except Exception as exc:
            raise _fail(self.name, "judgments", exc) from None
        return qrels

    def queries(self, split: str) -> Dict[str, str]:
        """{query id: text} in ir_datasets' order; ids unique and without whitespace, as the file readers
        refuse them, so a bad id stops the work before it starts instead of when the run is written."""
        self._check_split(split)
        queries: Dict[str, str] = {}
        positions: Dict[str, int] = {}
        try:
            for number, query in enumerate(self._handle.queries_iter(), 1):
                qid = self._checked(query.query_id, "query id")
                first = positions.setdefault(qid, number)
                if first != number:
                    raise DupMAEEvalError(f"{self.name}: duplicate query id {qid!r} (ir_datasets lists it as "
                                          f"query {first} and again as query {number})")
                text = query.text if "text" in query._fields else query.default_text()
                queries[qid] = str(text)
        except DupMAEEvalError:
            raise
        except Exception as exc:
            raise _fail(self.name, "queries", exc) from None
        return queries

    def _checked(self, value, what: str) -> str:
        """`value` as an id string; empty or holding whitespace, it is refused naming the dataset and the id."""
        return check_id(self.name, None, str(value), what)

    def _check_split(self, split: str) -> str:
        if split not in (self.split, None):
            raise DupMAEEvalError(f"--split {split}: {self.name} is one query set (split {self.split!r}); "
                                  f"another split is another ir_datasets id (e.g. irds:beir/scifact/train)")
        return self.split


def _stream_digest(read) -> str:
    """SHA-256 over the passages (id, title, text as JSON, one a line), in corpus order."""
    digest = hashlib.sha256()
    for passage in read():
        digest.update(json.dumps([passage.docid, passage.title, passage.text], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def resolve_irds(name: str) -> IrdsDataset:
    """`irds:<id>` as a `Dataset`: the id is checked against ir_datasets' catalogue (one line naming
    the nearest ids when unknown); nothing is downloaded until the corpus, queries or judgments are read."""
    info = info_for(name)
    return IrdsDataset(name, info, _load(name))
