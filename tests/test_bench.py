"""The benchmark script's quick mode runs end to end (within CI's time) and its agreement checks hold.
Speed is reported by the script side by side, never asserted here."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.java]


def test_quick_benchmark_runs_and_outputs_agree(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick"], capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for case in range(1, 6):
        assert f"Case {case} —" in out
    assert "same non-zero terms: True" in out
    assert float(re.search(r"largest weight difference ([0-9.e+-]+)", out).group(1)) <= 1e-4
    cosines = [float(c) for c in re.findall(r"lowest cosine ([0-9.]+)", out)]
    assert len(cosines) == 2 and min(cosines) >= 0.9999
    assert "identical top-10 for 100.0% of queries" in out
    assert re.search(r"ours-eval .* heavy modules loaded: \[\]", out)
