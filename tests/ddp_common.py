"""Shared by the torchrun probes (tests/ddp_*_probe.py): what DDP does to a step's loss and gradients, and
the probe's report."""

import json

import torch


def report_like_ddp(net: torch.nn.Module, loss: torch.Tensor, chosen, path: str, world: int, rank: int) -> None:
    """Average the loss (as the log does) and every gradient (as DDP does) over the processes, then write
    {"loss", "grad": {name: every 7th non-zero value}} for the `chosen` parameters (rank 0)."""
    import torch.distributed as dist

    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}
    loss = loss.detach()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world
    if rank == 0:
        with open(path, "w") as handle:
            json.dump({"loss": float(loss), "grad": {name: grads[name].flatten()[grads[name].flatten() != 0][::7]
                                                     .tolist() for name in chosen}}, handle)
