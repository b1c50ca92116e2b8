"""The package's layering (pyproject's `[tool.importlinter]` contracts) holds, and the check can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import dupmae_eval

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT), "--no-cache", str(config)], capture_output=True, text=True, env=env,
                          cwd=package_parent)


def test_the_stages_keep_their_layers():
    done = _lint(Path(dupmae_eval.__file__).resolve().parents[1], ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same contracts over a copy of the package in which the data stage imports the suite runner."""
    copy = tmp_path / "dupmae_eval"
    shutil.copytree(Path(dupmae_eval.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("resources", "__pycache__"))
    formats = copy / "data" / "formats.py"
    formats.write_text(formats.read_text() + "\nfrom dupmae_eval.evaluation import runner  # noqa\n")
    done = _lint(tmp_path, ROOT / "pyproject.toml")
    assert done.returncode != 0
    assert "dupmae_eval.data.formats -> dupmae_eval.evaluation.runner" in done.stdout
