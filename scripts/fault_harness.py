"""Fault harness: every verb, on small real data, interrupted, starved of disk and fed damaged caches, must lose
nothing and never print a wrong number.

For each verb (a command on a 300-passage slice of the bundled SciFact), one uninterrupted reference run in a
fresh cache gives the outputs to compare with. Then, each case in a fresh folder and cache:
  kill      the command is sent SIGKILL, SIGINT or SIGTERM at a random moment of its reference duration; it
            must end with one line and exit 130 (SIGINT) or 143 (SIGTERM) (or finish first); then the same
            command, run again, must give outputs byte-identical to the reference;
  write     the command runs under a file-size limit (RLIMIT_FSIZE, a random size below what it writes, with
            SIGXFSZ ignored, so each write past it fails as a full disk does): it must fail with one line and
            exit 2, leave no partial output, and the same command without the limit must then give the
            reference's outputs;
  corrupt   after a finished run, one cache artefact is damaged (a file truncated, a byte flipped, a file
            removed, the manifest cut): the next run must notice (one line), rebuild it, and give the
            reference's outputs;
  together  two identical commands start at once on one cache: both succeed with the reference's outputs;
  mixed     the command and a different one that fills the same cache (PARTNERS: an index beside an encoding,
            two encodings of other kinds) start at once: both succeed, each with its own reference's outputs.
After every case: no Python traceback, no JVM crash file, no scratch (*building*), partial (*.partial) or
temporary (.*.tmp) file anywhere, in the case folder or the cache.

    python scripts/fault_harness.py                        # every verb and fault, 4 kills per signal
    python scripts/fault_harness.py --verbs bm25 --kills 1 --faults kill,write    # a sampled subset

Prints one line per case and a table verb x fault -> cases, outcomes and whether every case held.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
SPLADE_TINY = "package:cognition/model"
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
PARTNERS = {"bm25": "run", "run": "run-dense", "run-dense": "bm25", "reproduce": "run"}
"""For `mixed`: the different job each verb runs beside on one cache (the training verbs fill no shared cache)."""


def make_slice(folder: Path, documents: int = 300, queries: int = 20) -> Path:
    """The first `queries` SciFact test queries, their judged documents and filler up to `documents`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = ROOT / "dupmae_eval" / "resources" / "data" / "scifact"
    qrels = [line.split("\t") for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:queries]
    judged = {d for q, d, _ in qrels if q in qids}
    with gzip.open(data / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for line in corpus]
    chosen = [r for r in records if r["_id"] in judged]
    chosen += [r for r in records if r["_id"] not in judged][:documents - len(chosen)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    with gzip.open(data / "queries.jsonl.gz", "rt") as lines:
        (folder / "queries.jsonl").write_text("".join(l for l in lines if json.loads(l)["_id"] in qids))
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, d, r in qrels if q in qids))
    (folder / "texts.txt").write_text("".join(" ".join(r["text"].split()) + "\n" for r in chosen[:64]))
    return folder


@dataclass
class Verb:
    name: str
    arguments: Callable[[Path, Path], List[str]]      # (data slice, case folder) -> CLI arguments
    outputs: List[str]                                # files under the case folder compared byte for byte
    cache_globs: List[str] = field(default_factory=list)   # cache artefacts the corrupt fault may damage


def verbs(data: Path) -> Dict[str, Verb]:
    suite = data / "suite.yaml"
    suite.write_text("suite: harness\nmeasures: [nDCG@10, R@100]\ndatasets: [scifact]\nconditions:\n"
                     "  bm25-flat: {kind: bm25, fields: flat}\n")
    training = ["--batch-size", "4", "--max-steps", "4", "--save-steps", "2", "--seed", "7"]
    table = [
        Verb("bm25", lambda d, c: ["bm25", "--dataset", str(d), "--output", str(c / "run.trec")], ["run.trec"],
             ["indexes/bm25-flat/*/*"]),
        Verb("run", lambda d, c: ["run", "--dataset", str(d), "--model", SPLADE_TINY, "--encoder", "dupmae",
                                  "--retrieval", "dupmae", "--shard-size", "100", "--output", str(c / "run.trec")],
             ["run.trec"], ["encodings/*/shard-*.npz", "encodings/*/manifest.json"]),
        Verb("run-dense", lambda d, c: ["run", "--dataset", str(d), "--model", SPLADE_TINY, "--encoder", "cls",
                                        "--retrieval", "dense", "--output", str(c / "run.trec")],
             ["run.trec"], ["indexes/faiss/*/*", "encodings/*/shard-*.npz"]),
        Verb("reproduce", lambda d, c: ["reproduce", str(suite), "--data", f"scifact={d}", "--runs",
                                        str(c / "runs")],
             ["runs/harness/bm25-flat/scifact.trec", "runs/harness/bm25-flat/scifact.metrics.json"],
             ["indexes/bm25-flat/*/*"]),
        Verb("pretrain", lambda d, c: ["pretrain", "--model", SPLADE_TINY, "--corpus", str(d / "texts.txt"),
                                       "--objective", "dupmae", "--max-length", "48", "--output", str(c / "pt"),
                                       *training],
             ["pt/model.safetensors", "pt/dupmae_decoder.safetensors"]),
        Verb("finetune", lambda d, c: ["finetune", "--model", SPLADE_TINY, "--dataset", str(d), "--split", "test",
                                       "--negatives", "none", "--group-size", "1", "--queries-per-device", "4",
                                       "--passage-max-length", "64", "--output", str(c / "ft"), *training[2:]],
             ["ft/model.safetensors", "ft/dupmae_head.safetensors"]),
    ]
    return {verb.name: verb for verb in table}


@dataclass
class Outcome:
    verb: str
    fault: str
    detail: str
    held: bool
    note: str


def run_cli(arguments: List[str], case: Path, home: Path, limit: Optional[int] = None,
            signal_after: Optional[float] = None, sent=None, timeout: float = 900):
    """Run the CLI in `case` with cache `home`; optionally with a file-size limit, or a signal after a delay.
    Returns (exit code, stderr, seconds)."""
    env = dict(os.environ, DUPMAE_EVAL_HOME=str(home), PYTHONUNBUFFERED="1")

    def limits():
        signal.signal(signal.SIGINT, signal.SIG_DFL)         # as from a terminal, whatever the parent ignores
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "dupmae_eval", *arguments], cwd=case, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limits)
    if signal_after is not None:
        try:
            process.wait(timeout=signal_after)
        except subprocess.TimeoutExpired:
            process.send_signal(sent)
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err, time.time() - started


def leftovers(*folders: Path) -> List[str]:
    """Files nobody asked for: scratch folders, partial and temporary files, JVM crash files."""
    found = []
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            name = path.name
            if ("building" in name or name.endswith(".partial") or (name.startswith(".") and name.endswith(".tmp"))
                    or name.startswith("hs_err")):
                found.append(str(path.relative_to(folder)))
    return found


def same_outputs(verb: Verb, case: Path, reference: Path) -> Optional[str]:
    for name in verb.outputs:
        ours, theirs = case / name, reference / name
        if not ours.is_file():
            return f"{name} missing"
        if ours.read_bytes() != theirs.read_bytes():
            return f"{name} differs from the reference"
    return None


def one_line(err: str, prefix: str) -> bool:
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("dupmae-eval:") and "warning" not in line
             and "building it again" not in line and "encoding them again" not in line]
    return "Traceback" not in err and len(lines) == 1 and lines[0].startswith(prefix)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/dupmae-fault-harness"))
    parser.add_argument("--verbs", default=None, help="comma-separated (default: all)")
    parser.add_argument("--faults", default="kill,write,corrupt,together,mixed")
    parser.add_argument("--kills", type=int, default=4, help="kills per signal and verb (default 4)")
    parser.add_argument("--writes", type=int, default=3, help="file-size limits per verb (default 3)")
    parser.add_argument("--corruptions", type=int, default=None,
                        help="damage cases per verb, drawn from its artefact x damage list (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    data = make_slice(args.work / "data")
    table = verbs(data)
    chosen = args.verbs.split(",") if args.verbs else list(table)
    faults = args.faults.split(",")
    outcomes: List[Outcome] = []
    number = 0

    def new_case():
        nonlocal number
        number += 1
        case, home = args.work / f"case-{number:03d}", args.work / f"home-{number:03d}"
        case.mkdir()
        return case, home

    def record(verb, fault, detail, problems):
        held = not problems
        outcomes.append(Outcome(verb.name, fault, detail, held, "; ".join(problems)))
        print(f"{'held' if held else 'FAILED':<7}{verb.name:<11}{fault:<9}{detail:<34}{'; '.join(problems)}",
              flush=True)

    def finish(verb, case, home, reference, problems):
        code, err, _ = run_cli(verb.arguments(data, case), case, home)
        if code != 0:
            problems.append(f"rerun exit {code}: {err.strip().splitlines()[-1:] if err.strip() else ''}")
        else:
            differs = same_outputs(verb, case, reference)
            if differs:
                problems.append(differs)
        stray = leftovers(case, home)
        if stray:
            problems.append(f"left {stray[:3]}")
        if "Traceback" in err:
            problems.append("traceback on rerun")
        return code, err

    references: Dict[str, tuple] = {}

    def reference_of(verb):
        """The uninterrupted run of `verb` in a fresh cache (once): (its folder, its cache, seconds)."""
        if verb.name not in references:
            reference, home = args.work / f"reference-{verb.name}", args.work / f"reference-home-{verb.name}"
            reference.mkdir()
            code, err, seconds = run_cli(verb.arguments(data, reference), reference, home)
            if code != 0:
                raise SystemExit(f"reference run of {verb.name} failed (exit {code}):\n{err[-3000:]}")
            print(f"reference {verb.name}: {seconds:.1f} s", flush=True)
            references[verb.name] = (reference, home, seconds)
        return references[verb.name]

    def at_once(jobs, home):
        """Start every (verb, folder) of `jobs` at once on cache `home`; the problems with their outcomes."""
        env = dict(os.environ, DUPMAE_EVAL_HOME=str(home))
        processes = [subprocess.Popen([sys.executable, "-m", "dupmae_eval", *job.arguments(data, folder)],
                                      cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for job, folder in jobs]
        problems = []
        for process, (job, folder) in zip(processes, jobs):
            _, err = process.communicate(timeout=900)
            if process.returncode != 0:
                problems.append(f"{job.name} exit {process.returncode}: {err.strip().splitlines()[-1:]}")
            else:
                differs = same_outputs(job, folder, reference_of(job)[0])
                if differs:
                    problems.append(f"{job.name}: {differs}")
        stray = leftovers(*(folder for _, folder in jobs), home)
        if stray:
            problems.append(f"left {stray[:3]}")
        return problems

    for name in chosen:
        verb = table[name]
        reference, reference_home, seconds = reference_of(verb)
        if "kill" in faults:
            for signame, sent in SIGNALS.items():
                for _ in range(args.kills):
                    case, home = new_case()
                    delay = rng.uniform(0.2, seconds * 1.1)
                    code, err, _ = run_cli(verb.arguments(data, case), case, home, signal_after=delay, sent=sent)
                    problems = []
                    expected = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, "SIGTERM": 143}[signame]
                    finished = same_outputs(verb, case, reference) is None
                    if code == 0:
                        detail = f"{signame} at {delay:.1f} s: finished first"
                    elif code == -signal.SIGTERM and finished:
                        # the work was done and written; the signal came while the interpreter shut down, after
                        # Python had handed signals back to their default action: the process ends by it
                        detail = f"{signame} at {delay:.1f} s: finished, then ended while exiting"
                    else:
                        detail = f"{signame} at {delay:.1f} s: exit {code}"
                        if code != expected:
                            problems.append(f"exit {code}, not {expected}: {err.strip().splitlines()[-1:]}")
                        elif signame != "SIGKILL" and not one_line(err, "dupmae-eval: " + (
                                "interrupted" if signame == "SIGINT" else "terminated")):
                            problems.append(f"not one line: {err.strip()[-300:]!r}")
                    if signame != "SIGKILL":
                        stray = leftovers(case, home)
                        if stray:
                            problems.append(f"interrupted run left {stray[:3]}")
                    finish(verb, case, home, reference, problems)
                    record(verb, "kill", detail, problems)
        if "write" in faults:
            written = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
            written += sum(p.stat().st_size for p in reference_home.rglob("*") if p.is_file())
            for _ in range(args.writes):
                case, home = new_case()
                limit = rng.randint(0, max(1, min(written, 4 << 20)))
                code, err, _ = run_cli(verb.arguments(data, case), case, home, limit=limit)
                problems = []
                detail = f"file-size limit {limit:,} B: exit {code}"
                if code == 0:
                    detail = f"file-size limit {limit:,} B: fit"
                elif code != 2 or not one_line(err, "dupmae-eval: error:"):
                    problems.append(f"exit {code}, not one line and 2: {err.strip()[-300:]!r}")
                for output in verb.outputs:
                    path = case / output
                    if code != 0 and path.is_file() and path.read_bytes() != (reference / output).read_bytes():
                        problems.append(f"partial {output}")
                finish(verb, case, home, reference, problems)
                record(verb, "write", detail, problems)
        if "corrupt" in faults:
            plan = [(pattern, damage) for pattern in verb.cache_globs for damage in ("truncate", "flip", "remove")]
            if args.corruptions is not None:
                plan = rng.sample(plan, min(args.corruptions, len(plan)))
            for pattern, damage in plan:
                case, home = new_case()
                code, err, _ = run_cli(verb.arguments(data, case), case, home)
                targets = sorted(p for p in home.glob(pattern) if p.is_file() and p.stat().st_size > 0
                                 and p.name != ".contents.json")
                if code != 0 or not targets:
                    record(verb, "corrupt", f"{pattern} {damage}", [f"no artefact ({code})"])
                    continue
                target = rng.choice(targets)
                for output in verb.outputs:
                    (case / output).unlink(missing_ok=True)
                if damage == "truncate":
                    with open(target, "r+b") as handle:
                        handle.truncate(target.stat().st_size // 2)
                elif damage == "flip":
                    with open(target, "r+b") as handle:
                        handle.seek(target.stat().st_size // 2)
                        byte = handle.read(1)
                        handle.seek(target.stat().st_size // 2)
                        handle.write(bytes([byte[0] ^ 0xFF]))
                else:
                    target.unlink()
                problems: List[str] = []
                code, err = finish(verb, case, home, reference, problems)
                # a removed manifest or meta.json marks an unfinished entry, resumed or rebuilt: nothing to report
                if code == 0 and "again" not in err and not (damage == "remove" and target.name in ("manifest.json", "meta.json")):
                    problems.append("damage not reported")
                record(verb, "corrupt", f"{target.name} {damage}", problems)
        if "together" in faults:
            case, home = new_case()
            other = args.work / f"case-{number:03d}-twin"
            other.mkdir()
            record(verb, "together", "two identical runs on one cache", at_once([(verb, case), (verb, other)], home))
        if "mixed" in faults and name in PARTNERS:
            partner = table[PARTNERS[name]]
            reference_of(partner)
            case, home = new_case()
            other = args.work / f"case-{number:03d}-{partner.name}"
            other.mkdir()
            record(verb, "mixed", f"beside {partner.name}", at_once([(verb, case), (partner, other)],
                                                                                 home))

    print()
    print("| verb | fault | cases | outcomes | held |")
    print("|---|---|---|---|---|")
    for name in chosen:
        for fault in faults:
            cases = [o for o in outcomes if o.verb == name and o.fault == fault]
            if not cases:
                continue
            kinds: Dict[str, int] = {}
            for case in cases:
                key = (case.detail.split(": ")[-1] if ": " in case.detail else case.detail if case.fault == "mixed"
                       else case.detail.split(" ")[-1])
                kinds[key] = kinds.get(key, 0) + 1
            summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            held = sum(case.held for case in cases)
            print(f"| {name} | {fault} | {len(cases)} | {summary} | {held} of {len(cases)} |")
    failed = [o for o in outcomes if not o.held]
    print(f"\n{len(outcomes) - len(failed)} held, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
