"""The memory soak script's arithmetic, its corpus, and its quick mode end to end (structure only: no
timing or memory threshold is asserted here; the full run's numbers are in docs/memory-soak-output.txt)."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from conftest import REPO


def _soak():
    spec = importlib.util.spec_from_file_location("memory_soak", REPO / "scripts" / "memory_soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slope_matches_polyfit():
    soak = _soak()
    passages = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
    rss = [1_146.0, 1_230.5, 1_317.0, 1_399.0, 1_488.5, 1_570.0]
    expected = np.polyfit(passages, rss, 1)[0] * 10_000
    assert soak.slope_per_10k(passages, rss) == pytest.approx(expected, rel=1e-9)
    assert soak.slope_per_10k([1, 2, 3], [5.0, 5.0, 5.0]) == 0.0
    assert soak.slope_per_10k([1], [5.0]) == 0.0


def test_summary_skips_the_first_shards():
    soak = _soak()
    ends = [10_000, 20_000, 30_000, 40_000]
    rss = [700.0, 1_000.0, 1_050.0, 950.0]   # level is the RSS after shard 2
    summary = soak.summarize(ends, rss)
    assert summary["level_mb"] == 1_000.0
    assert summary["max_dev_pct"] == pytest.approx(5.0)
    assert summary["slope_mb_per_10k"] == pytest.approx(np.polyfit(ends[1:], rss[1:], 1)[0] * 10_000)


def test_corpus_is_real_then_shuffled_and_deterministic(tmp_path):
    soak = _soak()
    real = [line.split("\t", 1) for line in soak.sample_lines(soak.SAMPLE) if line.strip()]
    first = soak.build_corpus(tmp_path / "a", len(real) + 3)
    second = soak.build_corpus(tmp_path / "b", len(real) + 3)
    lines = (first / "collection.tsv").read_text(encoding="utf-8").splitlines()
    assert lines == (second / "collection.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(real) + 3
    assert lines[0].split("\t", 1) == real[0]
    for i in range(3):
        pid, text = lines[len(real) + i].split("\t", 1)
        assert pid == f"x{i}"
        assert sorted(text.split()) == sorted(real[i][1].split())
    assert (first / "queries.dl19-passage.tsv").is_file()


def test_memory_release_is_switchable(monkeypatch):
    from dupmae_eval.runtime import memory

    monkeypatch.setenv(memory.ENV, "0")
    assert memory.release() is False
    monkeypatch.setenv(memory.ENV, "1")
    assert isinstance(memory.release(), bool)   # False where the C library is not glibc
    assert memory.resident_mb() > 0


def test_quick_mode_prints_both_sides_and_slopes(tmp_path, capsys):
    soak = _soak()
    assert soak.main(["--quick", "--passages", "300", "--paths", "exact", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for side in ("old", "new"):
        assert re.search(rf"\[encode {side}\] guard=\d passages=300 shards=3 .*passages/s=[0-9.]+", out)
        assert re.search(rf"\[encode {side}\] rss at shard ends \(MB\): (\d[\d,]* ){{2}}\d", out)
        assert re.search(rf"\[encode {side}\] slope after shard 2: [+-][0-9.]+ MB per 10,000 passages", out)
        assert re.search(rf"\[exact {side}\] guard=\d points=50 ", out)
    assert re.search(r"\[encode new/old\] speed [0-9.]+x", out)
    assert "cut into 50 shards" in out
