"""The toolkit installed from a wheel, outside the checkout: shipped judgments, suites and the bundled
SciFact come from the installed package, so offline evaluation and the demo's BM25 step work."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO

pytestmark = [pytest.mark.java, pytest.mark.slow]


def test_a_wheel_installed_outside_the_checkout_evaluates_and_runs_bm25(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("dupmae_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("dupmae_eval/resources/qrels/qrels.beir-v1.0.0-scifact.test.txt.gz",
                    "dupmae_eval/resources/configs/beir.yaml", "dupmae_eval/resources/configs/demo.yaml",
                    "dupmae_eval/resources/data/scifact/corpus.jsonl.gz", "dupmae_eval/training/ot_pool.py"):
        assert shipped in names, shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True)
    # the dependencies (torch, Pyserini, ...) from this environment, as a plain path: its .pth files (the
    # checkout's editable install among them) are not read, so `dupmae_eval` can only come from the wheel
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (venv / site.split(str(venv))[-1].lstrip("/")).joinpath("dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    environment = {**os.environ, "DUPMAE_EVAL_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}

    def run(*arguments):
        done = subprocess.run([str(python), *arguments], cwd=work, capture_output=True, text=True, env=environment,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = run("-c", "import dupmae_eval; print(dupmae_eval.__file__)")
    assert where.startswith(str(venv)) and not where.startswith(str(REPO))
    # the demo's BM25 step on the bundled SciFact, and `eval` against the registry name's shipped judgments
    printed = run("-m", "dupmae_eval", "bm25", "--dataset", "scifact", "--output", "bm25.trec", "--eval")
    assert printed.splitlines()[0] == "nDCG@10\t0.6789"
    printed = run("-m", "dupmae_eval", "eval", "scifact", "bm25.trec")
    assert printed.splitlines() == ["nDCG@10\t0.6789", "R@100\t0.9253", "R@1000\t0.9767"]
    printed = run("-m", "dupmae_eval", "reproduce", "demo", "--dry-run", "--runs", "runs")
    assert "bm25-flat" in printed and "dupmae-reading" in printed
