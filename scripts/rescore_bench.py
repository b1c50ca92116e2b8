"""The hybrid route's second stage, side by side in one run: `search.rescore` (shard-streamed) against the
same rescoring with the encoding loaded whole (what `rescore` did before, and the simple way to write it).

A synthetic encoding in the toolkit's shard format (`shard-NNNNN.npz`: dense 384 fp32, the document's 384
kept sparse entries over BERT's 30,522-entry vocabulary, seeded), read through `encode.CorpusEncoding`;
300 queries with 2,000 random candidates each (about what a dense top-1000 and an impact top-1000 fuse
to). Each side runs in its own process (peak = its VmHWM); printed: seconds, peak memory, the ratio, and
the largest score difference between the two runs. Both processes have torch loaded, as `run` does.

    .venv/bin/python scripts/rescore_bench.py                 # 200,000 documents in 20 shards (~0.9 GB on disk)
    .venv/bin/python scripts/rescore_bench.py --quick         # 4,000 documents in 4 shards (the smoke test's size)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM, KEPT, VOCABULARY = 384, 384, 30522


def _peak_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def build(folder: Path, documents: int, shard_size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for shard, start in enumerate(range(0, documents, shard_size)):
        size = min(shard_size, documents - start)
        indices = np.sort(np.stack([rng.choice(VOCABULARY, KEPT, replace=False) for _ in range(size)]), axis=1)
        np.savez(folder / f"shard-{shard:05d}.npz", dense=rng.standard_normal((size, DIM)).astype(np.float32),
                 data=rng.random(size * KEPT).astype(np.float32), indices=indices.ravel().astype(np.int32),
                 indptr=np.arange(0, size * KEPT + 1, KEPT, dtype=np.int64), shape=np.array([size, VOCABULARY]))


def whole_rescore(encoding, query_dense, query_sparse, qids, candidates, hits):
    """The peer: the encoding loaded whole, then each query's candidate rows times its vectors."""
    import numpy as np

    position = {docid: i for i, docid in enumerate(encoding.docids)}
    dense, sparse = encoding.dense, encoding.sparse
    run = {}
    for row, qid in enumerate(qids):
        docs = sorted({position[docid] for docid, _ in candidates.get(qid, [])})
        scores = dense[docs] @ query_dense[row] + np.asarray(sparse[docs] @ query_sparse[row]).ravel()
        ranked = sorted(zip(docs, scores.tolist()), key=lambda item: (-item[1], item[0]))[:hits]
        run[qid] = [(encoding.docids[i], s) for i, s in ranked]
    return run


def child(side: str, folder: Path, documents: int, shard_size: int, queries: int) -> dict:
    import importlib

    import numpy as np

    importlib.import_module("torch")    # loaded on both sides, as in any `run`: the peaks compare the rescoring

    from dupmae_eval.retrieval import searchers as search
    from dupmae_eval.encoding.corpus import CorpusEncoding

    meta = {"shards": -(-documents // shard_size), "dense_dim": DIM, "settings": {"kind": "dupmae"}}
    encoding = CorpusEncoding(folder, meta, [f"d{i}" for i in range(documents)],
                              list(range(0, documents, shard_size)))
    rng = np.random.default_rng(1)
    query_dense = rng.standard_normal((queries, DIM)).astype(np.float32)
    query_sparse = rng.standard_normal((queries, VOCABULARY)).astype(np.float32)
    qids = [f"q{i}" for i in range(queries)]
    candidates = {q: [(f"d{i}", 0.0) for i in rng.choice(documents, min(2000, documents), replace=False)]
                  for q in qids}
    started = time.perf_counter()
    rescore = search.rescore if side == "streamed" else whole_rescore
    run = rescore(encoding, query_dense, query_sparse, qids, candidates, 1000)
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb(),
            "run": {qid: hits[:100] for qid, hits in run.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    documents, shard_size, queries = (4_000, 1_000, 20) if args.quick else (200_000, 10_000, 300)
    if args.child:
        Path(args.out).write_text(json.dumps(child(args.child, Path(args.folder), documents, shard_size, queries)))
        return
    with tempfile.TemporaryDirectory(prefix="rescore-bench-") as scratch:
        folder = Path(scratch) / "encoding"
        folder.mkdir()
        build(folder, documents, shard_size)
        print(f"hybrid rescore: {documents:,} documents in {-(-documents // shard_size)} shards (dense {DIM}, "
              f"{KEPT} kept sparse entries of {VOCABULARY:,}), {queries} queries x 2,000 candidates, top 1,000; "
              f"one process per side", flush=True)
        results = {}
        for side in ("streamed", "whole"):
            out = Path(scratch) / f"{side}.json"
            subprocess.run([sys.executable, __file__, "--child", side, "--folder", str(folder), "--out", str(out)]
                           + (["--quick"] if args.quick else []), check=True)
            results[side] = json.loads(out.read_text())
            print(f"  {side:9s} {results[side]['seconds']:7.2f} s   peak memory {results[side]['peak_mb']:7,.0f} MB",
                  flush=True)
    ours, peer = results["streamed"], results["whole"]
    difference = max(abs(a[1] - b[1]) for qid in ours["run"] for a, b in zip(ours["run"][qid], peer["run"][qid]))
    same = all([d for d, _ in ours["run"][q][:10]] == [d for d, _ in peer["run"][q][:10]] for q in ours["run"])
    print(f"streamed / whole: time {ours['seconds'] / peer['seconds']:.2f}x, peak memory "
          f"{ours['peak_mb'] / peer['peak_mb']:.2f}x; top-10 identical: {same}; max |score difference| in the "
          f"top 100: {difference:.2e}")


if __name__ == "__main__":
    main()
