"""RUN/metrics.jsonl and RUN/loss.png: what a run records as it goes.

metrics.jsonl holds one JSON object per line, in order of iteration:
    {"type": "train", "iteration": 12, "lr": ..., "loss": ..., "loss_classifier": ..., ...,
     "grad_norm": ..., "seconds": ...}                 after a logged training step
    {"type": "val", "iteration": 100, "segm.AP": ..., "bbox.AP": ..., ...}   after a validation
"""
import json
import warnings
from pathlib import Path

from matplotlib.figure import Figure

from .errors import UsageError

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics file. A half-written last line (the process was killed while writing
    it) is left out with a warning; a bad line before it means the file was edited, and is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UsageError(f"{path}, line {number}: not a JSON record; repair or delete the line") from None
            warnings.warn(f"{path}: the last line was cut off (the run was stopped while writing it); left out",
                          stacklevel=2)
    return records


class MetricsLog:
    """Appends records to RUN/metrics.jsonl.

    `upto`: when resuming from iteration k, the records after k (written by the interrupted run after
    its last checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: Path, upto: int = 0):
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if r["iteration"] <= upto]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict) -> None:
        try:
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
        except OSError as error:  # a full disk, a lost network drive: not a bug of ours
            raise UsageError(f"cannot write {self.path}: {error.strerror or error}; free some space, then "
                             "train --resume") from None


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Draw the loss curves (log scale) and, if the run was validated, mask and box AP over iterations.

    Uses matplotlib's object interface (Figure, not pyplot), which renders to a file with no display
    and leaves any notebook's backend alone.
    """
    records = read_metrics(metrics_path)
    steps = [r for r in records if r["type"] == "train"]
    validations = [r for r in records if r["type"] == "val"]
    figure = Figure(figsize=(11, 4) if validations else (6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if validations else 1, squeeze=False)[0]
    iterations = [r["iteration"] for r in steps]
    for name in ("loss", *LOSS_TERMS):
        axes[0].plot(iterations, [r[name] for r in steps], label=name, linewidth=2 if name == "loss" else 1)
    axes[0].set(xlabel="iteration", ylabel="loss", yscale="log", title="training losses")
    axes[0].legend(fontsize="small")
    if validations:
        for key in ("segm.AP", "segm.AP50", "bbox.AP"):
            axes[1].plot([r["iteration"] for r in validations], [r[key] for r in validations], "o-", label=key)
        axes[1].set(xlabel="iteration", ylabel="COCO AP", ylim=(0, 1), title="validation")
        axes[1].legend(fontsize="small")
    try:
        figure.savefig(png_path, dpi=100)
    except OSError as error:  # the curves are a convenience: a full disk must not hide the run's own error
        warnings.warn(f"cannot write {png_path}: {error.strerror or error}", stacklevel=2)
