"""Run by tests/test_pretraining.py, alone or under `torchrun --nproc_per_node 2` (gloo): the pre-training
loss (objective dupmae) and gradient of one fixed global batch of 4 sequences, each process holding its
share. Writes {"loss": ..., "grad": {name: list}} (rank 0) to the file named by argv[3]."""

import sys
from pathlib import Path


def main() -> None:
    import os

    import torch.distributed as dist

    from ddp_common import report_like_ddp

    from dupmae_eval.training.pretrain_data import PretrainCollator, PretrainDataset, TokenStore
    from dupmae_eval.training.pretrain_model import DupMAEForPretraining

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    net = DupMAEForPretraining.from_checkpoint(sys.argv[1], "dupmae", 0.1, True, seed=0).eval().double()
    store = TokenStore(Path(sys.argv[2]))
    data = PretrainDataset(store, net.tokenizer, 40, "truncate", 0.3, 0.5, seed=3)
    whole = PretrainCollator(net.tokenizer.pad_token_id)([data[i] for i in range(4)])   # the global padding
    share = 4 // world
    batch = {key: value[rank * share:(rank + 1) * share] for key, value in whole.items()}
    loss = net(**batch)["loss"]
    loss.backward()
    chosen = ("decoder.query.weight", "masked_lm.cls.predictions.transform.dense.weight",
              "masked_lm.bert.embeddings.word_embeddings.weight", "masked_lm.bert.encoder.layer.0.output.dense.weight")
    report_like_ddp(net, loss, chosen, sys.argv[3], world, rank)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
