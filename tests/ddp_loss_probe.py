"""Run by tests/test_training.py, alone or under `torchrun --nproc_per_node 2` (gloo): the loss and the
gradient of one fixed global batch of 4 query groups, each process holding its share of the queries.
Writes {"loss": ..., "grad": {name: list}} (rank 0) to the file named by argv[2]."""

import json
import sys

import torch


def main() -> None:
    import os

    import torch.distributed as dist

    from dupmae_eval.training.data import GroupCollator
    from dupmae_eval.training.model import DupMAEForTraining
    from dupmae_eval.training.settings import make_settings

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = DupMAEForTraining.from_checkpoint(sys.argv[1], make_settings(group_size=2, doc_topk=20)).eval().double()
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
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}
    loss = loss.detach()
    if world > 1:   # what DDP does: average the loss (for the log) and every gradient over processes
        dist.all_reduce(loss)
        loss /= world
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world
    if rank == 0:
        chosen = ("projection.weight", "masked_lm.cls.predictions.transform.dense.weight",
                  "masked_lm.bert.embeddings.word_embeddings.weight")
        with open(sys.argv[2], "w") as handle:
            json.dump({"loss": float(loss), "grad": {name: grads[name].flatten()[grads[name].flatten() != 0][::7]
                                                     .tolist() for name in chosen}}, handle)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
