"""`--help` and `datasets` say what a user needs: every flag's default, what its value is, every split.

- Every optional flag of every verb has a help line, and the line shows its default: the value itself for a
  flag with one (0.9, runs, nDCG@10, 10,000), `(default: off)` for a switch, words where something else
  decides (the dataset's split, all cores), and for the training settings the settings' own default after
  "from the recipe, else". No flag's value is the catch-all VALUE; boolean settings are switches, and the
  form they had before (`--include-sep false`) still parses to the same value.
- `datasets` lists every split of every registry dataset (MS MARCO's dev-subset, dl19 and dl20 among them)
  with its measures and judged queries, and says where each dataset's data is: checked against the
  registry's own split lists and a cache, a mapped folder and the bundled SciFact set up here.

Fast: in process, through `cli.build_parser()` and `cli.main`; nothing is downloaded or run.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields

import pytest

from conftest import TEST_DATA
from dupmae_eval import cli
from dupmae_eval.data import datasets as registry


def _verbs():
    parser = cli.build_parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return sub.choices


def _help_line(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as `--help` prints it (defaults filled in), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _settings_defaults(verb: str) -> dict:
    from dupmae_eval.training.pretrain import PretrainSettings
    from dupmae_eval.training.settings import FinetuneSettings

    table = {"finetune": FinetuneSettings, "pretrain": PretrainSettings}.get(verb)
    return {field.name: field.default for field in fields(table)} if table else {}


def _spelt(value) -> set:
    """The ways a help line may write a default value."""
    if isinstance(value, bool):
        return {"on" if value else "off"}
    if value is None:
        return {"none"}
    spellings = {str(value)}
    if isinstance(value, int):
        spellings.add(f"{value:,}")
    if isinstance(value, float):
        spellings |= {f"{value:g}", f"{value:,g}"}
    return spellings


def _optionals():
    for verb, parser in _verbs().items():
        for action in parser._actions:
            if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield verb, parser, action


def test_every_verb_says_what_it_does_under_its_usage(capsys):
    """`dupmae-eval VERB --help` prints a description paragraph between the usage and the arguments."""
    verbs = _verbs()
    assert {"bm25", "run", "encode", "eval", "table", "report", "reproduce", "fuse", "datasets", "finetune",
            "pretrain"} <= set(verbs)
    for verb, parser in verbs.items():
        text = parser.format_help()
        between = text.split("\n\n")[1]               # usage, then the description, then the arguments
        assert parser.description and not between.startswith(("positional arguments", "options")), \
            f"{verb} --help has no description"


def test_every_flag_has_a_help_line_with_its_default():
    checked = 0
    for verb, parser, action in _optionals():
        flag = f"{verb} {action.option_strings[0]}"
        text = _help_line(parser, action)
        assert text, f"{flag}: no help line"
        if action.required:
            continue
        assert "default" in text, f"{flag}: the help names no default: {text!r}"
        settings = _settings_defaults(verb)
        tail = text[text.index("default"):]
        if action.dest in settings and action.default is None:
            wanted = {f"(default: from the recipe, else {spelling})" for spelling in _spelt(settings[action.dest])}
            assert any(each in text for each in wanted), f"{flag}: {text!r} lacks one of {wanted}"
        elif isinstance(action, argparse._StoreTrueAction):
            assert "off" in tail or "removed" in tail, f"{flag}: {text!r}"
        elif action.default not in (None, []):
            assert any(spelling in tail for spelling in _spelt(action.default)), \
                f"{flag}: default {action.default!r} not shown in {text!r}"
        checked += 1
    assert checked > 100          # bm25, run, encode, reproduce, table, eval, datasets, demo, finetune, ...


def test_no_flag_takes_a_catch_all_value_and_booleans_are_switches():
    for verb, parser, action in _optionals():
        flag = f"{verb} {action.option_strings[0]}"
        assert action.metavar != "VALUE", flag
        default = _settings_defaults(verb).get(action.dest)
        if isinstance(default, bool):
            assert isinstance(action, argparse.BooleanOptionalAction), f"{flag}: a boolean setting, not a switch"
    for verb, parser in _verbs().items():          # as printed: no `--flag VALUE` in the usage or the list
        assert not re.search(r"--[\w-]+[ =]\[?VALUE\b", parser.format_help()), verb


@pytest.mark.parametrize("given, include_sep, compile_", [
    ([], None, None), (["--no-include-sep"], False, None), (["--include-sep", "false"], False, None),
    (["--include-sep=no"], False, None), (["--include-sep"], True, None), (["--compile", "true"], None, True),
    (["--compile", "1", "--no-compile"], None, False)])
def test_boolean_settings_parse_as_switches_and_as_before(given, include_sep, compile_):
    args = cli.build_parser().parse_args(["finetune", "--model", "m", "--dataset", "d", "--output", "o", *given])
    assert (args.include_sep, args.compile) == (include_sep, compile_)


def test_a_switch_given_a_word_that_is_not_true_or_false_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["pretrain", "--model", "m", "--corpus", "c", "--output", "o",
                                       "--bow-normalize=maybe"])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--bow-normalize: 'maybe' is not true or false" in error


def test_the_settings_choices_shown_are_the_registries():
    from dupmae_eval.encoding.checkpoint import ACTIVATIONS
    from dupmae_eval.runtime.heap import HEAPS
    from dupmae_eval.training.negatives import NEGATIVE_SOURCES
    from dupmae_eval.training.pretrain_data import SEQUENCE_LAYOUTS
    from dupmae_eval.training.pretrain_model import OBJECTIVES
    from dupmae_eval.training.recompute import RECOMPUTE
    from dupmae_eval.training.settings import NEGATIVE_SOURCES as NEGATIVES_CHECKED

    registries = {"activation": ACTIVATIONS, "negatives": NEGATIVE_SOURCES, "recompute": RECOMPUTE,
                  "heap": HEAPS, "objective": OBJECTIVES, "sequences": SEQUENCE_LAYOUTS}
    for name, values in registries.items():
        assert set(cli.SETTING_CHOICES[name]) == set(values), name
    assert set(NEGATIVES_CHECKED) == set(NEGATIVE_SOURCES)
    from dupmae_eval.encoding.precision import PRECISIONS

    assert set(cli.SETTING_CHOICES["precision"]) == set(PRECISIONS)


# --------------------------------------------------------------------------- datasets


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A cache holding fiqa, nfcorpus mapped to a local folder, an unknown name mapped too."""
    monkeypatch.setenv("DUPMAE_EVAL_HOME", str(tmp_path))
    monkeypatch.setenv("DUPMAE_EVAL_DATA", f"nfcorpus={TEST_DATA / 'vaswani'}:vaswani={TEST_DATA / 'vaswani'}")
    monkeypatch.setattr(registry, "LOCAL_FOLDERS", {})
    (tmp_path / "datasets" / "fiqa").mkdir(parents=True)
    return tmp_path


def _expected_data(name: str) -> str:
    if name in ("nfcorpus", "vaswani"):
        return "mapped"
    if name == "scifact":                                     # bundled with the package
        return "bundled"
    if name == "fiqa":
        return "cached"
    return "downloadable" if registry.REGISTRY[name].public else "restricted"


def _table(text: str):
    body, legend = text.split("\n\n", 1)
    lines = body.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["dataset", "split", "passages", "queries", "data", "measures"]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]], legend


def test_datasets_lists_every_split_its_measures_and_where_the_data_is(machine, capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    rows, legend = _table(out)
    seen = {(row[0], row[1].rstrip("*")): row for row in rows}
    expected = {(name, split) for name, info in registry.REGISTRY.items() for split in info.measures}
    assert set(seen) == expected | {("vaswani", "test")}
    assert {("msmarco-passage", "dev-subset"), ("msmarco-passage", "dl19"), ("msmarco-passage", "dl20")} <= set(seen)
    for (name, split), (_, shown_split, passages, queries, data, measures) in seen.items():
        assert data == _expected_data(name), (name, data)
        if name in registry.REGISTRY:
            info = registry.REGISTRY[name]
            assert measures == " ".join(info.measures[split])
            assert shown_split.endswith("*") == (split == info.default_split)
    words = {row[4] for row in rows}
    assert words == {"bundled", "cached", "mapped", "downloadable", "restricted"}
    for word in words:                                      # each word it uses, it explains
        assert re.search(rf"^\s+{word}\s+\S", legend, re.M), word
    # sizes: the published corpus and the judged queries (TREC DL 2019: 43, 2020: 54; the dev subset 6,980)
    assert seen["msmarco-passage", "dl19"][2:4] == ["8,841,823", "43"]
    assert seen["msmarco-passage", "dl20"][3] == "54" and seen["msmarco-passage", "dev-subset"][3] == "6,980"
    assert seen["scifact", "test"][2:4] == ["5,183", "300"]


def test_datasets_json_holds_the_same_rows(machine, capsys):
    assert cli.main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {(row["dataset"], row["split"]): row for row in rows}
    assert by_key["msmarco-passage", "dl20"]["measures"] == list(registry.REGISTRY["msmarco-passage"].measures["dl20"])
    assert by_key["nfcorpus", "test"]["data"] == "mapped"
    assert by_key["nfcorpus", "test"]["folder"] == str(TEST_DATA / "vaswani")
    assert by_key["bioasq", "test"]["data"] == "restricted" and by_key["bioasq", "test"]["url"] is None
