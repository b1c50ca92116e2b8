"""Run by tests/test_training.py, alone or under `torchrun --nproc_per_node 2` (gloo): the loss and the
gradient of one fixed global batch of 4 query groups, each process holding its share of the queries.
Writes {"loss": ..., "grad": {name: list}} (rank 0) to the file named by argv[2]."""

import sys

import torch


def main() -> None:
    import os

    import torch.distributed as dist

    from ddp_common import report_like_ddp

    from dupmae_eval.training.finetune_data import GroupCollator
    from dupmae_eval.training.finetune_model import DupMAEForTraining
    from dupmae_eval.training.settings import make_settings

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = DupMAEForTraining.from_checkpoint(sys.argv[1], make_settings(group_size=2, doc_topk=20, query_max_length=16,
                                                                     passage_max_length=24)).eval().double()
    items = [{"query": f"query number {i} about topic {i * 7}",
              "passages": [f"passage on topic {i * 7} and more", f"unrelated words {i} here"]} for i in range(4)]
    share = len(items) // world
    batch = GroupCollator(net.tokenizer, 16, 24)(items[rank * share:(rank + 1) * share])
    # the same padding for every process's share as for the whole batch: pad to the global widths
    whole = GroupCollator(net.tokenizer, 16, 24)(items)
    for key in batch:
        width = whole[key].shape[1]
        batch[key] = torch.nn.functional.pad(batch[key], (0, width - batch[key].shape[1]))
    loss = net(**batch)["loss"]
    loss.backward()
    chosen = ("projection.weight", "masked_lm.cls.predictions.transform.dense.weight",
              "masked_lm.bert.embeddings.word_embeddings.weight")
    report_like_ddp(net, loss, chosen, sys.argv[2], world, rank)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
