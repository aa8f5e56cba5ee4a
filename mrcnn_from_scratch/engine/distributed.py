"""Training on several processes with DistributedDataParallel, as launched by torchrun.

    torchrun --standalone --nproc_per_node=N -m mrcnn_from_scratch train ...

torchrun starts N copies of the command and tells each its RANK, LOCAL_RANK and WORLD_SIZE through
environment variables. Each process holds a full copy of the model, trains on its own share of every
batch, and DDP averages the gradients across processes during backward, so the copies stay identical.
Processes talk through NCCL on GPUs and gloo on CPUs. Only rank 0 writes files and shows progress.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UsageError


@dataclass(frozen=True)
class Process:
    rank: int  # 0..world_size-1
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str) -> torch.device:
    """"auto" -> CUDA if there is a GPU, else the CPU; "cpu" and "cuda" as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: PyTorch sees no CUDA GPU here (a CPU-only build, or no driver); "
                         "use --device cpu")
    return torch.device(name)


def start_process(device_name: str) -> Process:
    """This process's place: under torchrun, join the process group (one GPU per process on CUDA)."""
    device = pick_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Process(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(dist.get_rank(), dist.get_world_size(), device)


def end_process(process: Process) -> None:
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(values: dict[str, torch.Tensor], process: Process) -> dict[str, float]:
    """Each value averaged over all processes, as Python floats (the same on every process)."""
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float() for name in names])
    if process.distributed:
        dist.all_reduce(stacked)
        stacked /= process.world_size
    return dict(zip(names, stacked.tolist()))


def gather_from_all(obj, process: Process) -> list:
    """Every process's `obj`, in rank order (a list of one without torchrun)."""
    if not process.distributed:
        return [obj]
    gathered = [None] * process.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
