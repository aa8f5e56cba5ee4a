"""Where the commands write: never over a file they read, and checked before the work starts.

`evaluate --out` and `predict --out` name files that a typo can point at an input: the checkpoint, the
annotation file, an image. Writing there would destroy the input and still exit 0, so such a path is
refused, and a path that cannot be written is refused before minutes of evaluation, not after.
"""
import os
from pathlib import Path

from .errors import UsageError


def check_output_file(out: Path, inputs: list[Path]) -> None:
    """UsageError unless `out` can be written as a file and is none of `inputs` (files or folders whose
    files are inputs)."""
    out = Path(out)
    target = out.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or (source.is_dir() and source in target.parents):
            raise UsageError(f"--out {out} would overwrite an input ({source}): choose another file")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name, such as {out / 'eval.json'}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: cannot write into {folder} (missing, or not writable)")


def check_output_folder(out: Path) -> None:
    """UsageError unless `out` is a folder, or can be made one: not a file, inside a writable folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose a folder")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"--out {out}: cannot make it inside {existing} (not a writable folder)")


def picture_paths(images: list[Path], out: Path) -> list[Path]:
    """One PNG in `out` per image, named after it; when two images share a name (a/x.jpg, b/x.png) the
    later ones get _2, _3, ... so that no picture replaces another. An input image is never a target."""
    inputs = {Path(image).resolve() for image in images}
    taken, paths = set(), []
    for image in images:
        stem, number = Path(image).stem, 1
        path = out / f"{stem}.png"
        while path in taken or path.resolve() in inputs:
            number += 1
            path = out / f"{stem}_{number}.png"
        taken.add(path)
        paths.append(path)
    return paths
