"""Training data: queries with judged positives and candidate negatives, passages by id, batches.

Three sources, one shape (`TrainingQuery`):
- a BEIR-layout dataset's split (qrels/SPLIT.tsv, queries.jsonl, corpus.jsonl);
- MS MARCO's own layout (qrels.train.tsv, queries.train.tsv, collection.tsv);
- tevatron's JSONL (`query_id`, `query`, `positive_passages`, `negative_passages`, each passage
  `docid`, `title`, `text`): texts come with the file, negatives too.

Passages are read by id from the corpus file without loading it (`PassageStore`): one pass
records each passage's byte offset (8 bytes a passage: 70 MB for MS MARCO's 8.8M; ids that are all
decimal numbers written as `str(int(id))` writes them, as MS MARCO's, index an array directly, other ids
go through a dictionary, so "7" and "007" stay two passages). A gzipped corpus cannot be read at an
offset: its texts are held in memory instead.

Every example is drawn from (seed, epoch, query): the positive among the judged ones and the
negatives among the candidates, so an epoch is the same whether or not the run was interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from dupmae_eval.data.formats import Passage, numbered_lines
from dupmae_eval.errors import DupMAEEvalError, InputFormatError


@dataclass
class TrainingQuery:
    qid: str
    text: str
    positives: Tuple[str, ...]                        # judged relevant (grade > 0)
    negatives: Tuple[str, ...] = ()                   # candidates, best first, positives removed
    teacher: Dict[str, float] = field(default_factory=dict)   # distillation: docid -> teacher score


class PassageStore:
    """Passage text by id from a corpus file (BEIR JSONL or MS MARCO TSV), by byte offset."""

    def __init__(self, path: Path, layout: str):
        from tqdm import tqdm

        self.path, self.layout = Path(path), layout
        self._texts: Optional[Dict[str, str]] = None
        self._numeric: Optional[np.ndarray] = None
        self._offsets: Dict[str, int] = {}
        self._order: List[str] = []
        if self.path.suffix == ".gz":
            from dupmae_eval.data.layouts import layout_of

            self._texts = {p.docid: p.flat_text() for p in layout_of(layout).read_corpus(self.path)}
            self._order = list(self._texts)
            return
        offsets: List[int] = []
        ids: List[str] = []
        with open(self.path, "rb") as handle, tqdm(desc=f"index {self.path.name}", unit="B", unit_scale=True,
                                                     total=self.path.stat().st_size, leave=False) as bar:
            position = 0
            for number, raw in enumerate(handle, 1):
                if raw.strip():
                    ids.append(self._id_of(raw, number))
                    offsets.append(position)
                position += len(raw)
                bar.update(len(raw))
        self._order = ids
        numbers = None
        if ids and all(_canonical_number(i) and len(i) < 18 for i in ids):
            numbers = np.fromiter((int(i) for i in ids), dtype=np.int64, count=len(ids))
        # a table of max id + 1 entries when that is at most 8 per passage or 2^24 (MS MARCO, or a sample of
        # it); sparse or huge numbers (tweet ids) would make it too large
        if numbers is not None and int(numbers.max()) < max(8 * len(ids), 1 << 24):
            table = np.full(int(numbers.max()) + 1, -1, dtype=np.int64)
            table[numbers] = np.asarray(offsets, dtype=np.int64)
            self._numeric = table
        else:
            self._offsets = dict(zip(ids, offsets))
        self._handle = None

    def _id_of(self, raw: bytes, number: int) -> str:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8", errors="replace")
        if self.layout == "msmarco":
            return line.split("\t", 1)[0].strip()
        try:
            return str(json.loads(line)["_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFormatError(self.path, number, f"not a corpus record with an _id ({exc})") from None

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, docid: str) -> bool:
        if self._texts is not None:
            return docid in self._texts
        if self._numeric is not None:     # "007" is not passage 7: only the id as written in the corpus
            return (_canonical_number(docid) and int(docid) < len(self._numeric)
                    and bool(self._numeric[int(docid)] >= 0))
        return docid in self._offsets

    def docid_at(self, index: int) -> str:
        return self._order[index]

    def text(self, docid: str) -> str:
        """Title and text, as the encoder sees them at inference (`Passage.flat_text`)."""
        if self._texts is not None:
            return self._texts[docid]
        if self._numeric is None:
            offset = self._offsets[docid]
        elif docid in self:
            offset = int(self._numeric[int(docid)])
        else:
            raise KeyError(docid)
        if self._handle is None:
            self._handle = open(self.path, "rb")
        self._handle.seek(offset)
        line = self._handle.readline().decode("utf-8-sig" if offset == 0 else "utf-8")
        if self.layout == "msmarco":
            _, _, text = line.rstrip("\n").rstrip("\r").partition("\t")
            return text
        record = json.loads(line)
        return Passage(str(record["_id"]), record.get("title") or "", record.get("text") or "").flat_text()

    def __getstate__(self):   # dataloader workers reopen the file
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


def _canonical_number(docid: str) -> bool:
    """An id that is a decimal number as `str(int(id))` writes it ("7"; not "007", "+7" or "٧"), so that the
    number stands for that one id."""
    return docid.isascii() and docid.isdigit() and (docid[0] != "0" or docid == "0")


class EmbeddedStore(PassageStore):
    """Texts carried by the training file itself (tevatron JSONL)."""

    def __init__(self, texts: Dict[str, str]):
        self._texts, self._numeric, self._offsets, self._order = texts, None, {}, list(texts)
        self._handle = None


# --------------------------------------------------------------------------- sources


def from_dataset(dataset, split: str) -> Tuple[List[TrainingQuery], PassageStore]:
    """A registered or local dataset's split: judged positives, refusing qrels that name no positive or a
    passage the corpus lacks (with the judgment file's line). The corpus census runs first, as before
    retrieval, so a repeated passage id is refused naming both lines instead of one copy's text being
    trained on; it is cached by the corpus's SHA-256, and mining BM25 negatives takes it anyway."""
    from dupmae_eval.data.census import take_census

    take_census(dataset)
    if dataset.layout == "irds":        # ir_datasets keeps no corpus file to read at an offset: texts in memory
        qrels_path, qrels, queries = Path(dataset.name), dataset.qrels(split), dataset.queries(split)
        store = EmbeddedStore({passage.docid: passage.flat_text() for passage in dataset.passages()})
        store.path = qrels_path
        missing = next((d for q in qrels for d in qrels[q] if d not in store), None)
        if missing is not None:
            raise DupMAEEvalError(f"{dataset.name}: judged passage {missing!r} is not in the corpus")
    else:
        qrels_path = dataset.qrels_path(split)
        qrels = dataset.qrels(split)
        queries = dataset.queries(split)
        store = PassageStore(dataset.corpus_path, dataset.layout)
        _check_judged_passages(qrels_path, store)
    chosen = []
    for qid in sorted(qrels, key=_natural):
        positives = tuple(sorted(d for d, grade in qrels[qid].items() if grade > 0))
        if positives and qid in queries:
            chosen.append(TrainingQuery(qid, queries[qid], positives))
    if not chosen:
        raise DupMAEEvalError(f"{qrels_path}: no query of split {split!r} has a judged positive (grade > 0) "
                              f"and a query text; nothing to train on")
    return chosen, store


def _check_judged_passages(qrels_path: Path, store: PassageStore) -> None:
    """Every judged passage must be in the corpus: one line naming the first that is not."""
    for number, line in numbered_lines(qrels_path):
        parts = line.split()
        if len(parts) < 3 or (number == 1 and not parts[-1].lstrip("-").isdigit()):
            continue   # the BEIR header, or a malformed line the qrels reader has already refused
        docid = parts[2] if len(parts) >= 4 else parts[1]
        if docid not in store:
            raise InputFormatError(qrels_path, number, f"judged passage {docid!r} is not in the corpus "
                                                       f"{store.path}")


def from_tevatron(path: Path) -> Tuple[List[TrainingQuery], PassageStore]:
    """tevatron's training JSONL: one query per line with its positive and negative passages."""
    texts: Dict[str, str] = {}
    chosen = []
    for number, line in numbered_lines(path):     # a corrupt file or bad UTF-8 is refused at its line
        try:
            record = json.loads(line)
            query = str(record["query"])
            qid = str(record.get("query_id", number))
            groups = []
            for key in ("positive_passages", "negative_passages"):
                ids = []
                for passage in record.get(key) or []:
                    docid = str(passage["docid"])
                    texts.setdefault(docid, Passage(docid, passage.get("title") or "",
                                                    passage.get("text") or "").flat_text())
                    ids.append(docid)
                groups.append(tuple(ids))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFormatError(path, number, f"not a tevatron training record "
                                                 f"({exc.__class__.__name__}: {exc})") from None
        if not groups[0]:
            raise InputFormatError(path, number, f"query {qid!r} has no positive_passages")
        chosen.append(TrainingQuery(qid, query, groups[0], tuple(d for d in groups[1] if d not in groups[0])))
    if not chosen:
        raise DupMAEEvalError(f"{path}: no training queries")
    return chosen, EmbeddedStore(texts)


def attach_candidates(queries: List[TrainingQuery], run: Mapping[str, Sequence[Tuple[str, float]]],
                      depth: int) -> int:
    """Negatives from a ranking: each query's top `depth` hits minus its judged positives. Returns how
    many queries got none (they fall back to random corpus passages)."""
    without = 0
    for query in queries:
        hits = run.get(query.qid, ())[:depth]
        positives = set(query.positives)
        query.negatives = tuple(docid for docid, _ in hits if docid not in positives)
        without += not query.negatives
    return without


def attach_teacher(queries: List[TrainingQuery], teacher: Mapping[str, Mapping[str, float]],
                   source: str) -> List[TrainingQuery]:
    """Distillation: each query's candidates become the teacher's scored passages (minus positives). A query
    whose judged positives the teacher never scored cannot have its softmax target, so it is left out (a
    cross-encoder's scores, which include the positives, leave nothing out); the queries kept are returned,
    and none kept is refused."""
    kept = []
    for query in queries:
        scored = teacher.get(query.qid, {})
        positives = tuple(d for d in query.positives if d in scored)
        if not positives:
            continue
        query.positives = positives
        query.teacher = dict(scored)
        query.negatives = tuple(d for d, _ in sorted(scored.items(), key=lambda kv: -kv[1])
                                if d not in set(positives))
        kept.append(query)
    if not kept:
        raise DupMAEEvalError(f"{source}: the teacher scores no judged positive of any training query")
    return kept


def read_teacher_scores(path: Path) -> Dict[str, Dict[str, float]]:
    """Teacher scores: a TREC run (qid Q0 docid rank score tag) or JSONL ({"qid", "docid", "score"})."""
    from dupmae_eval.data.formats import read_trec_run

    path = Path(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        scores: Dict[str, Dict[str, float]] = {}
        for number, line in numbered_lines(path):
            try:
                record = json.loads(line)
                scores.setdefault(str(record["qid"]), {})[str(record["docid"])] = float(record["score"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InputFormatError(path, number, f"not a teacher score record with qid, docid, score "
                                                     f"({exc.__class__.__name__}: {exc})") from None
        return scores
    return {qid: dict(hits) for qid, hits in read_trec_run(path).items()}


def hold_out(queries: List[TrainingQuery], count: int, seed: int) -> Tuple[List[TrainingQuery], List[TrainingQuery]]:
    """(train, held out): `count` queries drawn with the seed, for choosing settings on a dev slice."""
    if count <= 0:
        return queries, []
    if count >= len(queries):
        raise DupMAEEvalError(f"--holdout-queries (holdout_queries) {count}: leaves nothing to train on "
                              f"({len(queries)} training queries)")
    chosen = set(np.random.default_rng(seed).choice(len(queries), size=count, replace=False).tolist())
    return ([q for i, q in enumerate(queries) if i not in chosen], [q for i, q in enumerate(queries) if i in chosen])


def _natural(qid: str):
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


# --------------------------------------------------------------------------- examples and batches


class GroupDataset:
    """Item i: query i's text, its group of passages (one positive, then group_size - 1 negatives) and,
    for distillation, the teacher's scores of that group. `epoch` is set by the trainer's callback."""

    def __init__(self, queries: List[TrainingQuery], store: PassageStore, group_size: int, seed: int):
        self.queries, self.store, self.group_size, self.seed = queries, store, group_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.queries)

    def draw(self, index: int) -> Tuple[str, List[str]]:
        """(positive, negatives) ids for query `index` in the current epoch."""
        query = self.queries[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        positive = query.positives[int(rng.integers(len(query.positives)))]
        wanted = self.group_size - 1
        negatives: List[str] = []
        if wanted > 0:
            pool = query.negatives
            if len(pool) >= wanted:
                negatives = [pool[i] for i in rng.choice(len(pool), size=wanted, replace=False)]
            elif pool:
                negatives = [pool[i] for i in rng.integers(len(pool), size=wanted)]
            else:   # no candidate at all: random passages that are not judged positive
                positives = set(query.positives)
                while len(negatives) < wanted:
                    docid = self.store.docid_at(int(rng.integers(len(self.store))))
                    if docid not in positives:
                        negatives.append(docid)
        return positive, negatives

    def __getitem__(self, index: int) -> dict:
        query = self.queries[index]
        positive, negatives = self.draw(index)
        group = [positive, *negatives]
        item = {"query": query.text, "passages": [self.store.text(d) for d in group]}
        if query.teacher:
            item["teacher"] = [query.teacher.get(d, min(query.teacher.values())) for d in group]
        return item


class GroupCollator:
    """Tokenizes a list of items into the model's inputs (queries B, passages B x group, flattened)."""

    def __init__(self, tokenizer, query_max_length: int, passage_max_length: int):
        self.tokenizer = tokenizer
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length

    def __call__(self, items: List[dict]) -> dict:
        import torch

        queries = self.tokenizer([item["query"] for item in items], padding=True, truncation=True,
                                 max_length=self.query_max_length, return_tensors="pt")
        passages = self.tokenizer([text for item in items for text in item["passages"]], padding=True,
                                  truncation=True, max_length=self.passage_max_length, return_tensors="pt")
        batch = {"query_input_ids": queries["input_ids"], "query_attention_mask": queries["attention_mask"],
                 "passage_input_ids": passages["input_ids"], "passage_attention_mask": passages["attention_mask"]}
        if items and "teacher" in items[0]:
            batch["teacher_scores"] = torch.tensor([item["teacher"] for item in items], dtype=torch.float32)
        return batch
