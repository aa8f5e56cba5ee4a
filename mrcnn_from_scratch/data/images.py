"""Reading an image file: the one place where pixels are decoded, so that every way a file can be bad
(missing, empty, cut short, not an image) ends in one DataError naming the file (and the image's id).
"""
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError


def load_image(path: str | Path, name: str | None = None) -> torch.Tensor:
    """The image file as float32 [3, H, W], RGB in [0, 1] (grayscale, palette and RGBA are converted).

    Raises DataError "{name}: ...: path" for a missing, empty, truncated or undecodable file; `name` says
    which image it is, such as "image 12 (a.png)" (default: the path).
    """
    path = Path(path)
    name = f"{name}: " if name else ""
    if not path.is_file():
        raise DataError(f"{name}{'a folder, not an image' if path.is_dir() else 'file not found'}: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{name}the file is empty (0 bytes): {path}")
    try:
        # PIL warns (DecompressionBombWarning) about very large images and decodes them lazily: load()
        # here makes a truncated file fail now, with its name, not later in a worker.
        with warnings.catch_warnings(), Image.open(path) as file:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            file.load()
            pixels = np.array(file.convert("RGB"))  # a writable copy, for torch.from_numpy
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # PIL's errors for truncated files ("image file is truncated"), unknown formats
        # ("cannot identify image file") and corrupt data.
        raise DataError(f"{name}cannot decode {path}: {error}") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float() / 255
