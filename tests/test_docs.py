"""The user documentation cannot drift from the toolkit.

- Every relative link in README.md and docs/*.md resolves: the file exists and, when the link names an
  anchor, the target has a heading with that anchor (GitHub's rule for turning a heading into one).
- Every `dupmae-eval VERB ...` command line in a code block (fenced or indented) parses with the CLI's own
  argparse parser (`dupmae_eval.cli.build_parser`): parsed, never run. A parse error fails the test,
  naming the document and line.
- No issue numbers and no narration of how the work was organised: the check of `grep -rniE
  'issue [0-9]+|lease' README.md docs/`, with one exception: the word "release", which is the name of a
  `--heap` policy and appears in the raw output of the programs that measured it.

Fast (well under a second): no verb runs, nothing heavy is imported beyond what `--help` imports.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
import unicodedata
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------- reading markdown


def code_lines(text: str) -> List[bool]:
    """For each line, whether it lies in a code block: between ``` or ~~~ fences, or indented by four
    spaces (or a tab) after a blank line, outside a list item's continuation."""
    lines = text.splitlines()
    flags = [False] * len(lines)
    fence = None
    in_indented = False
    previous_blank = True
    for i, line in enumerate(lines):
        stripped = line.strip()
        if fence is not None:
            flags[i] = True
            if stripped.startswith(fence):
                fence = None
            previous_blank = False
            continue
        if stripped.startswith("```") or stripped.startswith("~~~"):
            fence = stripped[:3]
            flags[i] = True
            in_indented = False
            previous_blank = False
            continue
        indented = line.startswith("    ") or line.startswith("\t")
        if not stripped:
            flags[i] = in_indented
            previous_blank = True
            continue
        if indented and (in_indented or previous_blank):
            in_indented = True
            flags[i] = True
        else:
            in_indented = False
        previous_blank = False
    return flags


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markdown marks dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # links: their text
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = []
    for char in text:
        if char in " -_" or unicodedata.category(char)[0] in "LN":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set:
    text = path.read_text(encoding="utf-8")
    in_code = code_lines(text)
    seen: Dict[str, int] = {}
    result = set()
    for line, code in zip(text.splitlines(), in_code):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if code or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every markdown link outside code, inline code spans removed first."""
    text = path.read_text(encoding="utf-8")
    for number, (line, code) in enumerate(zip(text.splitlines(), code_lines(text)), start=1):
        if code:
            continue
        line = re.sub(r"`[^`]*`", "``", line)
        for match in LINK.finditer(line):
            yield number, match.group(1)


def commands(path: Path) -> Iterator[Tuple[int, str]]:
    """(first line number, command text) of every `dupmae-eval ...` line in a code block, with its `\\`
    continuation lines joined and a leading `$ ` prompt dropped."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    in_code = code_lines(text)
    i = 0
    while i < len(lines):
        if in_code[i]:
            stripped = lines[i].strip()
            if stripped.startswith("$ "):
                stripped = stripped[2:].lstrip()
            first = stripped.split(" ", 1)[0]
            if first == "dupmae-eval" or first.endswith("/dupmae-eval"):
                start = i
                parts = [stripped]
                while parts[-1].endswith("\\") and i + 1 < len(lines) and in_code[i + 1]:
                    parts[-1] = parts[-1][:-1]
                    i += 1
                    parts.append(lines[i].strip())
                yield start + 1, " ".join(parts)
        i += 1


# --------------------------------------------------------------------------- the tests


def test_the_documents_exist():
    names = {_rel(path) for path in DOCS}
    for wanted in ("README.md", "docs/getting-started.md", "docs/commands.md", "docs/reproducing.md",
                   "docs/training.md", "docs/performance.md", "docs/extending.md", "docs/design.md",
                   "docs/robustness.md"):
        assert wanted in names, f"{wanted} is missing"


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    code = [line.strip() for line in lines[:6] if line.startswith("    ")]
    assert code[:2] and code[0].startswith("make demo") and code[1].startswith("make test"), code
    assert len(lines) <= 160, f"README.md has {len(lines)} lines"


def test_every_relative_link_resolves():
    problems = []
    for doc in DOCS:
        for number, target in links(doc):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            destination = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{_rel(doc)}:{number}: link {target!r}"
            if not destination.exists():
                problems.append(f"{where}: {file_part} does not exist")
                continue
            if anchor:
                if destination.suffix != ".md":
                    problems.append(f"{where}: an anchor into a file that is not markdown")
                elif anchor not in anchors(destination):
                    problems.append(f"{where}: no heading with anchor #{anchor} in {_rel(destination)}")
    assert not problems, "\n".join(problems)


def test_links_are_found():
    """The link reader itself: a broken link would otherwise pass by not being seen."""
    readme_links = [target for _, target in links(ROOT / "README.md")]
    assert any(target.startswith("docs/") for target in readme_links), readme_links


def test_slugs_follow_github():
    assert slug("Memory over long runs (`scripts/memory_soak.py`)") == "memory-over-long-runs-scriptsmemory_soakpy"
    assert slug("On a GPU (`scripts/gpu_check.py`, NVIDIA H200)") == "on-a-gpu-scriptsgpu_checkpy-nvidia-h200"
    assert slug("bf16 on the CPU (`--precision bf16`)") == "bf16-on-the-cpu---precision-bf16"


def _syntax_only_device(value) -> str:
    """`--device` as the docs may write it on any machine: the CLI also refuses `cuda` where torch sees no
    GPU, which says nothing about the command line's spelling."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", str(value)):
        raise argparse.ArgumentTypeError(f"{value!r} is not cpu, cuda or cuda:N")
    return str(value)


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _subparsers(child)


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    from dupmae_eval.cli import build_parser

    parser = build_parser()
    for each in _subparsers(parser):
        for action in each._actions:
            if getattr(action.type, "__name__", "") == "device_value":
                action.type = _syntax_only_device
    return parser


def _parse(argv: List[str]) -> str:
    """'' when the CLI's parser accepts argv, else its error message."""
    parser = _parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as stop:
            if stop.code not in (0, None):
                return err.getvalue().strip() or f"exit {stop.code}"
    return ""


def test_every_command_in_the_docs_parses():
    seen = 0
    problems = []
    for doc in DOCS:
        for number, command in commands(doc):
            seen += 1
            try:
                words = shlex.split(command, comments=True)
            except ValueError as error:
                problems.append(f"{_rel(doc)}:{number}: cannot split {command!r}: {error}")
                continue
            message = _parse(words[1:])
            if message:
                problems.append(f"{_rel(doc)}:{number}: {command}\n    {message}")
    assert seen >= 20, f"only {seen} command lines found in the docs"
    assert not problems, "\n".join(problems)


def test_a_wrong_command_is_caught():
    """The check fails where it should: an unknown flag and a missing required one."""
    assert _parse(["bm25", "--dataset", "scifact", "--output", "r.trec"]) == ""
    assert "unrecognized" in _parse(["bm25", "--dataset", "scifact", "--output", "r.trec", "--nope"])
    assert "required" in _parse(["run", "--dataset", "scifact"])
    assert "cpu, cuda or cuda:N" in _parse(["encode", "--dataset", "scifact", "--model", "m", "--encoder", "cls",
                                            "--device", "gpu"])


def test_every_verb_is_documented_in_commands_md():
    verbs = next(action for action in _parser()._actions if action.dest == "verb").choices
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    documented = {command.split()[1] for _, command in commands(ROOT / "docs" / "commands.md")}
    for verb in verbs:
        assert re.search(rf"^## `?{re.escape(verb)}`?\b", text, re.M), f"commands.md has no section for {verb}"
        assert verb in documented, f"commands.md shows no `dupmae-eval {verb}` command"


NARRATION = re.compile(r"issue [0-9]+|lease", re.I)


def test_no_issue_numbers_and_no_narration():
    """`grep -rniE 'issue [0-9]+|lease' README.md docs/` finds nothing but the word "release"."""
    problems = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*"))]:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            for match in NARRATION.finditer(line):
                if match.group(0).lower() == "lease" and line[max(0, match.start() - 2):match.start()].lower() == "re":
                    continue
                problems.append(f"{_rel(path)}:{number}: {line.strip()[:120]}")
    assert not problems, "\n".join(problems)
    for phrase in ("this session", "second evening", "fifth lease", "issue #"):
        for doc in DOCS:
            assert phrase not in doc.read_text(encoding="utf-8").lower(), f"{_rel(doc)} says {phrase!r}"
