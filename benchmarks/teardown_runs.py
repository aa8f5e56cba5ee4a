"""Count how often a 2-process torchrun training aborts at teardown ("terminate called without an active
exception": std::terminate in C++, after the last step, with no Python error).

    python benchmarks/teardown_runs.py [--runs 50] [--workers 0] [--keep DIR]

Each run is the torchrun training of tests/test_cli.py (2 CPU processes over gloo, the tiny model, 2
iterations on the tiny shapes dataset), one after another. It prints one line per run (return code,
seconds, whether it aborted) and at the end the number of aborts and other failures. The package is the
one beside this script (its folder is put first on PYTHONPATH). --keep DIR keeps every run's stderr.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY  # noqa: E402

ABORT = "terminate called without an active exception"


def command(data: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "mrcnn_from_scratch", "train", "--data", str(data), "--out", str(out), "--iters", "2",
            "--batch-size", "1", "--workers", str(workers), "--device", "cpu",
            "--set", *(f"{k}={v[0] if isinstance(v, tuple) else v}" for k, v in TINY.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (test_cli: 0, make train: 1)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a run counts as hung")
    parser.add_argument("--keep", type=Path, help="folder for each run's stderr")
    args = parser.parse_args()

    from mrcnn_from_scratch.data import generate_shapes_dataset

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    aborts, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        generate_shapes_dataset(data, train=8, val=4, size=64, seed=0, progress=False)
        for i in range(args.runs):
            started = time.monotonic()
            launcher = subprocess.Popen(command(data, Path(tmp) / f"run{i}", args.workers), env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _, stderr = launcher.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:  # a hang: torchrun stops its processes on SIGTERM
                launcher.send_signal(signal.SIGTERM)
                _, stderr = launcher.communicate()
                stderr += f"\n[teardown_runs] killed after {args.timeout} s\n"
            result = subprocess.CompletedProcess(launcher.args, launcher.returncode, None, stderr)
            aborted = ABORT in result.stderr
            if aborted:
                aborts.append(i)
            elif result.returncode != 0:
                failures.append(i)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"run{i:03d}.rc{result.returncode}.stderr").write_text(result.stderr)
            print(f"run {i:3d}: rc {result.returncode:3d}, {time.monotonic() - started:5.1f} s"
                  + (", ABORT at teardown" if aborted else ", FAILED" if result.returncode else ""), flush=True)
            if result.returncode and not aborted:
                print(result.stderr[-2000:], flush=True)
    print(f"{len(aborts)} aborts ({ABORT!r}) in {args.runs} runs ({100 * len(aborts) / args.runs:.1f}%), "
          f"{len(failures)} other failures; aborted runs: {aborts}")


if __name__ == "__main__":
    main()
