"""SIGKILL at random moments of a run that checkpoints every step: last.pt always loads, the iteration never
goes backwards, and after the next start no temporary file remains and the run ends as one whole run.

Each kill waits until the process has written a checkpoint of its own (so the kill lands in training, on
any machine speed), then either a random part of a step or until the next checkpoint write has begun
(a kill mid-write, the case that leaves a temporary file). The count of kills bounds the test's time.
"""
import os
import random
import signal
import subprocess
import sys
import time

from mrcnn_from_scratch.engine.checkpoint import load_checkpoint
from mrcnn_from_scratch.engine.logbook import read_metrics

from conftest import TINY

KILLS, ITERS = 4, 30  # half of the kills land mid-write
STARTED_TIMEOUT = 120  # seconds to wait for a process's first checkpoint: generous, for a busy machine


def test_kills_during_checkpoint_writes_never_lose_the_run(shapes, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mrcnn_from_scratch", "train", "--data", str(shapes), "--out", str(run),
               "--iters", str(ITERS), "--checkpoint-every", "1", "--val-every", "0", "--workers", "0",
               "--batch-size", "2", "--resume", "--set", *(f"{k}={v[0] if isinstance(v, tuple) else v}"
                                                           for k, v in TINY.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    chance = random.Random(0)
    checkpoint, last_iteration, kills = run / "last.pt", 0, 0
    while kills < KILLS:
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + STARTED_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline and (
                not checkpoint.exists() or checkpoint.stat().st_mtime_ns == before):
            time.sleep(0.01)
        if process.poll() is not None:  # finished (or failed) before the kill
            assert process.returncode == 0, process.stderr.read().decode()[-3000:]
            break
        if kills % 2:  # at a random moment: about one step with its checkpoint write
            time.sleep(chance.uniform(0, 0.4))
        else:  # as soon as a checkpoint write has begun: its temporary file exists
            while process.poll() is None and not list(run.glob(".last.pt.*.tmp")):
                time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        kills += 1
        left = len(list(run.glob(".last.pt.*.tmp")))
        print(f"kill {kills}: {left} temporary files left")
        iteration = load_checkpoint(checkpoint)["iteration"]  # always whole: it loads
        assert iteration >= last_iteration
        last_iteration = iteration

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not list(run.glob(".last.pt.*.tmp"))
    assert load_checkpoint(checkpoint)["iteration"] == ITERS
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["type"] == "train"] == list(range(1, ITERS + 1))
