"""The torch.distributed module with two real gloo processes."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from onceforall.core.distributed import Dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    d = Dist(rank=rank, world=2)
    result = {}
    # gradients: averaged with one all-reduce; params without a gradient stay without
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.full((3,), float(rank + 1))
    b.grad = torch.tensor([0.0, 1.0, 0.0]) * (rank + 1)
    d.sync_grads([a, b, c])
    result["a"], result["b"], result["c"] = a.grad.clone(), b.grad.clone(), c.grad
    d.check_agree("same", "r32_k3e3")
    try:
        d.check_agree("archs", f"rank-{rank}")
        result["disagree_raised"] = False
    except RuntimeError as e:
        result["disagree_raised"] = "ranks disagree on archs" in str(e)
    result["name"] = d.broadcast_str(f"name-from-{rank}")
    module = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        module.weight.fill_(rank + 2.0)
        module.running_mean.fill_(rank - 1.0)
    d.broadcast_module(module)  # every rank starts from rank 0's parameters and buffers
    result["weight"], result["running_mean"] = module.weight.detach().clone(), module.running_mean.clone()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_sync_check_and_broadcast_with_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for r in (r0, r1):
        assert torch.equal(r["a"], torch.full((3,), 1.5))
        assert r["c"] is None
        assert r["disagree_raised"] is True
        assert r["name"] == "name-from-0"
        assert torch.equal(r["weight"], torch.full((2,), 2.0))
        assert torch.equal(r["running_mean"], torch.full((2,), -1.0))
    assert torch.equal(r0["b"], r1["b"])
    assert torch.allclose(r0["b"], torch.tensor([0.0, 1.0, 0.0]) * 1.5)


def test_single_process_is_a_no_op():
    d = Dist()
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    d.sync_grads([p])
    d.check_agree("x", "y")
    assert torch.equal(p.grad, torch.ones(2)) and d.broadcast_str("n") == "n" and d.is_main and not d.enabled
