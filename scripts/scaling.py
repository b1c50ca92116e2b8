"""How cost grows with corpus size: encoding at 1k, 5k and SciFact's 5,183 passages; search at 1k,
10k and 25k passages of the MS MARCO passage sample (DL19 + DL20 queries). Our side only (the
side-by-side comparisons with the peers are in bench.py).

    .venv/bin/python scripts/scaling.py [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _slice_beir(folder: Path, documents: int) -> Path:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        (folder / "corpus.jsonl").write_text("".join(line for _, line in zip(range(documents), corpus)))
    shutil.copy(REPO / "data" / "scifact" / "queries.jsonl.gz", folder / "queries.jsonl.gz")
    shutil.copytree(REPO / "data" / "scifact" / "qrels", folder / "qrels", dirs_exist_ok=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    import os

    os.environ["DUPMAE_EVAL_HOME"] = tempfile.mkdtemp(prefix="dupmae-scaling-")
    import numpy as np
    import torch

    torch.set_num_threads(options.threads)
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.encoding.corpus import encode_corpus, load_encoding
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, DupMAEQueryEncoder, EncoderSettings, encode_queries
    from dupmae_eval.encoding.checkpoint import load_model
    from dupmae_eval.retrieval.searchers import exact_scores_topk

    model = load_model("package:cognition/model", need_mlm_head=True)
    settings = EncoderSettings.for_kind("dupmae")
    encoder = DupMAEDocumentEncoder(model, settings)
    print(f"splade-tiny read as DupMAE (raw logits, top-384), 256-token passages, {options.threads} threads")
    print("encoding (SciFact)")
    with tempfile.TemporaryDirectory() as scratch:
        for size in (1000, 5000, 5183):
            data = resolve(str(_slice_beir(Path(scratch) / f"scifact-{size}", size)))
            started = time.perf_counter()
            encode_corpus(data, encoder, progress=False)
            seconds = time.perf_counter() - started
            print(f"  {size:>6,} passages  {seconds:8.1f} s  {size / seconds:7.1f} passages/s")

        print("exact DupMAE search (MS MARCO passage sample, 97 DL19+DL20 queries, top-1000)")
        sample = resolve(str(REPO / "tests" / "data" / "msmarco-passage-sample"))
        started = time.perf_counter()
        encoding = load_encoding(encode_corpus(sample, encoder, progress=False))
        print(f"  (encoding the 24,884 passages took {time.perf_counter() - started:.0f} s)")
        queries = {**sample.queries("dl19"), **sample.queries("dl20")}
        query_encoder = DupMAEQueryEncoder(model, settings, half="dense")
        q_dense, q_sparse, _ = encode_queries(query_encoder, list(queries.values()))
        for size in (1000, 10000, 24884):
            dense, sparse = encoding.dense[:size], encoding.sparse[:size]
            exact_scores_topk(q_dense, q_sparse, dense, sparse, 1000)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                exact_scores_topk(q_dense, q_sparse, dense, sparse, 1000)
                times.append(time.perf_counter() - started)
            seconds = float(np.median(times))
            print(f"  {size:>6,} passages  {seconds * 1000:8.1f} ms for {len(queries)} queries  "
                  f"{len(queries) / seconds:9.1f} queries/s")


if __name__ == "__main__":
    main()
