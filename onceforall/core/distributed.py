"""Everything that talks to ``torch.distributed`` lives here.

Launch with torchrun (gloo on CPU, NCCL on GPU), never a home-made launcher::

    torchrun --nproc-per-node 2 -m onceforall train --config fashion-mnist-quick
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m onceforall train --config imagenet

Gradients are averaged with ONE explicit all-reduce per optimizer step over a flat buffer of every
gradient the step produced (all ranks sample the same archs, so they hold the same set of gradients).
BatchNorm keeps per-rank statistics (nn.SyncBatchNorm does not run on CPU).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "teardown"]


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sync_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of ``params`` across ranks with one all-reduce (flat buffer)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def check_agree(self, what: str, value: str) -> None:
        """Raise if ranks disagree on ``value`` (e.g. the archs sampled for a step)."""
        if not self.enabled:
            return
        digest = int(hashlib.sha256(value.encode()).hexdigest()[:15], 16)
        t = torch.tensor([digest, -digest], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # max(d) == d and max(-d) == -d on every rank iff all equal
        if int(t[0]) != digest or int(t[1]) != -digest:
            raise RuntimeError(f"ranks disagree on {what}: rank {self.rank} has {value[:200]}")

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (a stop one rank saw, e.g. a signal, taken by all at the
        same step, so that the checkpoint's collectives meet)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Make every rank start from rank 0's parameters and buffers."""
        if not self.enabled:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def broadcast_str(self, value: str) -> str:
        """Rank 0's ``value`` on every rank (e.g. a run name with a timestamp)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _restart_store(rank: int, world: int) -> dist.Store | None:
    """Under torchrun, the agent's store with a prefix of its own per restart; None: the default (env://).

    torchrun keeps one store for the whole job and the process group's keys (each rank's address) are not
    prefixed per restart: after ``--max-restarts`` restarted workers, a rank could read the address of a peer
    of the killed attempt and fail in gloo's connectFullMesh ("Connection refused"). A prefix with the restart
    number gives every attempt fresh keys."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    return dist.PrefixStore(f"onceforall/attempt-{os.environ['TORCHELASTIC_RESTART_COUNT']}", client)


def setup(device: str = "auto") -> Dist:
    """Join the process group if launched by torchrun (RANK/WORLD_SIZE set), pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}" if world > 1 else "cuda"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device: '{device}' is not available on this machine; valid: cpu, auto")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _restart_store(rank, world)
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world, device=dev)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
