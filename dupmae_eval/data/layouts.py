"""Dataset layouts: how a folder holds a corpus, queries and judgments. One entry per layout.

- beir: corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (every split's queries; a split's are
  those its qrels judge, as BEIR's loader does), qrels/SPLIT.tsv; a hit whose id is the query's is
  dropped (BEIR's convention: ArguAna's and Quora's queries are corpus documents).
- msmarco: collection.tsv (`pid<TAB>text`), queries.SPLIT.tsv, qrels.SPLIT.txt (TREC); `dl19` is also
  spelled `dl19-passage`. Query and passage ids share one number space, so no hit is dropped.
Any file may be gzipped. The dataset registry, the runner and the checks all ask this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from dupmae_eval.data.formats import (
    Passage, read_beir_corpus, read_beir_queries, read_tsv_collection, read_tsv_queries)
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.registry import Registry

BEIR_MEASURES = ("nDCG@10", "R@100", "R@1000")
MSMARCO_DEV_MEASURES = ("RR@10", "R@1000")
TREC_DL_MEASURES = ("nDCG@10", "AP(rel=2)", "R(rel=2)@1000")


@dataclass(frozen=True)
class Layout:
    name: str
    corpus_stem: str                                         # the corpus file's name, without .gz
    read_corpus: Callable[[Path], Iterator[Passage]]
    default_split: str
    removes_query_hit: bool
    qrels_candidates: Callable[[Path, str], List[Path]]     # a split's judgment files, in preference order
    queries_candidates: Callable[[Path, str], List[Path]]
    read_queries: Callable[[Path], Dict[str, str]]
    queries_are_judged_subset: bool                          # True: the split's queries are those its qrels judge
    measures: Callable[[str], Tuple[str, ...]]               # what the literature reports for a split

    def corpus_file(self, root: Path) -> Optional[Path]:
        for candidate in (root / self.corpus_stem, root / f"{self.corpus_stem}.gz"):
            if candidate.is_file():
                return candidate
        return None


LAYOUTS: Registry[Layout] = Registry("dataset layout")
register_layout = LAYOUTS.register
layout_of = LAYOUTS.lookup


def detect_layout(folder: Path) -> str:
    """The layout whose corpus file the folder holds (gzipped or not)."""
    for layout in LAYOUTS.values():
        if layout.corpus_file(folder) is not None:
            return layout.name
    wanted = " nor ".join(f"{layout.corpus_stem} ({layout.name} layout)" for layout in LAYOUTS.values())
    raise DupMAEEvalError(f"{folder}: not a dataset folder: it has neither {wanted}")


def msmarco_split_names(split: str) -> Tuple[str, ...]:
    """File-name spellings of an MS MARCO split: 'dl19' is also 'dl19-passage'."""
    return (split, f"{split}-passage") if not split.endswith("-passage") else (split,)


register_layout(Layout(
    "beir", "corpus.jsonl", read_beir_corpus, default_split="test", removes_query_hit=True,
    qrels_candidates=lambda root, split: [root / "qrels" / f"{split}.tsv"],
    queries_candidates=lambda root, split: [root / "queries.jsonl", root / "queries.jsonl.gz"],
    read_queries=read_beir_queries, queries_are_judged_subset=True,
    measures=lambda split: BEIR_MEASURES))
register_layout(Layout(
    "msmarco", "collection.tsv", read_tsv_collection, default_split="dl19", removes_query_hit=False,
    qrels_candidates=lambda root, split: [root / f"qrels.{name}{ext}" for name in msmarco_split_names(split)
                                          for ext in (".txt", ".tsv", ".txt.gz")],
    queries_candidates=lambda root, split: [root / f"queries.{name}{ext}" for name in msmarco_split_names(split)
                                            for ext in (".tsv", ".tsv.gz")],
    read_queries=read_tsv_queries, queries_are_judged_subset=False,
    measures=lambda split: TREC_DL_MEASURES if split.startswith("dl") else MSMARCO_DEV_MEASURES))
