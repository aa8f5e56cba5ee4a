"""RUN/last.pt: everything needed to evaluate a run, predict with it, or continue it exactly.

A checkpoint is a dict:
    "model": the model's state_dict;  "config": MaskRCNNConfig as a dict (class_names included);
    "class_names": names of labels 1..K;  "iteration": steps done;  "train_seconds": time spent on them;
    "settings": what defines the run (settings.RUN_SETTINGS);  "optimizer", "scheduler", "scaler": their
    state_dicts;  "rng": per process {"torch", "cuda", "numpy", "python"} generator states;
    "data_order": {"seed", "batch_size", "world_size", "next_step"}: with ShuffledBatches, the position
    in the data order is just the next step's number.

Everything in it is a tensor or a plain Python value, so `torch.load(..., weights_only=True)` (the safe
loader, which runs no code from the file) reads it.
"""
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..config import MaskRCNNConfig
from ..model import MaskRCNN
from ..pretrained import load_file
from .errors import UsageError


def capture_rng_state(device: torch.device) -> dict:
    """The state of every random generator this process draws from."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        # NumPy's Mersenne Twister key (uint32[624]) is stored as a tensor for the weights_only loader.
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
        "python": random.getstate(),
    }


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    random.setstate(state["python"])


def save_atomically(checkpoint: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename it over `path`.

    The rename is atomic: a crash while writing leaves the previous checkpoint whole, never half a file.
    (The temporary file must be on the same file system as `path`, hence the same folder.)
    """
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise UsageError(f"cannot write the checkpoint {path}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(checkpoint, file)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):  # a full disk, a lost network drive: not a bug of ours
            kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was written yet"
            raise UsageError(f"cannot write the checkpoint {path}: {error.strerror or error} ({kept}); free some "
                             "space, then train --resume") from None
        raise


def remove_stale_temporaries(path: Path) -> None:
    """Delete what `save_atomically` left beside `path` when the process was killed mid-write."""
    for temporary in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, on the CPU; UsageError if the file is missing, cannot be read, or is a weights
    file but not a checkpoint of `train` (such as torchvision's state dicts)."""
    try:
        checkpoint = load_file(path)
    except FileNotFoundError:
        raise UsageError(f"checkpoint not found: {path} (train writes RUN/last.pt)") from None
    except ValueError:
        raise UsageError(f"cannot read the checkpoint {path}: it is damaged or not a checkpoint. Delete it to "
                         "start the run again, or restore a copy") from None
    if not isinstance(checkpoint, dict) or not {"model", "config", "class_names"} <= checkpoint.keys():
        raise UsageError(f"{path} is a weights file but not a checkpoint of train (RUN/last.pt): for torchvision's "
                         "COCO weights use predict --torchvision-weights, to fine-tune from weights train --init")
    return checkpoint


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> MaskRCNN:
    """The trained model of a checkpoint, built from its own config, in eval mode on `device`."""
    checkpoint = load_checkpoint(path)
    model = MaskRCNN(MaskRCNNConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()
