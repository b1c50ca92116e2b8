"""Bad inputs to the running verbs: one `dupmae-eval: error:` line, exit 2, before any long work.

Each case is refused at parse time or before the corpus is read, so these tests run in-process and
take well under a second each; none indexes or encodes anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SPLADE_TINY, TEST_DATA
from dupmae_eval.cli import main
from dupmae_eval.evaluation.suites import load_suite
from dupmae_eval.errors import DupMAEEvalError

VASWANI = str(TEST_DATA / "vaswani")


def _refused(capsys, argv) -> str:
    """Run the CLI; assert exit 2 with exactly one error line and nothing on stdout; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:      # argparse refuses through exit()
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dupmae-eval: error: "), captured.err
    assert captured.out == ""
    return lines[0]


def _run(*extra, output="run.trec"):
    return ["run", "--dataset", VASWANI, "--model", str(SPLADE_TINY), "--encoder", "cls", "--retrieval", "dense",
            "--output", str(output), *extra]


def _bm25(*extra, output="run.trec"):
    return ["bm25", "--dataset", VASWANI, "--output", str(output), *extra]


def _encode(*extra):
    return ["encode", "--dataset", VASWANI, "--model", str(SPLADE_TINY), "--encoder", "cls", *extra]


@pytest.mark.parametrize("argv, flag, says", [
    (_bm25("--k1", "-1"), "--k1", "must be at least 0"),
    (_bm25("--b", "1.5"), "--b", "must be between 0 and 1"),
    (_bm25("--b", "-0.1"), "--b", "must be between 0 and 1"),
    (_bm25("--hits", "0"), "--hits", "must be at least 1"),
    (_bm25("--threads", "0"), "--threads", "must be at least 1"),
    (_run("--batch-size", "0"), "--batch-size", "must be at least 1"),
    (_run("--hits", "0"), "--hits", "must be at least 1"),
    (_run("--threads", "0"), "--threads", "must be at least 1"),
    (_run("--shard-size", "0"), "--shard-size", "must be at least 1"),
    (_run("--quantization-scale", "0"), "--quantization-scale", "must be above 0"),
    (_run("--topk", "0"), "--topk", "not a positive whole number or 'all'"),
    (_run("--max-query-length", "0"), "--max-query-length", "must be at least 1"),
    (_run("--max-passage-length", "-3"), "--max-passage-length", "must be at least 1"),
    (_run("--device", "gpu"), "--device", "not cpu, cuda or cuda:N"),
    (_encode("--shard-size", "0"), "--shard-size", "must be at least 1"),
    (_encode("--batch-size", "0"), "--batch-size", "must be at least 1"),
])
def test_a_flag_out_of_range_is_one_line_naming_the_flag(capsys, argv, flag, says):
    line = _refused(capsys, argv)
    assert f"argument {flag}: " in line and says in line


def test_cuda_is_refused_where_there_is_none(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = _refused(capsys, _run("--device", "cuda"))
    assert "argument --device: cuda: CUDA is not available" in line


@pytest.mark.parametrize("make_argv", [_bm25, _run])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, make_argv):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    line = _refused(capsys, make_argv(output=tmp_path / "a-folder"))
    assert f"--output {tmp_path / 'a-folder'}: is a folder" in line
    line = _refused(capsys, make_argv(output=tmp_path / "a-file" / "sub" / "run.trec"))
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in line
    # /sys refuses new files even to root, where permission bits would not
    line = _refused(capsys, make_argv(output="/sys/dupmae-eval-test/run.trec"))
    assert "cannot create a file in /sys" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]    # nothing written


def _model_copy(tmp_path: Path, config: str | None = None, weights: bytes | None = None) -> Path:
    """splade-tiny's files linked into a folder, with config.json or model.safetensors replaced."""
    folder = tmp_path / "model"
    folder.mkdir()
    for source in SPLADE_TINY.iterdir():
        target = folder / source.name
        if source.name == "config.json" and config is not None:
            target.write_text(config)
        elif source.name == "model.safetensors" and weights is not None:
            target.write_bytes(weights)
        else:
            target.symlink_to(source)
    return folder


def test_a_malformed_config_json_names_the_file_and_line(tmp_path, capsys):
    lines = (SPLADE_TINY / "config.json").read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if '"hidden_size":' in line)
    lines[number - 1] = lines[number - 1].replace(":", "", 1)       # a key without its colon
    folder = _model_copy(tmp_path, config="\n".join(lines))
    argv = _run(output=tmp_path / "run.trec")
    argv[argv.index("--model") + 1] = str(folder)
    line = _refused(capsys, argv)
    assert f"{folder / 'config.json'}:{number}: not valid JSON" in line
    assert not (tmp_path / "run.trec").exists()


def test_a_config_json_that_is_not_an_object_is_refused(tmp_path):
    from dupmae_eval.encoding.checkpoint import load_model

    folder = _model_copy(tmp_path, config="[1, 2]\n")
    with pytest.raises(DupMAEEvalError, match=r"config\.json:1: expected a JSON object"):
        load_model(str(folder))


def test_a_truncated_safetensors_file_is_one_line_naming_it(tmp_path, capsys):
    weights = (SPLADE_TINY / "model.safetensors").read_bytes()
    folder = _model_copy(tmp_path, weights=weights[: len(weights) // 2])
    argv = _run(output=tmp_path / "run.trec")
    argv[argv.index("--model") + 1] = str(folder)
    line = _refused(capsys, argv)
    assert f"{folder / 'model.safetensors'}: cannot read the weights" in line and "truncated" in line
    assert not (tmp_path / "run.trec").exists()


@pytest.mark.parametrize("record", ["finetune.json", "pretrain.json"])
def test_a_training_output_whose_run_has_not_finished_is_not_a_model(tmp_path, capsys, record):
    """While a training run is under way (or was stopped) its output folder can hold new weights beside an
    old head: `run` refuses it naming the record before any work; finished, the same folder loads."""
    from dupmae_eval.encoding.checkpoint import TRAINING_RECORDS, load_model
    from dupmae_eval.training import finetune, pretrain

    assert set(TRAINING_RECORDS) == {finetune.RECORD, pretrain.RECORD}
    folder = _model_copy(tmp_path)
    (folder / record).write_text(json.dumps({"model": "m", "data": "d", "finished": False}))
    argv = _run(output=tmp_path / "run.trec")
    argv[argv.index("--model") + 1] = str(folder)
    line = _refused(capsys, argv)
    assert f"{folder}: its {TRAINING_RECORDS[record]} run has not finished ({record} says so)" in line
    assert not (tmp_path / "run.trec").exists()
    (folder / record).write_text(json.dumps({"model": "m", "data": "d", "finished": True}))
    assert load_model(str(folder)).vocab_size == 30522


@pytest.mark.parametrize("key, value, says", [
    ("hits", 0, "hits: 0 must be at least 1"),
    ("batch_size", -2, "batch_size: -2 must be at least 1"),
    ("quantization_scale", 0, "quantization_scale: 0 must be above 0"),
    ("max_query_length", 1.5, "max_query_length: 1.5 is not a whole number"),
    ("topk", 0, "topk: 0 is not a positive whole number"),
    ("threads", "four", "threads: 'four' is not a whole number"),
])
def test_a_suite_value_out_of_range_is_refused_at_load_naming_file_and_key(tmp_path, key, value, says):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""suite: bad
measures: [nDCG@10]
datasets: [scifact]
conditions:
  tiny:
    kind: model
    model: {SPLADE_TINY}
    encoder: cls
    retrieval: dense
    {key}: {value!r}
""")
    with pytest.raises(DupMAEEvalError) as refused:
        load_suite(suite)
    message = str(refused.value)
    assert message.startswith(f"{suite}: conditions: tiny: ") and says in message


def _finetune(*extra, output):
    return ["finetune", "--model", str(SPLADE_TINY), "--dataset", VASWANI, "--output", str(output), *extra]


def _pretrain(*extra, output, model=str(SPLADE_TINY)):
    return ["pretrain", "--model", model, "--corpus", VASWANI, "--output", str(output), *extra]


@pytest.mark.parametrize("make_argv, says", [
    (lambda out: _run("--max-passage-length", "1024", output=out / "run.trec"),
     "--max-passage-length (max_passage_length) 1024: the model has 512 positions"),
    (lambda out: _run("--max-query-length", "513", output=out / "run.trec"),
     "--max-query-length (max_query_length) 513: the model has 512 positions"),
    (lambda out: _encode("--max-passage-length", "600"),
     "--max-passage-length (max_passage_length) 600: the model has 512 positions"),
    (lambda out: _finetune("--passage-max-length", "1024", output=out / "ft"),
     "--passage-max-length (passage_max_length) 1024: the model has 512 positions"),
    (lambda out: _finetune("--query-max-length", "700", output=out / "ft"),
     "--query-max-length (query_max_length) 700: the model has 512 positions"),
    (lambda out: _pretrain("--max-length", "1024", output=out / "pt"),
     "--max-length (max_length) 1024: the model has 512 positions"),
    (lambda out: _pretrain("--max-length", "513", output=out / "pt", model="shape:bert-tiny"),
     "--max-length (max_length) 513: the model has 512 positions (max_position_embeddings in shape bert-tiny)"),
    (lambda out: ["mlm-loss", "--model", str(SPLADE_TINY), "--texts", str(TEST_DATA / "vaswani" / "queries.jsonl"),
                  "--max-length", "2048"],
     "--max-length (max_length) 2048: the model has 512 positions"),
])
def test_a_length_beyond_the_models_positions_is_refused_before_any_work(tmp_path, capsys, make_argv, says):
    """splade-tiny has 512 positions (its config.json); a longer max length used to fail in the forward, at
    the first text that long, after the corpus was read (and, for finetune, the negatives mined)."""
    line = _refused(capsys, make_argv(tmp_path))
    assert says in line and "give at most 512" in line
    assert list(tmp_path.iterdir()) == []             # no run file, no training folder


def test_a_length_beyond_the_models_positions_is_refused_from_python_and_a_suite(tmp_path):
    import dupmae_eval
    from dupmae_eval.evaluation.runner import reproduce

    with pytest.raises(DupMAEEvalError, match=r"--max-passage-length \(max_passage_length\) 1024: the model has "
                                              r"512 positions"):
        dupmae_eval.encoders(str(SPLADE_TINY), kind="cls", max_passage_length=1024)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""suite: long
measures: [nDCG@10]
datasets: [scifact]
conditions:
  bm25-flat:
    kind: bm25
  tiny:
    kind: model
    model: {SPLADE_TINY}
    encoder: cls
    retrieval: dense
    max_query_length: 1000
""")
    with pytest.raises(DupMAEEvalError) as refused:      # before the bm25 cell, which comes first
        reproduce(suite, tmp_path / "runs")
    assert str(refused.value).startswith(f"{suite}: conditions: tiny: --max-query-length (max_query_length) 1000: "
                                         f"the model has 512 positions")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("verb, extra, says", [
    ("finetune", ["--recipe", "splade-tiny-scifact", "--learning-rate", "-1"], "--learning-rate (learning_rate) -1: must be above 0"),
    ("finetune", ["--epochs", "0"], "--epochs (epochs) 0: must be above 0"),
    ("finetune", ["--warmup-ratio", "1.5"], "--warmup-ratio (warmup_ratio) 1.5: must be at least 0 and below 1"),
    ("finetune", ["--warmup-ratio", "1"], "--warmup-ratio (warmup_ratio) 1: must be at least 0 and below 1"),
    ("finetune", ["--weight-decay", "-0.01"], "--weight-decay (weight_decay) -0.01: must be at least 0"),
    ("finetune", ["--temperature", "0"], "--temperature (temperature) 0: must be above 0"),
    ("finetune", ["--distill-temperature", "-1"], "--distill-temperature (distill_temperature) -1: must be above 0"),
    ("finetune", ["--sparse-scale", "-1"], "--sparse-scale (sparse_scale) -1: must be at least 0"),
    ("finetune", ["--distill-weight", "-0.5"], "--distill-weight (distill_weight) -0.5: must be at least 0"),
    ("finetune", ["--negatives-depth", "0"], "--negatives-depth (negatives_depth) 0: must be at least 1"),
    ("finetune", ["--holdout-queries", "-2"], "--holdout-queries (holdout_queries) -2: must be at least 0"),
    ("finetune", ["--queries-per-device", "0"], "--queries-per-device (queries_per_device) 0: must be at least 1"),
    ("finetune", ["--group-size", "0"], "--group-size (group_size) 0: must be at least 1"),
    ("finetune", ["--passage-max-length", "1"], "--passage-max-length (passage_max_length) 1: must be at least 2"),
    ("finetune", ["--seed", "-1"], "--seed (seed) -1: must be between 0 and 4294967295"),
    ("finetune", ["--save-steps", "0"], "--save-steps (save_steps) 0: must be at least 1"),
    ("finetune", ["--logging-steps", "0"], "--logging-steps (logging_steps) 0: must be at least 1"),
    ("finetune", ["--save-total-limit", "0"], "--save-total-limit (save_total_limit) 0: must be at least 1"),
    ("finetune", ["--dense-dim", "0"], "--dense-dim (dense_dim) 0: must be at least 1"),
    ("pretrain", ["--learning-rate", "nan"], "--learning-rate (learning_rate) nan: must be above 0"),
    ("pretrain", ["--epochs", "inf"], "--epochs (epochs) inf: not a finite number"),
    ("pretrain", ["--encoder-mask-ratio", "1"], "--encoder-mask-ratio (encoder_mask_ratio) 1: must be between 0 and 1"),
    ("pretrain", ["--decoder-mask-ratio", "0"], "--decoder-mask-ratio (decoder_mask_ratio) 0: must be between 0 and 1"),
    ("pretrain", ["--bow-weight", "-0.1"], "--bow-weight (bow_weight) -0.1: must be at least 0"),
    ("pretrain", ["--gradient-accumulation", "0"], "--gradient-accumulation (gradient_accumulation) 0: must be at least 1"),
    ("pretrain", ["--batch-size", "0"], "--batch-size (batch_size) 0: must be at least 1"),
    ("pretrain", ["--max-length", "2"], "--max-length (max_length) 2: must be at least 3"),
    ("pretrain", ["--dataloader-workers", "-1"], "--dataloader-workers (dataloader_workers) -1: must be at least 0"),
])
def test_a_training_setting_out_of_range_is_one_line_naming_flag_and_setting(tmp_path, capsys, verb, extra, says):
    """Refused by the settings' validation, before negatives are mined or the output folder is made (a
    negative learning rate used to fail in the optimizer after both, leaving a folder in the way of the
    corrected command)."""
    make = _finetune if verb == "finetune" else _pretrain
    line = _refused(capsys, make(*extra, output=tmp_path / "out"))
    assert says in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_a_recipe_value_out_of_range_is_refused_as_its_flag_is(tmp_path, capsys, verb):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 2e-5\nweight_decay: -1\n")
    make = _finetune if verb == "finetune" else _pretrain
    line = _refused(capsys, make("--recipe", str(recipe), output=tmp_path / "out"))
    assert "--weight-decay (weight_decay) -1: must be at least 0" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
