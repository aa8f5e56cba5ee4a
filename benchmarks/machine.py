"""What the benchmarks print about the machine, and how they time: shared by ops.py and model.py."""
import statistics
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def median_seconds(ours, theirs, repeats: int, synchronize=lambda: None) -> tuple[float, float]:
    """Median wall times of `ours()` and `theirs()` over `repeats` calls each, after one warm-up call of
    each (allocator, thread pool, lazy initialisation). The calls alternate, so that a machine that gets
    slower or faster during the run affects both sides alike. `synchronize` waits for queued GPU work."""
    def seconds(fn):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - start

    ours(), theirs()
    times = [(seconds(ours), seconds(theirs)) for _ in range(repeats)]
    return statistics.median(t for t, _ in times), statistics.median(t for _, t in times)
