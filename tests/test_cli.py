"""The command line itself: help, version, cheap start-up paths."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, TEST_DATA

PROBE = """
import sys
from dupmae_eval.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("jnius", "torch", "pyserini", "transformers", "faiss") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def _probe(*args):
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO / "tests",
                          timeout=120)


def test_eval_starts_no_jvm_and_imports_no_torch():
    done = _probe("eval", str(TEST_DATA / "trec_eval" / "qrels.test"), str(TEST_DATA / "trec_eval" / "results.test"),
                  "AP", "P@10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["AP\t0.1785", "P@10\t0.3000"]
    assert "HEAVY=\n" in done.stderr + "\n"


def test_datasets_lists_the_registry():
    done = _probe("datasets")
    assert done.returncode == 0
    table = done.stdout.split("\n\n")[0].splitlines()[1:]          # one row per dataset and split, then a legend
    names = sorted({line.split()[0] for line in table})
    assert "scifact" in names and "msmarco-passage" in names and len(names) == 17 + 12 + 1
    assert "HEAVY=\n" in done.stderr + "\n"


def test_help_lists_the_verbs():
    done = subprocess.run([sys.executable, "-m", "dupmae_eval.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for verb in ("bm25", "eval", "datasets", "demo"):
        assert verb in done.stdout


PARSE_PROBE = PROBE.replace("code = main(sys.argv[1:])", """try:
    code = main(sys.argv[1:])
except SystemExit as exc:          # argparse's refusal of a flag
    code = exc.code""")


def test_a_run_tag_with_whitespace_is_refused_when_parsed_before_any_index_or_encoding(tmp_path):
    """--tag is the TREC run's last column: a tag with a space or a tab is refused in one line naming the flag,
    with no JVM and no torch loaded (nothing indexed or encoded), and no run written."""
    for verb in (["bm25", "--dataset", "scifact"],
                 ["run", "--dataset", "scifact", "--model", "package:cognition/model", "--encoder", "splade",
                  "--retrieval", "impact"]):
        for tag in ("a b", "a\tb"):
            done = subprocess.run([sys.executable, "-c", PARSE_PROBE, *verb, "--output", str(tmp_path / "run.trec"),
                                   "--tag", tag], capture_output=True, text=True, cwd=REPO / "tests", timeout=120)
            assert done.returncode == 2
            lines = done.stderr.splitlines()
            assert lines[0] == (f"dupmae-eval: error: argument --tag: {tag!r} must not contain whitespace (it is "
                                f"the run's tag, the TREC file's last column) (see `dupmae-eval {verb[0]} --help`)")
            assert lines[1:] == ["HEAVY="] and not (tmp_path / "run.trec").exists()


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`dupmae-eval eval ... | head`: the reader closes the pipe first; the command ends as a piped Unix tool
    does (status 141, 128 + SIGPIPE) with nothing on stderr, not with a "free the space" error."""
    for args in (["datasets"], ["eval", str(TEST_DATA / "trec_eval" / "qrels.test"),
                                str(TEST_DATA / "trec_eval" / "results.test"), "P@10", "--per-query"]):
        process = subprocess.Popen([sys.executable, "-m", "dupmae_eval", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=REPO / "tests")
        process.stdout.close()                      # the reader is gone before the first line is written
        err = process.stderr.read().decode()
        assert (process.wait(timeout=120), err) == (141, ""), args
