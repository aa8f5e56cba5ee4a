"""Count what a GPU would have to do for one training step and one inference, ours against torchvision's.

    python benchmarks/launches.py [--by-op]

On a GPU, every operator that computes launches at least one kernel (a few microseconds of host time
each), and every operator that needs a value back on the host makes the host wait until the GPU has
finished all the work queued before it. Neither needs a GPU to be counted: torch.profiler records the
same operator calls on the CPU. This script counts, for the same weights and inputs in one run:
- leaf operator calls: `aten::`/`torchvision::` calls with no operator inside them, leaving out views
  and empty allocations, which launch no kernel;
- syncing calls: `.item()` and everything built on it (`bool(t)`, `int(t)`, `aten::is_nonzero`),
  `nonzero` (also inside `torch.where(mask)` and boolean-mask indexing), `unique`, `torch.equal`,
  `masked_select`, a tensor made from Python data (`torch.tensor`, `as_tensor`: a blocking copy to the
  device), `.tolist()`, and one per `torchvision::nms` call (its CUDA kernel reads its mask back).
  A syncing call inside another one counts once.
`--by-op` also prints where the syncs come from.
"""
import argparse
import collections
import datetime

import torch
import torchvision
from torch.overrides import TorchFunctionMode

from machine import cpu_name
from model import make_models, training_batch

# Operators whose result the host must read: on a GPU they wait for the queue to drain.
SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::_unique2", "aten::unique_dim",
           "aten::unique_consecutive", "aten::masked_select", "aten::lift_fresh", "torchvision::nms"}
# Operators that only allocate or change metadata in place: no kernel.
NO_KERNEL = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
             "aten::new_empty_strided", "aten::resize_", "aten::detach_", "aten::as_strided_",
             "aten::squeeze_", "aten::unsqueeze_", "aten::t_", "aten::transpose_", "aten::set_"}


def is_view(name: str) -> bool:
    """True if the operator's schema says its result aliases an input without writing to it."""
    namespace, op = name.split("::")
    packet = getattr(getattr(torch.ops, namespace), op, None)
    if packet is None:
        return False
    schemas = [getattr(packet, overload)._schema for overload in packet.overloads()]
    return any(s.returns and s.returns[0].alias_info is not None and not s.returns[0].alias_info.is_write
               for s in schemas)


class CountToList(TorchFunctionMode):
    """`.tolist()` copies to the host and waits, but calls no operator the profiler would see on a CPU."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def count(step) -> tuple[int, collections.Counter]:
    """Run `step()` under the profiler. Returns the number of leaf calls and the syncs by source: the
    outermost operator around each syncing call (for example `aten::index` for boolean-mask indexing)."""
    tolist = CountToList()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, tolist:
        step()
    leaves, syncs, view_cache = 0, collections.Counter(), {}
    for event in prof.events():
        if not event.name.startswith(("aten::", "torchvision::")):
            continue
        ancestors = []
        parent = event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if event.name in SYNCING and not SYNCING.intersection(ancestors):
            syncs[(ancestors[-1] if ancestors else event.name)] += 1
        has_op_children = any(c.name.startswith(("aten::", "torchvision::")) for c in event.cpu_children)
        if event.name not in view_cache:
            view_cache[event.name] = event.name in NO_KERNEL or is_view(event.name)
        if not has_op_children and not view_cache[event.name] and not SYNCING.intersection(ancestors):
            leaves += 1
    if tolist.calls:
        syncs["Tensor.tolist"] += tolist.calls
    return leaves, syncs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--by-op", action="store_true", help="also list the sources of the syncs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ours, theirs = make_models(torch.device("cpu"))
    images, targets = training_batch(torch.device("cpu"), size=320)
    test_image = [torch.rand(3, 300, 400, generator=torch.Generator().manual_seed(2))]

    def train_step(model):
        def step():
            model.train()
            torch.manual_seed(3)
            losses = model(images, targets)
            sum(losses.values()).backward()
        return step

    detections = {}

    def infer(model):
        def step():
            model.eval()
            with torch.no_grad():
                detections[model] = len(model(test_image)[0]["boxes"])
        return step

    print(f"{datetime.date.today()}  {cpu_name()}  torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"| path | leaf ops, ours / torchvision | syncing calls, ours / torchvision |\n|---|---|---|")
    results = {}
    # Inference first: a training step in BatchNorm's training mode changes the running statistics,
    # and with them the detections.
    for case, make_step in [("inference (1 × 300×400)", infer),
                            ("training step (2 × 320×320, 3 objects each)", train_step)]:
        make_step(ours)(), make_step(theirs)()  # warm-up: lazy initialisation is not part of a step
        (ours_leaves, ours_syncs), (their_leaves, their_syncs) = count(make_step(ours)), count(make_step(theirs))
        results[case] = ours_syncs, their_syncs
        if make_step is infer:
            case += f", {detections[ours]} / {detections[theirs]} detections"
        print(f"| {case} | {ours_leaves:,} / {their_leaves:,} ({ours_leaves / their_leaves:.2f}×) "
              f"| {sum(ours_syncs.values()):,} / {sum(their_syncs.values()):,} "
              f"({sum(ours_syncs.values()) / max(1, sum(their_syncs.values())):.2f}×) |")
    if args.by_op:
        for case, (ours_syncs, their_syncs) in results.items():
            print(f"\nsyncs in the {case}, by the operator they come from (ours / torchvision):")
            for source in sorted(set(ours_syncs) | set(their_syncs), key=lambda s: -ours_syncs[s] - their_syncs[s]):
                print(f"  {source:32s} {ours_syncs[source]:6d} / {their_syncs[source]:6d}")


if __name__ == "__main__":
    main()
