"""Ctrl-C and SIGTERM while Lucene indexes (a Java call, which used to hold the signal until it returned, or
let the JVM end the process without a word): one line, exit 130 or 143 within a second, no scratch or empty
cache folder left, no JVM crash file in the working folder; the same command then finishes normally."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.java]


@pytest.mark.parametrize("sent, code, word", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_during_indexing_gives_one_line_and_leaves_nothing(sent, code, word, small_scifact, tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, DUPMAE_EVAL_HOME=str(home))
    command = [sys.executable, "-m", "dupmae_eval", "bm25", "--dataset", str(small_scifact), "--output",
               str(tmp_path / "run.trec")]
    # as from a terminal: SIGINT at its default action in the child (an earlier test of this session may have
    # left it ignored in pytest's process, and children inherit an ignored signal)
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not glob.glob(f"{home}/indexes/**/.*building*/index/*", recursive=True):   # Lucene is writing
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(0.02)
    sent_at = time.time()
    process.send_signal(sent)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and time.time() - sent_at < 5
    lines = [line for line in err.splitlines() if line.startswith("dupmae-eval")]
    assert len(lines) == 1 and lines[0].startswith(f"dupmae-eval: {word}") and "Traceback" not in err
    assert not glob.glob(f"{home}/**/*building*", recursive=True) and not (home / "indexes").exists()
    assert not (tmp_path / "run.trec").exists() and not glob.glob(str(tmp_path / "hs_err*"))
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "run.trec").stat().st_size > 0, done.stderr[-2000:]


def test_fault_harness_sample():
    """A sampled subset of scripts/fault_harness.py (its full table is in docs/robustness.md): BM25 under a
    file-size limit (one line, exit 2, nothing partial, then the reference's run) and with a Lucene file of its
    cached index damaged (noticed, rebuilt, the reference's run)."""
    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fault_harness.py"), "--verbs", "bm25",
                           "--faults", "write,corrupt", "--writes", "1", "--corruptions", "1", "--seed", "3"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "| bm25 | write | 1 |" in done.stdout and "| bm25 | corrupt | 1 |" in done.stdout
    assert done.stdout.rstrip().endswith("2 held, 0 failed")
