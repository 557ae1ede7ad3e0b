"""Several processes on one node, started by an existing launcher (``torchrun`` / ``accelerate launch``).

vecflow never spawns ranks itself: the launcher sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and the
rendezvous address), and ``setup(device)`` joins that process group — NCCL on CUDA (one GPU per local rank),
gloo on CPU. Without those variables (or with ``WORLD_SIZE=1``) every helper here is a no-op, so a single
process runs exactly the code it ran before.

Conventions the trainers follow:
- every rank computes the same deterministic batch order; ``shard(indices)`` gives this rank its part of a
  global batch (``indices[rank::world]``, like ``DistributedSampler`` without padding);
- gradients are all-reduced by ``torch.nn.parallel.DistributedDataParallel`` (``wrap_loss``);
- only rank 0 writes (``is_main()``); decisions taken from timings (budget plans, bf16 'auto') are taken on
  rank 0 and ``broadcast`` to the others, so every rank runs the same number of steps;
- metrics are summed over ranks with ``all_reduce_sum``.
"""

from __future__ import annotations

import atexit
import datetime
import os

from vecflow.core.errors import VecflowError

# Rank 0 evaluates (generation on the selection split) while the others wait in a collective; the default
# timeouts (10-30 min) would kill a long evaluation, so the wait is bounded by the job's runtime instead.
TIMEOUT = datetime.timedelta(hours=8)

_state: dict = {"device": None}


def launched_world_size() -> int:
    """The number of ranks the launcher started (1 outside a launcher)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise VecflowError(f"environment: WORLD_SIZE='{os.environ['WORLD_SIZE']}' is not an integer") from None


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    if not _initialized():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    if not _initialized():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def is_main() -> bool:
    return rank() == 0


def setup(device):
    """Join the launcher's process group when there is one; return the device this rank must use.

    CUDA: rank ``LOCAL_RANK`` takes GPU ``LOCAL_RANK`` (NCCL). CPU: gloo, and the CPU threads are divided
    among the node's ranks. Other devices (MPS) cannot run several ranks.
    """
    import torch

    world = launched_world_size()
    if world == 1:
        return device
    if _initialized():
        return _state["device"]
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise VecflowError(f"train.gpus: {local_world} ranks on this node but torch sees {count} CUDA "
                               f"device(s); set train.gpus (or the job's gpu resource) to at most {count}")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    elif device.type == "cpu":
        backend = "gloo"
        torch.set_num_threads(max(1, torch.get_num_threads() // max(local_world, 1)))
    else:
        raise VecflowError(f"device: '{device.type}' cannot run {world} ranks (NCCL needs cuda, gloo runs on cpu); "
                           "set train.gpus: 1")
    dist.init_process_group(backend, timeout=TIMEOUT)
    _state["device"] = device
    atexit.register(teardown)
    print(f"[vecflow] rank {dist.get_rank()}/{world} ({backend}) on {device}", flush=True)
    return device


def teardown() -> None:
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()
    _state["device"] = None


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (float64)."""
    if world_size() == 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_state["device"])
    dist.all_reduce(tensor)
    return tensor.tolist()


def main_first(fn):
    """``fn()`` on rank 0, then (after it finished) on the other ranks: rank 0 may clean up what they read."""
    if world_size() == 1:
        return fn()
    if is_main():
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def shard(indices: list, rank_: int | None = None, world: int | None = None) -> list:
    """This rank's part of a global batch: every ``world``-th index from position ``rank``."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return list(indices[rank_::world])


def wrap_loss(model, forward, device):
    """A DistributedDataParallel module computing ``forward(model, batch)``, or None with one rank.

    DDP must see the forward pass to all-reduce the gradients; wrapping the loss function (not only the
    model) covers losses that call parts of the model directly (e.g. the causal body + head). Unused
    parameters (a BERT pooler in a warm start, frozen groups) are allowed.
    """
    if world_size() == 1:
        return None
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class LossOf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return forward(self.model, batch)

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossOf(), device_ids=device_ids, find_unused_parameters=True)
