"""Model cards without training: a card written from a finished run's record, scores merged into it, and the
`--card` refusals (one line, before any work). The cards of real runs are checked in test_training.py
(fine-tuning) and test_pretraining.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

from huggingface_hub import ModelCard

from dupmae_eval.cli import main
from dupmae_eval.training.cards import update_card_scores, write_training_card


def _finished(folder, model="Shitao/RetroMAE", data="scifact"):
    folder.mkdir()
    (folder / "finetune.json").write_text(json.dumps({
        "tool": "dupmae-eval 0.1.0", "model": model, "data": data, "settings": {"kind": "dupmae", "seed": 42},
        "finished": True, "steps": 3, "training_loss": 1.5, "train_queries": 16, "held_out_queries": 0}))
    return folder


def test_card_metadata_and_merged_scores(tmp_path):
    folder = _finished(tmp_path / "tuned")
    write_training_card(folder, "finetune", "dupmae-eval finetune --model Shitao/RetroMAE --dataset scifact "
                                            "--output tuned")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "Shitao/RetroMAE" and card.data.datasets == ["BeIR/scifact"]
    assert card.data.library_name == "transformers" and card.data.eval_results is None
    assert "dupmae-eval finetune --model Shitao/RetroMAE --dataset scifact --output tuned" in card.text

    first = SimpleNamespace(condition="dupmae-dupmae", dataset="scifact", split="test",
                            aggregate={"nDCG@10": 0.61234, "R@100": 0.9})
    second = SimpleNamespace(condition="dupmae-dupmae", dataset="scifact", split="test", aggregate={"nDCG@10": 0.65})
    other = SimpleNamespace(condition="dupmae-hybrid", dataset="msmarco-passage", split="dl19",
                            aggregate={"AP(rel=2)": 0.4})
    update_card_scores(folder, [first])
    update_card_scores(folder, [second, other])       # the same four keys: replaced; the rest kept
    card = ModelCard.load(folder / "README.md")
    got = {(r.metric_config, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_name):
           r.metric_value for r in card.data.eval_results}
    assert got == {("dupmae-dupmae", "BeIR/scifact", "SciFact", "test", "ndcg_at_10", "nDCG@10"): 0.65,
                   ("dupmae-dupmae", "BeIR/scifact", "SciFact", "test", "r_at_100", "R@100"): 0.9,
                   ("dupmae-hybrid", "microsoft/ms_marco", "MS MARCO passage", "dl19", "ap_rel_2", "AP(rel=2)"): 0.4}
    assert card.text.count("| dupmae-dupmae | SciFact | test | nDCG@10 | 0.6500 |") == 1
    assert "0.6123" not in card.text and "No scores yet" not in card.text
    assert "## Fine-tuning" in card.text                          # the rest of the text is kept
    assert not any(path.name.startswith(".") for path in folder.iterdir())     # no lock or temporary file left


def test_card_flag_refusals_come_before_any_work(tmp_path, capsys):
    run = tmp_path / "r.trec"
    common = ["run", "--dataset", "scifact", "--encoder", "dupmae", "--retrieval", "dupmae", "--output", str(run)]
    assert main([*common, "--model", "Shitao/RetroMAE", "--eval", "--card"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--card" in err and "Shitao/RetroMAE is not a local folder" in err
    assert main([*common, "--model", str(tmp_path), "--card"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--card needs --eval" in err
    assert not run.exists() and not (tmp_path / "README.md").exists()
