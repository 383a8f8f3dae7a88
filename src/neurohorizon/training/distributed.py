"""Multi-process training through torchrun / DDP (gloo on CPU, NCCL on CUDA).

`torchrun --nproc_per_node=K -m neurohorizon train CONFIG.yaml` sets the env vars read here.
Each rank takes an interleaved slice of every global batch, and the loss is normalised by
the global count of (bin, unit) entries, so K processes reproduce one process's gradients
exactly when nothing is random (teacher forcing, no dropout). Otherwise each rank draws its own
dropout, unit-dropout and scheduled-sampling randomness, independent across ranks as it is
across one process's rows, so the runs agree in distribution, not bit for bit.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device_type: str = "cpu") -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_scalar(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank (decisions taken from a clock must agree, or ranks hang)."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()
