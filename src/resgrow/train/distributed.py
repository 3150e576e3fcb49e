"""Data-parallel training over several processes, launched by `torchrun` (NCCL on GPUs, gloo on CPUs).

Every rank holds the whole model and trains on a disjoint shard of each global batch (the loader shards the
epoch's seeded permutation); after the backward, the gradients are averaged over the ranks as one flattened
buffer per dtype, inside the step. Why not DDP: the all-reduce sits inside the step that is captured as a
CUDA graph, and a size change needs no wrapper rebuilt (DDP registers its hooks on the parameters it was
built with): the next step simply reduces the new parameters.

Every rank makes the same decisions because it reads the same things: the metrics are summed over the
ranks; the BN running statistics (each rank's from its own shard) are averaged at the end of every epoch;
rank 0's random generators are copied to every rank before a method's hook runs, so new units and a meter's
start vectors are drawn alike; a score that decides a change is rank 0's (`RunContext.shared_value`). After
every size change rank 0's weights and statistics are broadcast anyway, and the ranks check that they made
the same change (one line if not). Only rank 0 writes the run directory; a stop asked of any rank (SIGTERM)
stops every rank after the same epoch.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from ..errors import ResgrowError

RANK_WAIT_S = 300  # how long a collective waits for a rank that stopped answering before the others give up


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _import_before_the_group() -> None:
    """Import, before the process group exists, the torch modules that bind `group.WORLD` as a default
    argument when imported (torch.distributed.nn.functional: ten functions). torch imports them lazily (the
    first optimizer built imports torch._dynamo, which imports them); imported after the group exists, they
    hold it past destroy_process_group, so gloo tears it down at interpreter exit instead, where a rank whose
    peer is still running (rank 0 writing the last checkpoint) dies of SIGABRT ("terminate called without an
    active exception") after a complete run. Imported first, they bind None."""
    import torch._dynamo  # noqa: F401
    import torch.distributed.nn.functional  # noqa: F401


class Ranks:
    """This process's place among the training processes; a single process by default, where every
    operation is a no-op."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, joined: bool = False):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.joined = joined  # from_env joined a process group (of one process too): close() leaves it

    @classmethod
    def from_env(cls, device_type: str, wait_s: float = RANK_WAIT_S) -> "Ranks":
        """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
        import torch.distributed as dist

        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", rank))
        except (KeyError, ValueError):
            raise ResgrowError("several processes need torchrun's RANK and WORLD_SIZE in the environment") from None
        if not dist.is_initialized():
            _import_before_the_group()
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend, timeout=timedelta(seconds=wait_s))
        return cls(rank, world, local, joined=True)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, in place."""
        if self.several:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def mean_grads(self, params) -> None:
        """Average the gradients over the ranks: one flattened all-reduce per dtype."""
        if self.several:
            self.mean_([p.grad for p in params if p.grad is not None])

    def mean_(self, tensors) -> None:
        """Average `tensors` over the ranks, in place: one flattened all-reduce per dtype."""
        if not self.several:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        by_dtype: dict = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = _flatten_dense_tensors(group)
            dist.all_reduce(flat)
            flat.div_(self.world)
            for t, reduced in zip(group, _unflatten_dense_tensors(flat, group)):
                t.copy_(reduced)

    @torch.no_grad()
    def average_buffers(self, model) -> None:
        """The mean over the ranks of the model's floating-point buffers (BN running statistics, which each rank
        gathers from its own shard): the same model on every rank for evaluation, decisions and checkpoints."""
        self.mean_([b for b in model.buffers() if b.is_floating_point()])

    @torch.no_grad()
    def broadcast_(self, modules) -> None:
        """Rank 0's parameters and buffers into every rank's `modules`, in place."""
        if not self.several:
            return
        import torch.distributed as dist

        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, 0)

    def same_rng(self, device) -> None:
        """Rank 0's random number generators on every rank, before a method decides and builds a change: its
        random draws (new units, a meter's start vectors) are then the same everywhere."""
        if not self.several:
            return
        import torch.distributed as dist

        states = [("cpu", torch.get_rng_state())]
        if device.type == "cuda":
            states.append(("cuda", torch.cuda.get_rng_state(device)))
        for kind, state in states:
            t = state.to(device)
            dist.broadcast(t, 0)
            if kind == "cpu":
                torch.set_rng_state(t.cpu())
            else:
                torch.cuda.set_rng_state(t.cpu(), device)

    def true_on_any(self, flag: bool, device) -> bool:
        """True on every rank if it is true on any."""
        if not self.several:
            return flag
        t = torch.tensor(int(flag), device=device)
        self.sum_(t)
        return bool(t.item())

    def rank0_value(self, x: float, device) -> float:
        """Rank 0's value on every rank (a method's score that decides a change)."""
        if not self.several:
            return x
        import torch.distributed as dist

        t = torch.tensor(float(x), dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())

    def check_agree(self, what: str, text: str) -> None:
        """Fail with one line unless every rank says the same `text` about `what`."""
        if not self.several:
            return
        import torch.distributed as dist

        said: list = [None] * self.world
        dist.all_gather_object(said, text)
        if len(set(said)) > 1:
            each = "; ".join(f"rank {r}: {s}" for r, s in enumerate(said))
            raise ResgrowError(f"the ranks disagree on {what}: {each}")

    def close(self) -> None:
        if self.joined:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.joined = False
