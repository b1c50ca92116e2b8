"""The search routines' arithmetic on synthetic encodings, without the Java stack: the hybrid route's
rescore streams the encoding shard by shard and scores each candidate as the paper's formula does."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from dupmae_eval.retrieval.searchers import fuse_candidates, rescore


class ShardedEncoding:
    """Only what encode.py's reader offers for streaming (docids and `shards()`), none of its whole-corpus
    attributes: a rescore that tried to load the corpus at once would fail here."""

    def __init__(self, dense, sparse, shard_sizes):
        self.docids = [f"doc-{i}" for i in range(dense.shape[0])]
        self._dense, self._sparse, self._sizes = dense, sparse, shard_sizes
        self.shards_read = 0

    def shards(self):
        start = 0
        for size in self._sizes:
            self.shards_read += 1
            yield start, self._dense[start:start + size], self._sparse[start:start + size]
            start += size


def test_hybrid_rescore_streams_shards_and_scores_every_candidate_exactly():
    rng = np.random.default_rng(5)
    docs, vocab, dim = 130, 200, 8
    dense = rng.standard_normal((docs, dim)).astype(np.float32)
    sparse = scipy.sparse.random(docs, vocab, density=0.08, format="lil", dtype=np.float32, random_state=5)
    sparse[[7, 77], :] = 0                              # empty passages (BEIR has them): no kept entries
    sparse = sparse.tocsr()
    sparse.eliminate_zeros()
    assert sparse[7].nnz == 0 and sparse[77].nnz == 0
    q_dense = rng.standard_normal((5, dim)).astype(np.float32)
    q_sparse = rng.standard_normal((5, vocab)).astype(np.float32)
    qids = [f"q{i}" for i in range(5)]
    encoding = ShardedEncoding(dense, sparse, [50, 50, 30])

    def hits(indices):
        return [(f"doc-{i}", 0.0) for i in indices]

    first = {"q0": hits(rng.choice(docs, 40, replace=False)), "q1": hits([7, 77, 3, 129]),
             "q3": hits(range(55, 70)), "q4": hits([0, 49, 50, 99, 100, 129])}
    second = {"q0": first["q0"][:10] + hits([128]), "q4": hits([49, 50])}   # overlapping candidate lists
    candidates = fuse_candidates(first, second)                              # q2 has no candidate at all
    run = rescore(encoding, q_dense, q_sparse, qids, candidates, hits=25)

    assert encoding.shards_read == 3                                       # one pass over the shards
    assert run["q2"] == []
    whole_sparse = sparse.toarray().astype(np.float64)
    for qid in ("q0", "q1", "q3", "q4"):
        row = qids.index(qid)
        wanted = sorted({int(d.split("-")[1]) for d, _ in candidates[qid]})
        expected = [(i, float(q_dense[row].astype(np.float64) @ dense[i].astype(np.float64)
                              + q_sparse[row].astype(np.float64) @ whole_sparse[i])) for i in wanted]
        expected.sort(key=lambda item: (-item[1], item[0]))
        expected = expected[:25]
        assert [d for d, _ in run[qid]] == [f"doc-{i}" for i, _ in expected]
        np.testing.assert_allclose([s for _, s in run[qid]], [s for _, s in expected], rtol=1e-5, atol=1e-5)
    assert len(run["q0"]) == 25 and len(run["q1"]) == 4
    blocked = rescore(ShardedEncoding(dense, sparse, [50, 50, 30]), q_dense, q_sparse, qids, candidates, hits=25,
                      pair_block=7)                              # pairs scored 7 at a time within each shard
    assert blocked == run
    # an empty passage scores its dense half only
    dense_only = {d: s for d, s in run["q1"]}
    for i in (7, 77):
        assert abs(dense_only[f"doc-{i}"] - float(q_dense[1] @ dense[i])) < 1e-5


def test_rescore_bench_runs_and_both_sides_agree():
    """scripts/rescore_bench.py at its smoke size: the streamed rescore and the whole-encoding one rank
    the same top 10 with the same scores."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "rescore_bench.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "top-10 identical: True" in done.stdout
    assert float(re.search(r"max \|score difference\| in the top 100: ([0-9.e+-]+)", done.stdout).group(1)) < 1e-4


def test_exact_search_keeps_the_first_of_documents_tied_at_the_last_place():
    """Duplicate and empty passages score alike. Of several documents tied at the k-th place, exact search
    keeps the first ones in corpus order (as faiss's flat index does), whatever the block and shard layout;
    expected: a stable sort of every score by hand (score descending, corpus order among equals)."""
    from dupmae_eval.retrieval.searchers import exact_scores_topk, exact_search

    rng = np.random.default_rng(3)
    dense = rng.integers(0, 3, size=(3000, 2)).astype(np.float32)        # few distinct scores: ties everywhere
    dense[:1000] = 0.0                                                    # "empty passages", all alike
    sparse = scipy.sparse.csr_matrix((3000, 5), dtype=np.float32)        # no sparse entries: adds 0
    queries = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    query_sparse = np.ones((3, 5), dtype=np.float32)
    scores = queries @ dense.T
    for k in (1, 5, 700, 1500):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for block in (65_536, 1000, 333):
            idx, val = exact_scores_topk(queries, query_sparse, dense, sparse, k, block=block)
            np.testing.assert_array_equal(idx, expected)
            np.testing.assert_array_equal(val, np.take_along_axis(scores, expected, 1))
        encoding = ShardedEncoding(dense, sparse, [1200, 800, 1000])
        run = exact_search(encoding, queries, query_sparse, ["q0", "q1", "q2"], hits=k)
        assert [[d for d, _ in run[q]] for q in ("q0", "q1", "q2")] == [
            [f"doc-{i}" for i in row] for row in expected]
