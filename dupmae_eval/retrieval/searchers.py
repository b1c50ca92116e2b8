"""Searches that turn queries into runs: BM25 (LuceneSearcher), dense (FaissSearcher), impact
(LuceneImpactSearcher), the exact DupMAE score (brute force in blocks) and the hybrid route."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Tuple

import numpy as np

from dupmae_eval.runtime import memory
from dupmae_eval._java import start_jvm
from dupmae_eval.data.formats import Run
from dupmae_eval.errors import DupMAEEvalError

MULTIFIELD_WEIGHTS = {"contents": 1.0, "title": 1.0}


def check_queries(queries: Mapping[str, str], source: str) -> None:
    """Refuse an empty query set or an empty query text up front, naming where they came from."""
    if not queries:
        raise DupMAEEvalError(f"{source}: no queries to search")
    for qid, text in queries.items():
        if not text.strip():
            raise DupMAEEvalError(f"{source}: query {qid!r} has empty text")


def bm25_search(index: Path, queries: Mapping[str, str], fields: str, k1: float = 0.9, b: float = 0.4,
                hits: int = 1000, threads: int | None = None, remove_query: bool = True) -> Run:
    """BM25 through Pyserini's LuceneSearcher; with `remove_query`, drop the hit whose id is the query's
    (BEIR's convention: ArguAna and Quora queries are corpus documents)."""
    start_jvm()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    searcher.set_bm25(k1, b)
    qids = list(queries)
    weights = MULTIFIELD_WEIGHTS if fields == "multifield" else {}
    from dupmae_eval._java import call_interruptibly

    results = call_interruptibly(lambda: searcher.batch_search([queries[qid] for qid in qids], qids, k=hits,
                                                               threads=threads or os.cpu_count() or 1, fields=weights))
    run: Run = {}
    for qid in qids:
        kept = [(hit.docid, float(hit.score)) for hit in results.get(qid, [])
                if not (remove_query and hit.docid == qid)]
        run[qid] = kept
    searcher.close()
    return run


# --------------------------------------------------------------------------- learned representations


def _drop_query_hit(qid: str, hits, remove_query: bool):
    return [(docid, score) for docid, score in hits if not (remove_query and docid == qid)]


def dense_search(index: Path, query_encoder, queries: Mapping[str, str], hits: int = 1000,
                 threads: int | None = None, remove_query: bool = True) -> Run:
    """The dense half through Pyserini's FaissSearcher with our query encoder."""
    start_jvm()  # pyserini.search imports its Lucene classes, which start the JVM
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(index), query_encoder)
    qids = list(queries)
    results = searcher.batch_search([queries[q] for q in qids], qids, k=hits, threads=threads or os.cpu_count() or 1)
    return {qid: _drop_query_hit(qid, [(h.docid, float(h.score)) for h in results.get(qid, [])], remove_query)
            for qid in qids}


def impact_search(index: Path, query_encoder, queries: Mapping[str, str], hits: int = 1000,
                  threads: int | None = None, remove_query: bool = True) -> Run:
    """The sparse half through Pyserini's LuceneImpactSearcher (quantised weights, Lucene scoring)."""
    start_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    searcher = LuceneImpactSearcher(str(index), query_encoder)
    qids = list(queries)
    results = searcher.batch_search([queries[q] for q in qids], qids, k=hits, threads=threads or os.cpu_count() or 1)
    return {qid: _drop_query_hit(qid, [(h.docid, float(h.score)) for h in results.get(qid, [])], remove_query)
            for qid in qids}


def exact_scores_topk(query_dense, query_sparse, doc_dense, doc_sparse, k: int,
                      block: int = 65_536) -> Tuple[np.ndarray, np.ndarray]:
    """Exact DupMAE scores, q_dense . d_dense + sum over d's kept entries of q_sparse[i] * d_sparse[i],
    for every query against every document, in blocks of documents so memory stays bounded.

    query_sparse is a dense (queries x vocabulary) array, or the `SparseQueries` made from one;
    doc_sparse a CSR matrix holding only each document's kept (top-k) entries, so the sum runs over
    topk(d) exactly. Returns (indices, scores), each queries x min(k, documents), best first.
    """
    if query_sparse is not None and not isinstance(query_sparse, SparseQueries):
        query_sparse = SparseQueries(query_sparse)
    n_docs = doc_dense.shape[0] if doc_dense is not None else doc_sparse.shape[0]
    n_queries = query_dense.shape[0] if query_dense is not None else query_sparse.count
    k = min(k, n_docs)
    best_idx = np.empty((n_queries, 0), dtype=np.int64)
    best_val = np.empty((n_queries, 0), dtype=np.float32)
    for start in range(0, n_docs, block):
        end = min(n_docs, start + block)
        scores = np.zeros((n_queries, end - start), dtype=np.float32)
        if doc_dense is not None:
            scores += query_dense @ doc_dense[start:end].T
        if doc_sparse is not None:
            scores += query_sparse.scores(doc_sparse[start:end])
        keep = _top_columns(scores, k)
        best_idx, best_val = _merge_topk(best_idx, best_val, np.take_along_axis(
            np.arange(start, end)[None, :].repeat(n_queries, 0), keep, 1), np.take_along_axis(scores, keep, 1), k)
    return best_idx, best_val


class SparseQueries:
    """Queries' sparse halves laid out once (vocabulary x queries, contiguous) for repeated products
    with blocks of sparse documents; the product runs in torch's multithreaded CSR kernel."""

    def __init__(self, query_sparse: np.ndarray):
        import torch

        self.count = query_sparse.shape[0]
        self._transposed = torch.from_numpy(np.ascontiguousarray(query_sparse.T, dtype=np.float32))

    def scores(self, doc_sparse) -> np.ndarray:
        """queries x documents: each document's kept entries dotted with every query."""
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            documents = torch.sparse_csr_tensor(torch.from_numpy(doc_sparse.indptr.astype(np.int64)),
                                                torch.from_numpy(doc_sparse.indices.astype(np.int64)),
                                                torch.from_numpy(doc_sparse.data.astype(np.float32)),
                                                size=doc_sparse.shape)
            return (documents @ self._transposed).numpy().T


def _top_columns(values: np.ndarray, k: int) -> np.ndarray:
    """Column positions of each row's k largest values, sorted best first; equal values by lower column,
    at the k-th place too: of several documents tied there, the first ones are kept (as faiss keeps them),
    not the ones argpartition happens to leave in its first k."""
    if values.shape[1] > k:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
        kept = np.take_along_axis(values, part, 1)
        kth = kept.min(axis=1)                                    # each row's k-th largest value
        straddle = np.flatnonzero((values == kth[:, None]).sum(axis=1) > (kept == kth[:, None]).sum(axis=1))
        for row in straddle.tolist():                             # a tie at the k-th place that reaches past it
            above = np.flatnonzero(values[row] > kth[row])
            part[row] = np.concatenate([above, np.flatnonzero(values[row] == kth[row])[:k - len(above)]])
        part.sort(axis=1)                                         # columns ascending: the sort below keeps it
    else:
        part = np.arange(values.shape[1])[None, :].repeat(values.shape[0], 0)
    order = np.argsort(-np.take_along_axis(values, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def exact_search(encoding, query_dense, query_sparse, qids, hits: int = 1000, remove_query: bool = True,
                 query_block: int = 1024, device=None) -> Run:
    """The paper's score over the whole corpus (brute force), as a run.

    The encoding is streamed shard by shard and each shard's top hits are merged into a running
    top-k, so the corpus never has to fit in memory at once (only one shard and the queries do).
    `device` (e.g. "cuda") scores each shard there with torch (`DeviceScorer`); None scores on the CPU
    with numpy and torch's CSR kernel. Both compute the same fp32 sums (in different orders).
    """
    run: Run = {}
    for start in range(0, len(qids), query_block):
        part = slice(start, start + query_block)
        q_dense = None if query_dense is None else query_dense[part]
        q_sparse = None if query_sparse is None else query_sparse[part]
        if device is None:
            q_sparse = None if q_sparse is None else SparseQueries(q_sparse)
            score_shard = exact_scores_topk
        else:
            score_shard = DeviceScorer(q_dense, q_sparse, device).topk
        n_queries = len(qids[part])
        best_idx = np.empty((n_queries, 0), dtype=np.int64)
        best_val = np.empty((n_queries, 0), dtype=np.float32)
        for offset, dense, sparse in encoding.shards():
            idx, val = score_shard(q_dense, q_sparse, dense, sparse, hits)
            best_idx, best_val = _merge_topk(best_idx, best_val, idx + offset, val, hits)
            del dense, sparse
            memory.release()  # the shard's buffers are freed: return their pages (see memory.py)
        for row, qid in enumerate(qids[part]):
            run[qid] = _drop_query_hit(qid, [(encoding.docids[i], float(s))
                                             for i, s in zip(best_idx[row], best_val[row])], remove_query)
    return run


class DeviceScorer:
    """The exact DupMAE score on an accelerator: one block of queries, held on the device, scored
    against corpus blocks with torch (dense half: one fp32 matmul; sparse half: the documents' top-k
    CSR times the queries' vocabulary-wide vectors, cuSPARSE's SpMM on CUDA); each block's top hits are
    merged on the device. fp32 throughout (TF32 stays off, torch's default for matmuls), so the scores
    are the CPU route's up to summation order; ties may come out in another order than the CPU's
    stable one."""

    def __init__(self, query_dense, query_sparse, device):
        import torch

        self.device = torch.device(device)
        self.query_dense = None if query_dense is None else _as_tensor(query_dense, self.device)
        # vocabulary x queries, row-major: the SpMM reads one contiguous row of it per stored entry
        self.query_sparse_t = None if query_sparse is None else _as_tensor(query_sparse, self.device).T.contiguous()

    def topk(self, _query_dense, _query_sparse, doc_dense, doc_sparse, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """`exact_scores_topk`'s contract for one shard (numpy dense rows, scipy CSR): (indices, scores)."""
        dense = None if doc_dense is None else _as_tensor(doc_dense, self.device)
        sparse = None if doc_sparse is None else csr_to_device(doc_sparse, self.device)
        idx, val = self.topk_on_device(dense, sparse, k)
        return idx.cpu().numpy().astype(np.int64), val.cpu().numpy()

    def topk_on_device(self, doc_dense, doc_sparse, k: int, block: Optional[int] = None):
        """(indices, scores) tensors, queries x min(k, documents), for documents already on the device:
        dense rows (n x d) and/or (crow, col, values) CSR tensors; scored in blocks of documents whose
        score matrix holds at most 2^28 values (1 GiB)."""
        import torch

        n_docs = doc_dense.shape[0] if doc_dense is not None else doc_sparse[0].shape[0] - 1
        n_queries = (self.query_dense if self.query_dense is not None else self.query_sparse_t.T).shape[0]
        block = block or max(1, (1 << 28) // max(1, n_queries))
        k = min(k, n_docs)
        best_val = torch.empty((n_queries, 0), dtype=torch.float32, device=self.device)
        best_idx = torch.empty((n_queries, 0), dtype=torch.int64, device=self.device)
        for start in range(0, n_docs, block):
            end = min(n_docs, start + block)
            scores = torch.zeros((end - start, n_queries), dtype=torch.float32, device=self.device)
            if doc_dense is not None:
                scores.addmm_(doc_dense[start:end], self.query_dense.T)
            if doc_sparse is not None:
                scores += _csr_rows(doc_sparse, start, end, self.query_sparse_t.shape[0]) @ self.query_sparse_t
            val, idx = torch.topk(scores.T, min(k, end - start), dim=1)
            best_val, where = torch.topk(torch.cat([best_val, val], 1), min(k, best_val.shape[1] + val.shape[1]),
                                         dim=1)
            best_idx = torch.gather(torch.cat([best_idx, idx + start], 1), 1, where)
            del scores
        return best_idx, best_val


def _as_tensor(array, device):
    import torch

    tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=torch.float32)


def csr_to_device(matrix, device):
    """A scipy CSR matrix as (crow, col, values) tensors on the device: int32 indices where the
    entries fit (cuSPARSE takes either; int32 halves the index bytes read), else int64."""
    import torch

    index_dtype = torch.int32 if matrix.nnz < 2**31 and matrix.shape[1] < 2**31 else torch.int64
    return (torch.from_numpy(matrix.indptr.astype(np.int64)).to(device=device, dtype=index_dtype),
            torch.from_numpy(matrix.indices).to(device=device, dtype=index_dtype),
            torch.from_numpy(np.ascontiguousarray(matrix.data, dtype=np.float32)).to(device))


def _csr_rows(csr, start: int, end: int, columns: int):
    """Rows [start, end) of a (crow, col, values) CSR as a torch sparse CSR tensor (views, no copy of the
    entries; the row pointers are rebased)."""
    import warnings

    import torch

    crow, col, values = csr
    low, high = int(crow[start]), int(crow[end])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)   # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow[start:end + 1] - low, col[low:high], values[low:high],
                                       size=(end - start, columns))


def _merge_topk(idx_a, val_a, idx_b, val_b, k: int):
    """Merge two per-query top lists into one top-k (best first; ties by lower document index)."""
    idx = np.concatenate([idx_a, idx_b], axis=1)
    val = np.concatenate([val_a, val_b], axis=1)
    order = np.lexsort((idx, -val), axis=1)[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)


def faiss_sharded_search(encoding, query_dense, qids, hits: int = 1000, remove_query: bool = True) -> Run:
    """Dense search shard by shard with faiss (flat inner product per shard), top-k merged across
    shards: the route for a dense index larger than memory (one shard's index in memory at a time)."""
    import faiss

    best_idx = np.empty((len(qids), 0), dtype=np.int64)
    best_val = np.empty((len(qids), 0), dtype=np.float32)
    queries = np.ascontiguousarray(query_dense, dtype=np.float32)
    for offset, dense, _ in encoding.shards():
        index = faiss.IndexFlatIP(dense.shape[1])
        index.add(np.ascontiguousarray(dense, dtype=np.float32))
        val, idx = index.search(queries, min(hits, index.ntotal))
        best_idx, best_val = _merge_topk(best_idx, best_val, idx.astype(np.int64) + offset, val, hits)
        del index, dense
        memory.release()
    return {qid: _drop_query_hit(qid, [(encoding.docids[i], float(s)) for i, s in zip(best_idx[r], best_val[r])],
                                 remove_query) for r, qid in enumerate(qids)}


def rescore(encoding, query_dense, query_sparse, qids, candidates: Run, hits: int = 1000,
            pair_block: int = 8192) -> Run:
    """Exact DupMAE scores for each query's candidate documents (the hybrid route's second stage).

    The encoding is streamed one shard at a time, like the brute-force search: every (query, candidate)
    pair is scored while the shard holding its document is read, so memory holds one shard and the pairs,
    never the corpus (MS MARCO's 8.8M passages at 384 dense values and 384 kept sparse entries are about
    40 GB; hybrid is the route meant to scale past brute force). Within a shard the pairs are taken query by
    query, so the gathers from the queries' vocabulary-wide sparse halves stay within one row at a time; the
    sparse half of a pair is the sum over the document's kept entries of q_sparse[i] * d_sparse[i] in fp32,
    in the entries' order (as scipy's CSR product sums a row). `pair_block` pairs are scored at once (their
    temporaries: about pair_block x kept entries x 24 bytes)."""
    import torch

    wanted = {docid for qid in qids for docid, _ in candidates.get(qid, [])}
    position = {docid: i for i, docid in enumerate(encoding.docids) if docid in wanted}
    pair_rows, pair_docs = [], []
    for row, qid in enumerate(qids):
        mine = np.unique(np.fromiter((position[docid] for docid, _ in candidates.get(qid, [])), dtype=np.int64))
        pair_rows.append(np.full(len(mine), row, dtype=np.int64))
        pair_docs.append(mine)
    rows, docs = (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64) for parts in (pair_rows, pair_docs))
    if query_sparse is not None:
        vocabulary = query_sparse.shape[1]
        flat_queries = torch.from_numpy(np.ascontiguousarray(query_sparse, dtype=np.float32)).view(-1)
    by_doc = np.argsort(docs, kind="stable")
    sorted_docs = docs[by_doc]
    scores = np.zeros(len(docs), dtype=np.float32)
    for offset, dense, sparse in encoding.shards():
        size = dense.shape[0] if dense is not None else sparse.shape[0]
        low, high = np.searchsorted(sorted_docs, [offset, offset + size])
        if low == high:
            continue
        in_shard = by_doc[low:high]
        in_shard = in_shard[np.argsort(rows[in_shard], kind="stable")]   # query-major, documents ascending
        for start in range(0, len(in_shard), pair_block):                 # bounded temporaries
            pairs = in_shard[start:start + pair_block]
            local, query_rows = docs[pairs] - offset, rows[pairs]
            if dense is not None:
                scores[pairs] += np.einsum("ij,ij->i", dense[local], query_dense[query_rows])
            if sparse is not None:
                kept = sparse[local]                               # CSR: each pair's document, its kept entries
                counts = np.diff(kept.indptr)
                where = torch.repeat_interleave(torch.from_numpy(query_rows * vocabulary), torch.from_numpy(counts))
                where += torch.from_numpy(kept.indices)             # int32 entries into the int64 offsets
                products = np.append(kept.data * flat_queries[where].numpy(), np.float32(0))  # reduceat may index
                sums = np.add.reduceat(products, kept.indptr[:-1])                          # the end
                sums[counts == 0] = 0.0                            # an empty passage: reduceat gives its neighbour
                scores[pairs] += sums
        del dense, sparse
        memory.release()
    run: Run = {}
    bounds = np.cumsum([0] + [len(part) for part in pair_docs])     # pairs are in query order, docs ascending
    for row, qid in enumerate(qids):
        mine = slice(bounds[row], bounds[row + 1])
        ranked = sorted(zip(docs[mine].tolist(), scores[mine].tolist()), key=lambda item: (-item[1], item[0]))[:hits]
        run[qid] = [(encoding.docids[i], s) for i, s in ranked]
    return run


def fuse_candidates(*runs: Run) -> Run:
    """Union of the candidates of several runs, per query."""
    fused: Run = {}
    for run in runs:
        for qid, hits in run.items():
            fused.setdefault(qid, []).extend(hits)
    return fused
