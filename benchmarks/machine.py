"""What the benchmarks print about the machine, and how they time: shared by ops.py and model.py."""
import statistics
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def median_seconds(fn, repeats: int, synchronize=lambda: None) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call (allocator, thread pool,
    lazy initialisation). `synchronize` waits for queued GPU work, so that it is counted."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
