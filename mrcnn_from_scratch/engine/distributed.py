"""Training on several processes with DistributedDataParallel, as launched by torchrun.

    torchrun --standalone --nproc_per_node=N -m mrcnn_from_scratch train ...

torchrun starts N copies of the command and tells each its RANK, LOCAL_RANK and WORLD_SIZE through
environment variables. Each process holds a full copy of the model, trains on its own share of every
batch, and DDP averages the gradients across processes during backward, so the copies stay identical.
Processes talk through NCCL on GPUs and gloo on CPUs. Only rank 0 writes files and shows progress.

On several machines, one torchrun per machine meets the others at a rendezvous endpoint (see README):

    torchrun --nnodes=2 --nproc-per-node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 --rdzv-id=RUN -m ...

When one process dies, the others must not wait for it forever: `stop_together` turns the error their
next collective operation gets (or torchrun's SIGTERM) into ProcessLost, one line, and the run continues
from its last checkpoint with `train --resume`.
"""
import os
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UsageError

# How long a collective operation waits for a process that neither answers nor closes its connection (a
# machine that went away). Longer than anything one process does while the others wait for it: rank 0
# scoring a validation with COCOeval, or writing a checkpoint.
PEER_TIMEOUT = timedelta(minutes=10)
# What gloo and NCCL say when the other end of a collective operation has gone.
PEER_GONE = re.compile(r"Connection (closed|reset) by peer|gloo|NCCL")


class ProcessLost(RuntimeError):
    """Another process of a multi-process run stopped (it failed, was killed, or its machine went away)."""


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
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=PEER_TIMEOUT)
    return Process(dist.get_rank(), dist.get_world_size(), device)


@contextmanager
def stop_together(process: Process):
    """Inside, a process whose partner died raises ProcessLost (one line) instead of a collective's error.

    Two ways the news arrives: the next collective operation fails (gloo at once, as the connection
    closes; NCCL after PEER_TIMEOUT), or torchrun, which stops every process of its machine when one
    fails, sends SIGTERM. Without torchrun's processes (world size 1) nothing changes."""
    if not process.distributed:
        yield
        return
    resume = "train --resume continues from the last checkpoint"

    def stopped_by_launcher(signum, frame):
        raise ProcessLost(f"rank {process.rank}: stopped by torchrun (SIGTERM), as another process of the run "
                          f"failed (torchrun's report names it). {resume}")

    previous = signal.signal(signal.SIGTERM, stopped_by_launcher)
    try:
        yield
    except (RuntimeError, dist.DistError) as error:
        # Only the errors of collectives: plain RuntimeErrors (gloo's) or DistErrors, that name a lost peer.
        collective = type(error) is RuntimeError or isinstance(error, dist.DistError)
        if not (collective and PEER_GONE.search(str(error))):
            raise
        first_line = str(error).strip().splitlines()[0]
        first_line = re.sub(r"^\[[^\]]*\] *", "", first_line)[:160]  # without gloo's "[source file:line]"
        raise ProcessLost(f"rank {process.rank}: another process of this run stopped ({first_line}); this one "
                          f"stops too. {resume}") from error
    finally:
        signal.signal(signal.SIGTERM, previous)


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
