"""Fine-tuning (issue 12): the score and losses against hand computations, the data sources, the
refusals, and a real (tiny) fine-tuning run whose output `run` reads as it is."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPLADE_TINY, TEST_DATA, kill_after_first_checkpoint
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.training.score import distillation, infonce, pair_scores


# --------------------------------------------------------------------------- Eq. 12-15 by hand


def _hand_score(qd, qs, dd, ds, k):
    """Eq. 12 with plain Python: dense dot product, plus the sum over the document's k largest entries."""
    dense = sum(a * b for a, b in zip(qd, dd))
    kept = sorted(range(len(ds)), key=lambda i: -ds[i])[:k]
    return dense + sum(qs[i] * ds[i] for i in kept)


def test_pair_scores_equal_eq12_by_hand():
    rng = np.random.default_rng(0)
    qd, dd = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    qs, ds = rng.normal(size=(3, 11)), rng.normal(size=(4, 11))   # raw logits: negatives too
    ours = pair_scores(*(torch.tensor(x) for x in (qd, qs, dd, ds)), doc_topk=4).numpy()
    hand = [[_hand_score(qd[q], qs[q], dd[d], ds[d], 4) for d in range(4)] for q in range(3)]
    assert np.allclose(ours, hand, rtol=0, atol=1e-12)
    # k = None keeps every entry; one half alone is that half's dot product
    everything = pair_scores(*(torch.tensor(x) for x in (qd, qs, dd, ds)), doc_topk=None).numpy()
    assert np.allclose(everything, qd @ dd.T + qs @ ds.T, atol=1e-12)
    assert np.allclose(pair_scores(None, torch.tensor(qs), None, torch.tensor(ds), 2).numpy(),
                       [[_hand_score([], qs[q], [], ds[d], 2) for d in range(4)] for q in range(3)], atol=1e-12)


def test_infonce_and_distillation_equal_hand_computation():
    scores = torch.tensor([[3.0, 1.0, -2.0, 0.5], [0.2, 0.1, 4.0, -1.0]], dtype=torch.float64)
    positives = torch.tensor([0, 2])
    tau = 0.5
    hand = np.mean([-(row[p] / tau - math.log(sum(math.exp(v / tau) for v in row)))
                    for row, p in zip(scores.tolist(), positives.tolist())])
    assert abs(float(infonce(scores, positives, tau)) - hand) < 1e-12

    student, teacher = scores, torch.tensor([[2.0, 2.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)

    def softmax(row):
        total = sum(math.exp(v) for v in row)
        return [math.exp(v) / total for v in row]

    kl = np.mean([sum(t * math.log(t / s) for t, s in zip(softmax(tr), softmax(sr)))
                  for tr, sr in zip(teacher.tolist(), student.tolist())])
    assert abs(float(distillation(student, teacher)) - kl) < 1e-12


# --------------------------------------------------------------------------- a small random BERT


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory) -> Path:
    """A random BertForMaskedLM (hidden 32, 2 layers) with splade-tiny's tokenizer, saved as a folder."""
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("random-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, folder / name)
    return folder


def test_training_loss_equals_eq12_and_infonce_from_inference_halves(random_bert):
    """The model's loss for a batch equals InfoNCE over Eq. 12 computed by hand (numpy) from the halves
    that the inference encoder (`LoadedModel.forward`, the encoding path of `run`) gives for the same texts."""
    from dupmae_eval.encoding.encoders import EncoderSettings
    from dupmae_eval.encoding.checkpoint import load_model, save_dupmae_head
    from dupmae_eval.training.finetune_data import GroupCollator
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import make_settings

    settings = make_settings(doc_topk=7, temperature=2.0, group_size=3, query_max_length=16,
                             passage_max_length=24)                    # the model has 128 positions
    net = DupMAEForTraining.from_checkpoint(str(random_bert), settings).eval()   # eval: no dropout
    queries = ["microwave dielectric constant", "digital computers band pass filters"]
    passages = ["measurement of liquids", "waveguide fed radiation", "phase and attenuation",
                "computers in filter design", "", "data coding for information"]       # one empty passage
    batch = GroupCollator(net.tokenizer, 16, 24)([{"query": q, "passages": passages[3 * i:3 * i + 3]}
                                                  for i, q in enumerate(queries)])
    loss = float(net(**batch)["loss"].detach())

    folder = random_bert.parent / "with-head"
    shutil.copytree(random_bert, folder, dirs_exist_ok=True)
    save_dupmae_head(folder, net.projection.weight, net.projection.bias)
    loaded = load_model(str(folder), need_mlm_head=True)
    pooling = EncoderSettings.for_kind("dupmae").pooling()

    def halves(texts, length):
        tokens = loaded.tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="pt")
        with torch.no_grad():
            dense, sparse = loaded.forward(tokens["input_ids"], tokens["attention_mask"], pooling)
        sparse = torch.where(torch.isinf(sparse), torch.zeros_like(sparse), sparse)   # nothing pooled: 0
        return dense.double().numpy(), sparse.double().numpy()

    qd, qs = halves(queries, 16)
    dd, ds = halves(passages, 24)
    scores = np.array([[_hand_score(qd[q], qs[q], dd[d], ds[d], 7) for d in range(6)] for q in range(2)])
    hand = np.mean([-(scores[q, 3 * q] / 2.0 - np.log(np.exp(scores[q] / 2.0).sum())) for q in range(2)])
    assert abs(loss - hand) < 1e-4 * max(1.0, abs(hand))


@pytest.mark.parametrize("mode", ["elementwise", "layers"])
def test_recompute_leaves_the_finetuning_gradients_unchanged(random_bert, mode):
    """`finetune --recompute`: in training mode with dropout on, the loss and every gradient equal the
    plain encoder's (float64), and the recomputation is real (more GELUs run than without it)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from dupmae_eval.training.finetune_data import GroupCollator
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.recompute import recompute_encoder
    from dupmae_eval.training.settings import make_settings

    class Gelus(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Gelus.count += func.__name__ == "gelu.default"
            return func(*args, **(kwargs or {}))

    settings = make_settings(doc_topk=7, group_size=2, recompute=mode, query_max_length=16,
                             passage_max_length=24)                    # the model has 128 positions
    texts = [{"query": "microwave dielectric constant", "passages": ["measurement of liquids", "phase"]},
             {"query": "band pass filters", "passages": ["computers in filter design", ""]}]

    def step(recompute):
        torch.manual_seed(0)
        net = DupMAEForTraining.from_checkpoint(str(random_bert), settings).double().train()
        recompute_encoder(net.masked_lm, recompute)
        batch = GroupCollator(net.tokenizer, 16, 24)(texts)
        Gelus.count = 0
        torch.manual_seed(3)
        with Gelus():
            loss = net(**batch)["loss"]
            loss.backward()
        return float(loss.detach()), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}, Gelus.count

    plain_loss, plain, plain_gelus = step("none")
    loss, grads, gelus = step(mode)
    assert gelus > plain_gelus
    assert loss == pytest.approx(plain_loss, abs=1e-12)
    assert grads.keys() == plain.keys()
    for name, expected in plain.items():
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12, msg=name)


# --------------------------------------------------------------------------- data and refusals


@pytest.fixture(scope="module")
def small_beir(tmp_path_factory) -> Path:
    """A BEIR-layout dataset cut from Vaswani: 1,500 passages holding every judged passage of 24 queries;
    their judgments are split 16 train / 8 test."""
    folder = tmp_path_factory.mktemp("small-beir")
    lines = [line for line in (TEST_DATA / "vaswani" / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = sorted({line.split("\t")[0] for line in lines}, key=int)[:24]
    judged = [line for line in lines if line.split("\t")[0] in qids]
    wanted = {line.split("\t")[1] for line in judged}
    kept = []
    with gzip.open(TEST_DATA / "vaswani" / "corpus.jsonl.gz", "rt") as handle:
        for line in handle:
            docid = json.loads(line)["_id"]
            if docid in wanted or len(kept) < 1500 - len(wanted):
                kept.append(line)
    (folder / "corpus.jsonl").write_text("".join(kept))
    (folder / "qrels").mkdir()
    for split, chosen in (("train", qids[:16]), ("test", qids[16:])):
        rows = [line for line in judged if line.split("\t")[0] in chosen]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    shutil.copy(TEST_DATA / "vaswani" / "queries.jsonl", folder / "queries.jsonl")
    return folder


def test_passage_store_reads_by_offset(small_beir, tmp_path):
    from dupmae_eval.data.formats import read_beir_corpus, read_tsv_collection
    from dupmae_eval.training.finetune_data import PassageStore

    store = PassageStore(small_beir / "corpus.jsonl", "beir")
    expected = {p.docid: p.flat_text() for p in read_beir_corpus(small_beir / "corpus.jsonl")}
    assert len(store) == len(expected)
    for docid in list(expected)[::97]:
        assert store.text(docid) == expected[docid]
    # MS MARCO layout with numeric ids: looked up through an array
    collection = tmp_path / "collection.tsv"
    collection.write_text("7\tseven\n3\tthree ünïcode\n12\ttwelve\n")
    tsv = PassageStore(collection, "msmarco")
    assert tsv._numeric is not None
    assert [tsv.text(d) for d in ("3", "12", "7")] == [p.text for p in sorted(
        read_tsv_collection(collection), key=lambda p: ("3", "12", "7").index(p.docid))]
    assert "4" not in tsv and "12" in tsv


def test_passage_ids_that_differ_in_leading_zeros_are_two_passages(tmp_path):
    """Ids are strings: "007" is not passage 7, and only "7" finds passage 7 (no "07", "0007" or "٧"), whether
    the ids go through the dictionary or, all written as plain numbers, index the array."""
    from dupmae_eval.training.finetune_data import PassageStore

    collection = tmp_path / "collection.tsv"
    collection.write_text("7\tseven\n007\tdouble-oh-seven\n12\ttwelve\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in (
        ("7", "seven"), ("007", "double-oh-seven"), ("12", "twelve"))))
    canonical = tmp_path / "canonical.tsv"
    canonical.write_text("7\tseven\n0\tzero\n12\ttwelve\n")
    for path, layout, ids in ((collection, "msmarco", ("7", "007", "12")), (corpus, "beir", ("7", "007", "12")),
                              (canonical, "msmarco", ("7", "0", "12"))):
        store = PassageStore(path, layout)
        assert [store.text(d) for d in ids] == ["seven", "zero" if "0" in ids else "double-oh-seven", "twelve"]
        assert all(d in store for d in ids)
        for other in ("07", "0007", "012", "00", "٧", "+7", " 7", "7 "):
            assert other not in store
            with pytest.raises(KeyError):
                store.text(other)
    assert store._numeric is not None           # the plain numbers still index the array
    # tweet-sized ids: a table of max id + 1 entries would not fit; the dictionary serves them
    tweets = tmp_path / "tweets.tsv"
    tweets.write_text("1234567890123456789\tone tweet\n987654321098765432\tanother\n")
    store = PassageStore(tweets, "msmarco")
    assert store._numeric is None and store.text("987654321098765432") == "another"


def test_a_repeated_passage_id_is_refused_before_fine_tuning_reads_the_corpus(tmp_path):
    """As before retrieval (the corpus census), naming both lines: the store would keep one copy's text."""
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.training.finetune_data import from_dataset

    (tmp_path / "collection.tsv").write_text("7\tseven\n3\tthree\n7\tanother seven\n")
    (tmp_path / "queries.train.tsv").write_text("1\tnumber seven\n")
    (tmp_path / "qrels.train.tsv").write_text("1 0 7 1\n")
    with pytest.raises(DupMAEEvalError, match=r"collection\.tsv:3: duplicate id '7' \(first at line 1\)"):
        from_dataset(resolve(str(tmp_path)), "train")


def test_msmarco_layout_training_queries(tmp_path):
    """MS MARCO's own layout and file names for training (collection.tsv, queries.train.tsv, qrels.train.tsv):
    judged positives (grade > 0), passages read by offset from the numeric-id array."""
    from dupmae_eval.data.formats import read_trec_qrels, read_tsv_collection
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.training.finetune_data import from_dataset

    sample = TEST_DATA / "msmarco-passage-sample"
    passages = {p.docid: p.text for p in read_tsv_collection(sample / "collection.tsv.gz")}
    qrels = read_trec_qrels(sample / "qrels.dl19-passage.txt")
    kept = [(qid, docid, grade) for qid, docs in qrels.items() for docid, grade in docs.items() if docid in passages]
    (tmp_path / "collection.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in passages.items()))
    (tmp_path / "qrels.train.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in kept))
    shutil.copy(sample / "queries.dl19-passage.tsv", tmp_path / "queries.train.tsv")
    queries, store = from_dataset(resolve(str(tmp_path)), "train")
    assert store._numeric is not None and len(store) == len(passages)
    assert {q.qid for q in queries} == {q for q, _, g in kept if g > 0}
    for query in queries[:5]:
        assert set(query.positives) == {d for q, d, g in kept if q == query.qid and g > 0}
        assert all(store.text(d) == passages[d] for d in query.positives)


def test_negatives_from_a_run_file_skip_positives_and_keep_the_depth(tmp_path):
    from dupmae_eval.training.finetune_data import GroupDataset, TrainingQuery, attach_candidates
    from dupmae_eval.training.negatives import NEGATIVE_SOURCES
    from dupmae_eval.training.settings import make_settings

    run = tmp_path / "run.trec"
    run.write_text("".join(f"q1 Q0 d{i} {i + 1} {10 - i} r\n" for i in range(6)))
    settings = make_settings(negatives="run", negatives_from=str(run), negatives_depth=4, group_size=3)
    ranking = NEGATIVE_SOURCES.lookup("run").mine(None, "train", settings, tmp_path)
    queries = [TrainingQuery("q1", "text", ("d1",)), TrainingQuery("q2", "other", ("d5",))]
    assert attach_candidates(queries, ranking, settings.negatives_depth) == 1          # q2 has no candidates
    assert queries[0].negatives == ("d0", "d2", "d3")                                   # top 4 minus d1
    dataset = GroupDataset(queries[:1], None, group_size=3, seed=5)
    positive, negatives = dataset.draw(0)
    assert positive == "d1" and len(set(negatives)) == 2 and set(negatives) <= {"d0", "d2", "d3"}
    dataset.epoch = 1
    assert [dataset.draw(0) for _ in range(2)] == [dataset.draw(0)] * 2                 # seeded per epoch


def test_tevatron_jsonl_is_read(tmp_path):
    from dupmae_eval.training.finetune_data import from_tevatron

    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query_id": "q1", "query": "what", "positive_passages": [
        {"docid": "a", "title": "T", "text": "x"}], "negative_passages": [{"docid": "b", "title": "", "text": "y"}]})
        + "\n")
    queries, store = from_tevatron(path)
    assert queries[0].positives == ("a",) and queries[0].negatives == ("b",)
    assert store.text("a") == "T x" and store.text("b") == "y"
    path.write_text(json.dumps({"query": "what", "positive_passages": []}) + "\n")
    with pytest.raises(DupMAEEvalError, match=r"train\.jsonl:1: .*no positive_passages"):
        from_tevatron(path)
    record = json.dumps({"query": "caf", "positive_passages": [{"docid": "a", "text": "x" * 40}]}).encode()
    lines = [record] * 3000                 # bad UTF-8 far past the first blocks: one line naming its line
    lines[2499] = record.replace(b"caf", b"caf\xe9")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DupMAEEvalError, match=r"train\.jsonl:2500: not valid UTF-8 text$"):
        from_tevatron(path)


def _copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_refusals_before_training(small_beir, random_bert, tmp_path):
    from dupmae_eval.training.settings import make_settings
    from dupmae_eval.training.finetune import finetune

    settings = make_settings(negatives="none", group_size=1, max_steps=1, query_max_length=16,
                             passage_max_length=32)                    # the model has 128 positions
    # judged passage absent from the corpus: the qrels file and line
    broken = _copy_dataset(small_beir, tmp_path / "absent")
    rows = (broken / "qrels" / "train.tsv").read_text().splitlines()
    rows[3] = rows[3].split("\t")[0] + "\tno-such-doc\t1"
    (broken / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DupMAEEvalError, match=r"train\.tsv:4: judged passage 'no-such-doc' is not in the corpus"):
        finetune(str(random_bert), str(broken), tmp_path / "out1", settings)
    # no judged positive at all
    nothing = _copy_dataset(small_beir, tmp_path / "nothing")
    rows = (nothing / "qrels" / "train.tsv").read_text().splitlines()
    (nothing / "qrels" / "train.tsv").write_text("\n".join([rows[0]] + [r.rsplit("\t", 1)[0] + "\t0"
                                                                        for r in rows[1:]]) + "\n")
    with pytest.raises(DupMAEEvalError, match="no query of split 'train' has a judged positive"):
        finetune(str(random_bert), str(nothing), tmp_path / "out2", settings)
    # a checkpoint without an MLM head, for a kind with a sparse half
    from transformers import BertModel

    bare = tmp_path / "bare"
    BertModel.from_pretrained(str(random_bert)).save_pretrained(bare)
    shutil.copy(random_bert / "tokenizer.json", bare)
    shutil.copy(random_bert / "tokenizer_config.json", bare)
    with pytest.raises(DupMAEEvalError, match="no MLM head"):
        finetune(str(bare), str(small_beir), tmp_path / "out3", settings)
    assert not (tmp_path / "out3").exists()          # refused before the record: the corrected command runs
    with pytest.raises(DupMAEEvalError, match=r"--dataset \S+no-such-data: no such file or folder"):
        finetune(str(random_bert), str(tmp_path / "no-such-data"), tmp_path / "out4", settings)
    with pytest.raises(DupMAEEvalError, match=r"--dataset no-such-name: unknown dataset"):
        finetune(str(random_bert), "no-such-name", tmp_path / "out4", settings)
    assert not (tmp_path / "out4").exists()
    # a teacher or negatives run file that is not there: named by its flag, not taken for a hub model
    for flag, extra in (("--distill-from", {"distill_from": str(tmp_path / "teacher.trec"), "group_size": 2}),
                        ("--negatives-from", {"negatives": "run", "negatives_from": str(tmp_path / "bm25.trec"),
                                              "group_size": 2})):
        chosen = make_settings(**{**dict(negatives="none", max_steps=1, query_max_length=16,
                                         passage_max_length=32), **extra})
        with pytest.raises(DupMAEEvalError, match=rf"^{flag} \S+\.trec: no such file$"):
            finetune(str(random_bert), str(small_beir), tmp_path / "out5", chosen)
    assert not (tmp_path / "out5").exists()
    # an output folder holding something else, or another run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DupMAEEvalError, match="not a fine-tuning output folder"):
        finetune(str(random_bert), str(small_beir), tmp_path / "busy", settings)
    (tmp_path / "other" / "checkpoints" / "checkpoint-2").mkdir(parents=True)     # a run under way
    (tmp_path / "other" / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "other" / "finetune.json").write_text(json.dumps(
        {"model": str(random_bert), "data": str(small_beir), "settings": {**settings.as_dict(), "seed": 7}}))
    with pytest.raises(DupMAEEvalError, match=r"already holds a different fine-tuning run \(settings.seed"):
        finetune(str(random_bert), str(small_beir), tmp_path / "other", settings)


def test_max_steps_is_minus_one_or_a_count():
    from dupmae_eval.training.settings import make_settings

    assert make_settings(max_steps="-1").max_steps == -1 and make_settings(max_steps=2).max_steps == 2
    for bad in ("0", "-5"):             # transformers would train one step, or the whole recipe
        with pytest.raises(DupMAEEvalError, match=rf"--max-steps \(max_steps\) {bad}: give -1 \(the epochs"):
            make_settings(max_steps=bad)


def test_a_step_without_any_negative_is_refused(monkeypatch):
    """One query a step and a group of one: the score matrix is 1 x 1, so InfoNCE is -log 1 = 0 whatever the
    weights (no negative at all); refused in one line. Under torchrun other processes' passages are negatives."""
    from dupmae_eval.training.settings import make_settings
    from dupmae_eval.training.score import infonce

    assert float(infonce(torch.tensor([[123.0]]), torch.tensor([0]))) == 0.0     # the loss such a step has
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(DupMAEEvalError, match=r"^--group-size \(group_size\) 1 with --queries-per-device "
                                              r"\(queries_per_device\) 1: .*no negative"):
        make_settings(negatives="none", group_size=1, queries_per_device=1)
    assert make_settings(negatives="none", group_size=1, queries_per_device=2).queries_per_device == 2
    assert make_settings(group_size=2, queries_per_device=1).group_size == 2
    monkeypatch.setenv("WORLD_SIZE", "2")            # the other process's passage is the negative
    assert make_settings(negatives="none", group_size=1, queries_per_device=1).group_size == 1
    with pytest.raises(DupMAEEvalError, match="no negative"):
        make_settings(negatives="none", group_size=1, queries_per_device=1, cross_device_negatives=False)


def test_holding_out_every_query_is_refused_naming_the_flag():
    from dupmae_eval.training.finetune_data import TrainingQuery, hold_out

    queries = [TrainingQuery(str(i), f"query {i}", (f"d{i}",)) for i in range(3)]
    train, held = hold_out(queries, 2, seed=42)
    assert len(train) == 1 and len(held) == 2
    with pytest.raises(DupMAEEvalError, match=r"^--holdout-queries \(holdout_queries\) 3: leaves nothing to "
                                              r"train on \(3 training queries\)$"):
        hold_out(queries, 3, seed=42)


def test_an_output_that_is_a_file_is_refused_as_such(tmp_path):
    """--output naming a file: one line saying so, not an OSError read as a full disk or missing rights."""
    from dataclasses import asdict

    from dupmae_eval.training.settings import FinetuneSettings
    from dupmae_eval.training.finetune import _judge_output

    settings = asdict(FinetuneSettings())
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    with pytest.raises(DupMAEEvalError, match=r"notes\.txt: is a file, not a folder; give --output an empty or "
                                              r"new folder$"):
        _judge_output(afile, {"model": "m", "data": "d", "settings": settings}, "finetune.json", "fine-tuning",
                      settings)
    assert afile.read_text() == "mine"


def test_a_folder_left_by_a_run_that_failed_before_its_first_checkpoint_is_taken_over(tmp_path):
    """Only a record, unfinished, no checkpoint: another run may take the folder; with anything else in
    it (a checkpoint, mined negatives), or once finished, it stays refused."""
    import json
    from dataclasses import asdict

    from dupmae_eval.training.settings import FinetuneSettings
    from dupmae_eval.training.finetune import _judge_output

    settings = asdict(FinetuneSettings())
    record = {"model": "m", "data": "d", "settings": settings}
    (tmp_path / "finetune.json").write_text(json.dumps({**record, "data": "typo", "finished": False}))
    (tmp_path / "negatives").mkdir()                                  # made, left empty
    assert _judge_output(tmp_path, record, "finetune.json", "fine-tuning", settings)[0] == "takeover"
    (tmp_path / "negatives" / "bm25.trec").write_text("q Q0 d 1 1 x\n")
    with pytest.raises(DupMAEEvalError, match="already holds a different fine-tuning run"):
        _judge_output(tmp_path, record, "finetune.json", "fine-tuning", settings)
    (tmp_path / "negatives" / "bm25.trec").unlink()
    (tmp_path / "finetune.json").write_text(json.dumps({**record, "data": "typo", "finished": True}))
    with pytest.raises(DupMAEEvalError, match="already holds a different fine-tuning run"):
        _judge_output(tmp_path, record, "finetune.json", "fine-tuning", settings)


def test_a_run_whose_model_or_data_changed_under_the_same_names_is_refused(random_bert, small_beir, tmp_path):
    """The record keeps digests of what the run reads (`input_contents`), not only names: once a model
    folder's files, a corpus or a split's judgments change under the same name, the folder holds another
    run, refused naming what changed; a record without digests (an older version's) is refused too."""
    from dataclasses import asdict

    from dupmae_eval.training.finetune import _judge_output, input_contents
    from dupmae_eval.training.settings import FinetuneSettings

    model, data = shutil.copytree(random_bert, tmp_path / "model"), _copy_dataset(small_beir, tmp_path / "data")
    settings = asdict(FinetuneSettings())

    def judge():
        record = {"model": str(model), "data": str(data), "settings": settings,
                  "content": input_contents(str(model), str(data), "train")}
        return _judge_output(output, record, "finetune.json", "fine-tuning", settings)[0]

    output = tmp_path / "out"
    output.mkdir()
    (output / "finetune.json").write_text(json.dumps({"model": str(model), "data": str(data), "settings": settings,
                                                      "content": input_contents(str(model), str(data), "train"),
                                                      "finished": True}))
    assert judge() == "resume"
    for path, what in ((data / "qrels" / "train.tsv", "judgments"), (data / "corpus.jsonl", "corpus"),
                       (model / "config.json", "model")):
        before = path.read_text()
        lines = before.splitlines()
        path.write_text("\n".join(lines[:-1] if what != "model" else [*lines[:-1], '  ,"note": 1', "}"]) + "\n")
        with pytest.raises(DupMAEEvalError, match=rf"\(content of the {what} differ\)"):
            judge()
        path.write_text(before)
    assert judge() == "resume"
    earlier = json.loads((output / "finetune.json").read_text())
    (output / "finetune.json").write_text(json.dumps({k: v for k, v in earlier.items() if k != "content"}))
    with pytest.raises(DupMAEEvalError, match=r"content \(not recorded: written by an older version\)"):
        judge()


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """A newer version resumes an older run folder: a setting missing from its record is taken at its
    default (what that run did); asking for another value, or a record with a setting that is gone,
    is refused naming the setting."""
    import json
    from dataclasses import asdict

    from dupmae_eval.training.settings import FinetuneSettings
    from dupmae_eval.training.finetune import _check_output

    settings = asdict(FinetuneSettings())
    older = {k: v for k, v in settings.items() if k != "recompute"}
    (tmp_path / "finetune.json").write_text(json.dumps({"model": "m", "data": "d", "settings": older}))
    (tmp_path / "checkpoints" / "checkpoint-1").mkdir(parents=True)    # under way: not a failed start
    (tmp_path / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    record = {"model": "m", "data": "d", "settings": settings}
    assert _check_output(tmp_path, record, "finetune.json", "fine-tuning", settings) is True
    with pytest.raises(DupMAEEvalError, match=r"settings\.recompute differ"):
        _check_output(tmp_path, {**record, "settings": {**settings, "recompute": "layers"}}, "finetune.json",
                      "fine-tuning", settings)
    # the heap policy is how the process runs, not what it trains: a run resumes under another
    assert _check_output(tmp_path, {**record, "settings": {**settings, "heap": "release"}}, "finetune.json",
                         "fine-tuning", settings) is True
    assert _check_output(tmp_path, {**record, "settings": {**settings, "compile": True}}, "finetune.json",
                         "fine-tuning", settings) is True          # so is compiling
    (tmp_path / "finetune.json").write_text(json.dumps({"model": "m", "data": "d",
                                                        "settings": {**settings, "gone": True}}))
    with pytest.raises(DupMAEEvalError, match=r"settings\.gone \(no longer a setting\)"):
        _check_output(tmp_path, record, "finetune.json", "fine-tuning", settings)


def test_recipes_load_and_unknown_keys_are_refused(tmp_path):
    from dupmae_eval.training.settings import load_recipe, make_settings

    for name in ("retromae-msmarco", "splade-tiny-scifact"):
        make_settings(load_recipe(name))
    chosen = make_settings(load_recipe("splade-tiny-scifact"), learning_rate="1e-4", doc_topk="none")
    assert (chosen.learning_rate, chosen.doc_topk, chosen.group_size, chosen.temperature) == (1e-4, None, 8, 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-5\nlearning_rat: 2\n")
    with pytest.raises(DupMAEEvalError, match=r"bad\.yaml:2: unknown setting 'learning_rat'"):
        load_recipe(bad)
    bad.write_text("learning_rate: 1e-5\nbf16: auto\n")      # an older recipe's key: told what it is now
    with pytest.raises(DupMAEEvalError, match=r"bad\.yaml:2: unknown setting 'bf16'; it is `precision` now"):
        load_recipe(bad)


# --------------------------------------------------------------------------- a real run, read by `run`


def test_finetuned_checkpoint_runs_in_every_retrieval_mode_and_a_suite(small_beir, tmp_path, capsys):
    """splade-tiny fine-tuned for a few steps with BM25 negatives; the output folder is used as it is by
    `run --encoder dupmae` with each retrieval mode and by a suite condition; its trained settings are
    the run's defaults. Its model card passes huggingface_hub's card parser, records the exact command, and
    gets the scores `run --eval --card` printed and `reproduce --card` recorded, in the hub's model-index."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from dupmae_eval.cli import main
    from dupmae_eval.data.formats import read_trec_run

    output = tmp_path / "tuned"
    command = ["finetune", "--model", str(SPLADE_TINY), "--dataset", str(small_beir), "--output", str(output),
               "--activation", "log1p_relu", "--group-size", "4", "--queries-per-device", "4",
               "--max-steps", "3", "--save-steps", "2", "--passage-max-length", "64", "--query-max-length", "16"]
    assert main(command) == 0
    record = json.loads((output / "finetune.json").read_text())
    assert record["finished"] and record["steps"] == 3
    assert (output / "negatives" / "bm25-train.trec").is_file()
    card = ModelCard.load(output / "README.md")       # the hub's parser, metadata errors raised
    assert card.data.library_name == "transformers" and {"dupmae-eval", "dupmae"} <= set(card.data.tags)
    assert card.data.base_model is None and card.data.eval_results is None     # a local base model; no scores yet
    assert "dupmae-eval " + " ".join(command) in card.text and '"activation": "log1p_relu"' in card.text
    written = (output / "finetune.json").read_bytes(), (output / "model.safetensors").read_bytes()
    assert main(["finetune", "--model", str(SPLADE_TINY), "--dataset", str(small_beir), "--output", str(output),
                 "--activation", "log1p_relu", "--group-size", "4", "--queries-per-device", "4",
                 "--max-steps", "3", "--save-steps", "2", "--passage-max-length", "64",
                 "--query-max-length", "16"]) == 0      # finished: nothing is trained, nothing rewritten
    assert ((output / "finetune.json").read_bytes(), (output / "model.safetensors").read_bytes()) == written
    runs = {}
    for mode in ("dupmae", "hybrid", "dense", "impact"):
        path = tmp_path / f"{mode}.trec"
        capsys.readouterr()
        assert main(["run", "--dataset", str(small_beir), "--split", "test", "--model", str(output),
                     "--encoder", "dupmae", "--retrieval", mode, "--output", str(path), "--hits", "100",
                     *(["--eval", "--card"] if mode == "dupmae" else [])]) == 0
        if mode == "dupmae":
            printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
        runs[mode] = read_trec_run(path)
        sidecar = json.loads(Path(f"{path}.meta.json").read_text())
        assert sidecar["encoder"]["activation"] == "log1p_relu"      # the trained setting, not dupmae's "none"
        assert sidecar["model"]["projection"] and sidecar["model"]["dense_dim"] == 64
    assert len(runs["dupmae"]) == 8
    top = {q: [d for d, _ in hits[:10]] for q, hits in runs["dupmae"].items()}
    assert top == {q: [d for d, _ in hits[:10]] for q, hits in runs["hybrid"].items()}
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"suite: tuned\nmeasures: [nDCG@10]\nprecision: 4\ndatasets: [small]\nconditions:\n  tuned-dupmae:\n"
                     f"    kind: model\n    model: {output}\n    encoder: dupmae\n    retrieval: dupmae\n"
                     f"    hits: 100\n")
    assert main(["reproduce", str(suite), "--data", f"small={small_beir}", "--runs", str(tmp_path / "runs"),
                 "--card"]) == 0
    reproduced = json.loads((tmp_path / "runs" / "tuned" / "tuned-dupmae" / "small.metrics.json").read_text())

    card = ModelCard.load(output / "README.md")
    scores = {(r.metric_config, r.dataset_name, r.dataset_split, r.metric_name): r.metric_value
              for r in card.data.eval_results}
    assert scores == {**{("dupmae-dupmae", small_beir.name, "test", measure): float(value)
                         for measure, value in printed.items()},
                      ("tuned-dupmae", "small", "test", "nDCG@10"): round(reproduced["aggregate"]["nDCG@10"], 4)}
    assert set(printed) == {"nDCG@10", "R@100", "R@1000"}
    model_index = card.data.to_dict()["model-index"]
    assert model_index[0]["name"] == "tuned" and len(model_index_to_eval_results(model_index)[1]) == 4
    assert f"| dupmae-dupmae | {small_beir.name} | test | nDCG@10 | {printed['nDCG@10']} |" in card.text


# --------------------------------------------------------------------------- processes and resume


def test_two_processes_give_the_loss_and_gradient_of_one(random_bert, tmp_path):
    """torchrun --nproc_per_node 2 (gloo), passages gathered across processes: the same loss and gradient
    on the same global batch as one process, within 1e-5."""
    import subprocess
    import sys

    probe = Path(__file__).with_name("ddp_loss_probe.py")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(probe), str(random_bert), str(one)], check=True, timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(_free_port()), str(probe), str(random_bert), str(two)], check=True, timeout=600)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert abs(single["loss"] - double["loss"]) < 1e-5
    for name, values in single["grad"].items():
        assert np.allclose(values, double["grad"][name], rtol=1e-5, atol=1e-8), name
    assert any(abs(v) > 0 for v in single["grad"]["projection.weight"])


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _finetune_command(model: Path, data: Path, output: Path):
    import sys

    return [sys.executable, "-m", "dupmae_eval", "finetune", "--model", str(model), "--dataset", str(data),
            "--output", str(output), "--negatives", "bm25", "--group-size", "2", "--queries-per-device", "4",
            "--max-steps", "6", "--save-steps", "2", "--query-max-length", "16", "--passage-max-length", "32",
            "--learning-rate", "1e-4", "--warmup-ratio", "0"]


def test_a_killed_run_resumes_to_the_same_weights(random_bert, small_beir, tmp_path):
    """SIGKILL after a checkpoint, run the same command again: it continues from that checkpoint and ends
    with exactly the weights of an uninterrupted run (CPU, fixed seed, dropout on)."""
    import subprocess

    from safetensors.torch import load_file

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_finetune_command(random_bert, small_beir, whole), check=True, timeout=900,
                   capture_output=True)
    kill_after_first_checkpoint(_finetune_command(random_bert, small_beir, killed), killed)
    assert not json.loads((killed / "finetune.json").read_text())["finished"]
    assert not (killed / "model.safetensors").exists()
    subprocess.run(_finetune_command(random_bert, small_beir, killed), check=True, timeout=900,
                   capture_output=True)
    record = json.loads((killed / "finetune.json").read_text())
    assert record["finished"] and record["steps"] == 6
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    start = load_file(str(random_bert / "model.safetensors"))
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"],
                           start["bert.encoder.layer.0.attention.self.query.weight"])
    heads = [load_file(str(folder / "dupmae_head.safetensors")) for folder in (whole, killed)]
    assert all(torch.equal(heads[0][key], heads[1][key]) for key in heads[0])


def test_distillation_from_teacher_scores(random_bert, small_beir, tmp_path):
    """Stage 3 (Eq. 15): teacher scores from a run file (here BM25's, a model we have) become each query's
    candidates; the loss adds KL(teacher ‖ student) over the group, equal to the hand computation."""
    from dupmae_eval.retrieval.jobs import run_bm25
    from dupmae_eval.training.finetune_data import (
        GroupCollator, GroupDataset, attach_teacher, from_dataset, read_teacher_scores)
    from dupmae_eval.data.datasets import resolve
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import make_settings
    from dupmae_eval.training.finetune import finetune

    teacher_run = tmp_path / "teacher.trec"
    run_bm25(str(small_beir), "train", "flat", teacher_run, hits=20)
    settings = make_settings(group_size=4, distill_from=str(teacher_run), negatives="none", doc_topk=10,
                             query_max_length=16, passage_max_length=32)     # the model has 128 positions
    queries, store = from_dataset(resolve(str(small_beir)), "train")
    kept = attach_teacher(queries, read_teacher_scores(teacher_run), str(teacher_run))
    assert 0 < len(kept) < len(queries)   # BM25's top 20 misses some positives: those queries are left out
    queries = kept
    dataset = GroupDataset(queries, store, 4, seed=1)
    net = DupMAEForTraining.from_checkpoint(str(random_bert), settings).eval()
    items = [dataset[i] for i in range(3)]
    out = net(**GroupCollator(net.tokenizer, 16, 32)(items))
    group, teacher = out["scores"].double().numpy(), np.array([item["teacher"] for item in items])
    log_student = group - np.log(np.exp(group).sum(axis=1, keepdims=True))
    p_teacher = np.exp(teacher) / np.exp(teacher).sum(axis=1, keepdims=True)
    kl = float(np.mean((p_teacher * (np.log(p_teacher) - log_student)).sum(axis=1)))
    assert abs(net.last_parts["distillation"] - kl) < 1e-5
    assert abs(float(out["loss"].detach()) - net.last_parts["contrastive"] - kl) < 1e-5
    # and a whole run with it
    output = tmp_path / "distilled"
    finetune(str(random_bert), str(small_beir), output, make_settings(
        group_size=4, distill_from=str(teacher_run), negatives="none", max_steps=2, queries_per_device=4,
        query_max_length=16, passage_max_length=32))
    assert json.loads((output / "finetune.json").read_text())["finished"]


def test_finetune_runs_under_torchrun(random_bert, small_beir, tmp_path):
    """The whole verb under torchrun --nproc_per_node 2 (gloo): rank 0 mines BM25 negatives while rank 1
    waits, DDP trains, one model folder comes out, and `finetune.json` records the run as finished."""
    import subprocess
    import sys

    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "dupmae_eval"] + _finetune_command(random_bert, small_beir, output)[3:]
    command[command.index("--max-steps") + 1] = "2"
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((output / "finetune.json").read_text())
    assert record["finished"] and record["steps"] == 2
    assert done.stdout.count("fine-tuned model:") == 1
    assert (output / "model.safetensors").is_file() and (output / "dupmae_head.safetensors").is_file()


def test_compiled_finetuning_trains_the_same_weights(random_bert, small_beir, tmp_path, monkeypatch):
    """`finetune --compile` (the encoder under torch.compile, `compiled.py`): two steps end with the eager
    run's weights (inductor told to draw dropout from eager's generator, so both runs see the same masks),
    the checkpoint has the eager names, the record resumes either way, and compile with recomputation is
    refused before any work."""
    import torch._inductor.config as inductor_config
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    from dupmae_eval.training.settings import make_settings
    from dupmae_eval.training.finetune import finetune

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    common = dict(negatives="none", group_size=1, max_steps=2, queries_per_device=4, query_max_length=16,
                  passage_max_length=32, learning_rate=1e-3)
    finetune(str(random_bert), str(small_beir), tmp_path / "eager", make_settings(**common))
    torch._dynamo.reset()
    counters.clear()
    finetune(str(random_bert), str(small_beir), tmp_path / "compiled", make_settings(compile=True, **common))
    assert counters["stats"]["unique_graphs"] >= 1        # the encoder did run compiled
    eager, compiled = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("eager", "compiled"))
    assert eager.keys() == compiled.keys()
    start = load_file(str(random_bert / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    moved = (eager[key] - start[key]).abs().max()
    assert moved > 1e-4                               # the steps changed the weights ...
    for name in eager:                                # ... and both routes changed them alike
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=float(moved) * 1e-2)
    record = json.loads((tmp_path / "compiled" / "finetune.json").read_text())
    assert record["finished"] and record["settings"]["compile"] is True
    with pytest.raises(DupMAEEvalError, match="compile runs with recompute none only"):
        make_settings(compile=True, recompute="elementwise", **common).validate()


def test_bf16_finetuning_on_the_cpu_is_autocast_and_agrees_with_fp32(random_bert, small_beir, tmp_path):
    """`precision: bf16` on a CPU: the Trainer's bf16 autocast (the products round in bfloat16, so the weights
    after two steps are not fp32's, while the loss agrees), recorded in the run; an unknown precision is
    refused. (Adam's first steps move each weight by about the learning rate whatever the gradient's size,
    so the weights themselves are no measure of agreement here; the loss is.)"""
    from safetensors.torch import load_file

    from dupmae_eval.training.finetune import finetune
    from dupmae_eval.training.settings import make_settings

    common = dict(negatives="none", group_size=1, max_steps=2, queries_per_device=4, query_max_length=16,
                  passage_max_length=32, learning_rate=1e-3)
    for name, precision in (("fp32", None), ("bf16", "bf16")):
        finetune(str(random_bert), str(small_beir), tmp_path / name, make_settings(precision=precision, **common))
    fp32, bf16 = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("fp32", "bf16"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert float((bf16[key] - fp32[key]).abs().max()) > 0      # autocast did change the arithmetic
    records = {name: json.loads((tmp_path / name / "finetune.json").read_text()) for name in ("fp32", "bf16")}
    assert records["bf16"]["settings"]["precision"] == "bf16" and records["fp32"]["settings"]["precision"] is None
    assert abs(records["bf16"]["training_loss"] - records["fp32"]["training_loss"]) < 0.02 * records["fp32"][
        "training_loss"]
    with pytest.raises(DupMAEEvalError, match="precision 'fp16'"):
        make_settings(precision="fp16", **common)


def test_a_checkpoint_cut_short_is_removed_and_the_one_before_resumed(tmp_path, capsys):
    """A run stopped while the Trainer wrote checkpoint-N (killed, or a full disk) leaves that folder without
    its trainer_state.json or with cut weights: it is removed, saying so, and the one before is resumed
    (transformers' get_last_checkpoint would return the broken one, and the resume would fail)."""
    from safetensors.torch import save_file
    from transformers.trainer_utils import get_last_checkpoint

    from dupmae_eval.training.finetune import last_complete_checkpoint

    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        save_file({"w": torch.zeros(64)}, str(checkpoint / "model.safetensors"))
        (checkpoint / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (folder / "checkpoint-6" / "trainer_state.json").unlink()                 # stopped before its state
    weights = folder / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])                            # stopped inside its weights
    assert get_last_checkpoint(str(folder)).endswith("checkpoint-6")
    assert last_complete_checkpoint(folder) == str(folder / "checkpoint-2")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2"]
    err = capsys.readouterr().err
    assert "checkpoint-6 was not finished" in err and "checkpoint-4 was not finished" in err
