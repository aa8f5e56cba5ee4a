"""Multi-machine training, played on one machine: two torchrun launchers of one process each meet at a
rendezvous endpoint on localhost, as two machines would (--nnodes 2). One process is killed mid-run: the
other stops, with one line that says so, and --resume continues the run to its end. On one machine
(--standalone), torchrun itself stops the other processes, and they say so too.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrcnn_from_scratch.engine.checkpoint import load_checkpoint
from mrcnn_from_scratch.engine.logbook import read_metrics

from conftest import TINY

# The launchers' processes are found through Linux's /proc.
pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
ITERS = 12
WAIT = 300  # seconds: generous bounds for a busy 2-core machine, not timings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def launch(shapes: Path, run: Path, port: int, run_id: str, log: Path) -> subprocess.Popen:
    """One "machine": torchrun with one process, meeting the other at localhost:port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id={run_id}",
               "-m", "mrcnn_from_scratch", "train", "--data", str(shapes), "--out", str(run), "--iters", str(ITERS),
               "--checkpoint-every", "1", "--val-every", "0", "--workers", "0", "--batch-size", "1", "--device", "cpu",
               "--resume", "--set", *(f"{k}={v[0] if isinstance(v, tuple) else v}" for k, v in TINY.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def workers_of(launcher: subprocess.Popen) -> list[int]:
    """The process ids of a torchrun launcher's training processes (its children)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_two_machines_one_dies_the_other_stops_and_resume_finishes(shapes, tmp_path):
    run = tmp_path / "run"
    port = free_port()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    launchers = [launch(shapes, run, port, "first", log) for log in logs]
    deadline = time.monotonic() + WAIT
    while not (run / "last.pt").exists() and time.monotonic() < deadline and all(p.poll() is None for p in launchers):
        time.sleep(0.05)
    assert (run / "last.pt").exists(), logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
    [victim] = workers_of(launchers[1])
    os.kill(victim, signal.SIGKILL)  # the second machine's process dies mid-run
    codes = [launcher.wait(timeout=WAIT) for launcher in launchers]  # both stop, in bounded time
    assert codes[0] != 0 and codes[1] != 0
    survivor = logs[0].read_text()
    # Whichever comes first: the collective that finds its partner gone, torchrun's SIGTERM, or, when the
    # rendezvous store lived on the machine that went away, the survivor's torchrun losing the store.
    ours = ("another process of this run stopped", "stopped by torchrun (SIGTERM)")
    assert any(line in survivor for line in (*ours, "Did the remote server shutdown or crash?")), survivor[-3000:]
    if any(line in survivor for line in ours):
        assert "train --resume continues from the last checkpoint" in survivor
    stopped_at = load_checkpoint(run / "last.pt")["iteration"]
    assert stopped_at < ITERS

    port = free_port()
    logs = [tmp_path / "a2.log", tmp_path / "b2.log"]
    launchers = [launch(shapes, run, port, "again", log) for log in logs]
    assert [launcher.wait(timeout=WAIT) for launcher in launchers] == [0, 0], logs[0].read_text()[-3000:]
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["iteration"] == ITERS and checkpoint["data_order"]["world_size"] == 2
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["type"] == "train"] == list(range(1, ITERS + 1))


def test_one_machine_torchrun_stops_the_others_with_a_line(shapes, tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "mrcnn_from_scratch", "train", "--data", str(shapes), "--out", str(run), "--iters", str(ITERS),
               "--checkpoint-every", "1", "--val-every", "0", "--workers", "0", "--batch-size", "1", "--device", "cpu",
               "--set", *(f"{k}={v[0] if isinstance(v, tuple) else v}" for k, v in TINY.items())]
    launcher = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log.open("w"),
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WAIT
    while not (run / "last.pt").exists() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    os.kill(workers_of(launcher)[1], signal.SIGKILL)
    assert launcher.wait(timeout=WAIT) != 0
    printed = log.read_text()
    # Whichever comes first: torchrun's SIGTERM, or the collective that finds its partner gone.
    assert any(line in printed for line in ("stopped by torchrun (SIGTERM)", "another process of this run stopped")), \
        printed[-3000:]
    assert "train --resume continues from the last checkpoint" in printed
