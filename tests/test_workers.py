"""The process border: the worker's result record, and workers that never outlive the agent or its lock."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clirun import REPO, clean_env
from sdagent.errors import BadInput
from sdagent.pipeline.workload import Workload
from sdagent.planning.launch import Launch
from sdagent.workers.parent import judge
from sdagent.workers.result import (RESULT_FORMAT, ImageSpan, Measurement, ProcessRecord, Window, failure,
                                    read_result)


def measurement(**kw) -> Measurement:
    base = dict(mode="images", workload=Workload(steps=2, height=64, width=64), latency_s=(1.0, 3.0, 2.0),
                process=ProcessRecord(("/x/libjemalloc.so.2",), 2, (0, 1), {"OMP_NUM_THREADS": "2"}, 42),
                load_average=(0.5, 0.4, 0.3), runs=({"unet_steps_s": [0.1, 0.2]}, {"unet_steps_s": [0.3]}),
                unet_evals=2, start_to_first_image_s=4.0)
    return Measurement(**{**base, **kw})


# ---------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------


def test_the_result_round_trips_through_json_with_its_format_tag():
    m = measurement(window=Window(10.0, 20.0), images=(ImageSpan(10.0, 11.5, 1.5),), mode="throughput")
    d = json.loads(json.dumps(m.to_dict()))
    assert d["format"] == RESULT_FORMAT and d["ok"] is True and d["latency_median_s"] == 2.0
    back = read_result(d)
    assert back == m
    assert back.unet_steps_s == (0.1, 0.2, 0.3) and back.unet_step_median_s == 0.2
    assert back.process.libraries == ("/x/libjemalloc.so.2",) and back.window.deadline == 20.0


def test_a_failed_workers_reason_and_a_foreign_file_are_told_apart():
    assert read_result(failure("exit 3: boom")) == "exit 3: boom"
    for bad, why in (({"ok": True, "latency_s": [1.0]}, "format None"),  # the unversioned dict of old
                     ({**measurement().to_dict(), "format": "sdagent-result/2"}, "sdagent-result/2"),
                     ({**measurement().to_dict(), "extra": 1}, "unknown keys ['extra']"),
                     ({**measurement().to_dict(), "mode": "video"}, "mode 'video'"),
                     ([1, 2], "expected a JSON object")):
        with pytest.raises(BadInput, match=why.replace("[", r"\[").replace("]", r"\]")):
            read_result(bad)


def test_the_parent_judges_a_crash_a_failure_a_foreign_file_and_a_preload_that_did_not_take():
    launch = Launch("plan", ("python",), {}, ("/x/libjemalloc.so.2", "/x/libiomp5.so"))
    crash = judge(-9, "Traceback\nMemoryError", None, 1.0, launch, ())
    assert not crash.ok and "killed by signal 9 (SIGKILL)" in crash.reason and crash.measurement is None
    assert judge(1, "", failure("no model"), 1.0, launch, ()).reason == "no model"
    assert "not a worker result" in judge(0, "", {"ok": True}, 1.0, launch, ()).reason
    res = judge(0, "", measurement().to_dict(), 1.0, launch, ())
    assert not res.ok and res.reason == "preload did not take: /x/libiomp5.so not mapped"
    assert res.measurement == measurement()  # the figures stay beside the reason
    ok = judge(0, "", measurement().to_dict(), 1.0, Launch("stock", ("python",)), ())
    assert ok.ok and ok.latency_s == 2.0


# ---------------------------------------------------------------------------
# Workers die with the agent; the host lock outlives the agent until they do
# ---------------------------------------------------------------------------

#: The agent's part: take the host lock as tune/bench do, start one worker, say its pid, wait to be killed.
PARENT = r"""
import signal, sys, time
from pathlib import Path
from sdagent.host.lock import bench_lock
from sdagent.planning.launch import Launch
from sdagent.workers.parent import WorkerProcess

class Job:
    def to_dict(self):
        return {"format": "test"}

lock, death, child = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with bench_lock("test", 5, path=Path(lock)):
    w = WorkerProcess(Launch("fake", (sys.executable, "-c", child)), Job(), death_signal=death)
    print(w.proc.pid, flush=True)
    time.sleep(120)
"""

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _start(tmp_path: Path, death: int, child: str) -> tuple[subprocess.Popen, int, Path]:
    lock = tmp_path / "bench.lock"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(lock), str(int(death)), child], env=clean_env(),
                              stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    worker = int(parent.stdout.readline())
    time.sleep(0.5)
    return parent, worker, lock


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_a_worker_dies_when_the_agent_is_sigkilled(tmp_path):
    parent, worker, lock = _start(tmp_path, signal.SIGKILL, "import time; time.sleep(60)")
    try:
        assert _alive(worker) and not _lock_free(lock)
        parent.kill()  # SIGKILL: no finally, no atexit
        parent.wait()
        assert _wait(lambda: not _alive(worker)), "the worker outlived its agent"
        assert _wait(lambda: _lock_free(lock))
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_host_lock_stays_held_while_a_worker_of_a_killed_agent_lives(tmp_path):
    """The worker's death signal here is one it ignores, so it outlives the agent: the lock must not be free
    until it has gone (the next benchmark would measure beside it)."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    parent, worker, lock = _start(tmp_path, signal.SIGTERM, code)
    try:
        parent.kill()
        parent.wait()
        time.sleep(0.5)
        assert _alive(worker) and not _lock_free(lock), "the lock was free while the agent's worker lived"
        os.kill(worker, signal.SIGKILL)
        assert _wait(lambda: not _alive(worker))
        assert _wait(lambda: _lock_free(lock))
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_lock_says_how_long_it_waited(tmp_path):
    import threading

    from sdagent.host.lock import bench_lock

    path = tmp_path / "l.lock"
    path.touch()
    other = os.open(path, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    threading.Timer(0.6, lambda: os.close(other)).start()
    with bench_lock("test", 10, path=path, poll_s=0.05) as held:
        assert held.path == path and 0.5 <= held.waited_s < 5
    with bench_lock("test", 10, path=path) as again:
        assert again.waited_s < 0.5


def test_sigkill_of_a_throughput_bench_takes_its_workers_and_frees_the_lock_only_after(tiny_model, tmp_path):
    """The real command: `sdagent bench --throughput` SIGKILLed while its workers run. Before, they went on
    in their own sessions beside the next benchmark, and the lock was free at once."""
    import psutil

    from clirun import sdagent_popen

    lock = tmp_path / "bench.lock"
    env = clean_env(SDAGENT_LOCK_FILE=str(lock))
    p = sdagent_popen("bench", "--model", str(tiny_model), "--steps", "2", "--height", "64", "--width", "64",
                      "--throughput", "--window", "600", env=env)
    workers: list[psutil.Process] = []

    def cmdline(k: psutil.Process) -> str:
        try:
            return " ".join(k.cmdline())
        except psutil.Error:  # a short-lived child (a probe) gone, or a zombie, between children() and here
            return ""

    def started() -> bool:
        try:
            kids = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return False
        workers[:] = [k for k in kids if "sdagent.measuring.worker" in cmdline(k)]
        return bool(workers)

    try:
        assert _wait(started, 120), p.stderr.read() if p.poll() is not None else "no worker started"
        assert not _lock_free(lock)
        p.kill()
        p.wait()
        assert _wait(lambda: not any(_alive(w.pid) for w in workers), 15), "a worker outlived the agent"
        assert _wait(lambda: _lock_free(lock))
    finally:
        if p.poll() is None:
            p.kill()
        for w in workers:
            if _alive(w.pid):
                os.kill(w.pid, signal.SIGKILL)
