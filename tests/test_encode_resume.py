"""Sharded encoding: killed with SIGKILL mid-way it resumes from the last complete shard and ends
byte-identical to an uninterrupted run; torchrun with 2 CPU processes gives the same vectors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TEST_DATA



@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 3,000 Vaswani abstracts (BEIR layout): 12 shards of 250."""
    import gzip
    import shutil

    folder = tmp_path_factory.mktemp("vaswani-3000")
    with gzip.open(TEST_DATA / "vaswani" / "corpus.jsonl.gz", "rt") as source:
        (folder / "corpus.jsonl").write_text("".join(line for _, line in zip(range(3000), source)))
    shutil.copy(TEST_DATA / "vaswani" / "queries.jsonl", folder / "queries.jsonl")
    shutil.copytree(TEST_DATA / "vaswani" / "qrels", folder / "qrels")
    return folder


def _encode(home: Path, corpus: Path, launcher=(sys.executable,), wait=True):
    command = ["-m", "dupmae_eval", "encode", "--dataset", str(corpus), "--model", "package:cognition/model",
               "--encoder", "splade", "--shard-size", "250", "--max-passage-length", "64"]
    env = {**os.environ, "DUPMAE_EVAL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([*launcher, *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=REPO / "tests")
    if wait:
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
        return Path(out.strip().splitlines()[-1])
    return process


def _shards(folder: Path):
    return sorted(folder.glob("shard-*.npz"))


def test_kill_minus_nine_then_resume_is_identical(tmp_path, corpus):
    reference = _encode(tmp_path / "uninterrupted", corpus)
    process = _encode(tmp_path / "killed", corpus, wait=False)
    folder = tmp_path / "killed" / "encodings" / reference.name
    deadline = time.time() + 600
    while len(_shards(folder)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {path.name: path.stat().st_mtime_ns for path in _shards(folder)}
    assert 3 <= len(finished) < 12, "the kill should land mid-way"
    assert not (folder / "manifest.json").exists()
    assert _encode(tmp_path / "killed", corpus) == folder
    for name, mtime in finished.items():
        assert (folder / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    assert [p.name for p in _shards(folder)] == [p.name for p in _shards(reference)]
    for ours, theirs in zip(_shards(folder), _shards(reference)):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name
    # a byte flipped in a finished shard is caught by the manifest's checksums: that shard alone is encoded
    # again (one line), and the encoding is the reference's again
    damaged = _shards(folder)[5]
    blob = bytearray(damaged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    process = _encode(tmp_path / "killed", corpus, wait=False)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0 and f"1 shard(s) damaged or missing ({damaged.name})" in err, err[-2000:]
    assert damaged.read_bytes() == (reference / damaged.name).read_bytes()
    assert (folder / "manifest.json").is_file()
    # a manifest without checksums (an older version's): its shards are hashed into it when all are there,
    # and a missing one is still caught
    import json

    from dupmae_eval.encoding.corpus import _clear_damaged_shards

    manifest = folder / "manifest.json"
    whole = json.loads(manifest.read_text())
    older = {k: v for k, v in whole.items() if k != "shard_sha256"}
    manifest.write_text(json.dumps(older))
    assert _clear_damaged_shards(folder) is False and json.loads(manifest.read_text()) == whole
    manifest.write_text(json.dumps(older))
    _shards(folder)[2].unlink()
    assert _clear_damaged_shards(folder) is True and not manifest.exists()


def test_torchrun_two_cpu_processes_match_one(tmp_path, corpus):
    single = _encode(tmp_path / "single", corpus)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2")
    double = _encode(tmp_path / "double", corpus, launcher=launcher)
    assert double.name == single.name and (double / "manifest.json").is_file()
    assert [p.name for p in _shards(double)] == [p.name for p in _shards(single)]
    for ours, theirs in zip(_shards(double), _shards(single)):
        a, b = np.load(ours), np.load(theirs)
        assert list(a["docids"]) == list(b["docids"])
        np.testing.assert_array_equal(a["indices"], b["indices"])
        np.testing.assert_allclose(a["data"], b["data"], atol=1e-5)
