"""No stale, no false verdicts: verify killed mid-run, a planned preload gone, two benchmarks at once,
and the bad input a new user tries first. End to end through the CLI on the tiny model."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from clirun import PY, clean_env, sdagent, sdagent_popen
from conftest import copy_store
from sdagent.host.software import find_library

pytestmark = pytest.mark.slow

WL = ["--steps", "2", "--height", "64", "--width", "64", "--warmup", "1"]


@pytest.fixture()
def targets(tmp_path) -> str:
    p = tmp_path / "targets.yml"
    p.write_text(yaml.safe_dump([{"name": "smoke", "match": {"model": "tiny"}, "p50_s": 120, "min_runs": 5}]))
    return str(p)


@pytest.fixture()
def lock_env(tmp_path) -> dict[str, str]:
    """A benchmark lock of this test's own, so a test never waits for another process on the machine."""
    return clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "bench.lock"))


def stale_pass(report: Path, prom: Path) -> None:
    report.write_text(json.dumps({"exit_code": 0, "verdict": "pass"}))
    prom.write_text('sdagent_verify_exit_code{sdagent_instance="0"} 0\n')


def wait_for(pred, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_verify_terminated_mid_run_replaces_the_old_pass_with_an_error_record(tiny_model, tmp_path, targets,
                                                                              lock_env):
    report, prom = tmp_path / "verify.json", tmp_path / "sdagent.prom"
    stale_pass(report, prom)
    # many timed runs: verify is still measuring when the unit's timeout (SIGTERM) comes
    p = sdagent_popen("--plan-file", "/dev/null/none", "verify", "--model", str(tiny_model), "--targets", targets,
                      *WL, "--runs", "100000", "--report", str(report), "--prometheus", str(prom), env=lock_env)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "plan file" in err  # (a bad plan file path is bad input: recorded too)
    assert json.loads(report.read_text())["exit_code"] == 2
    stale_pass(report, prom)
    p = sdagent_popen("exec", "--", PY, "-m", "sdagent", "verify", "--model", str(tiny_model), "--targets", targets,
                      *WL, "--runs", "100000", "--report", str(report), "--prometheus", str(prom), env=lock_env)
    time.sleep(8)  # loaded and measuring
    assert p.poll() is None
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    d = json.loads(report.read_text())
    assert d["exit_code"] == 143 and d["verdict"] == "terminated" and d["error"]["exit_code"] == 143
    assert "SIGTERM" in d["error"]["reason"] and d["error"]["time"] > 0
    assert 'sdagent_verify_exit_code{sdagent_instance="0"} 143' in prom.read_text()
    assert "Traceback" not in err


def test_a_tuned_plans_preload_gone_missing_is_a_recorded_swap_and_a_warning(tiny_model, tmp_path, targets,
                                                                              lock_env):
    """Issue 24's rule: the tuned plan's jemalloc is gone but the host has its own copy, so the plan in force
    uses the host's (a recorded decision) and verify warns (the tuned figures were measured with the other
    file). Gone with no host copy is exit 3: tests/test_library_decisions.py covers that row."""
    src = find_library("jemalloc")
    if src is None:
        pytest.skip("libjemalloc is not installed here (apt-get install libjemalloc2): nothing to remove")
    lib = tmp_path / "lib" / "libjemalloc.so.2"
    lib.parent.mkdir()
    shutil.copy(src, lib)
    os.chmod(lib, 0o644)
    plan = tmp_path / "plan.json"
    r = sdagent("plan", "--set", f"jemalloc_path={lib}", "--set", "allocator=jemalloc", "-o", str(plan), env=lock_env)
    assert r.returncode == 0, r.stderr
    d = json.loads(plan.read_text())
    d["source"] = "tuned"  # as `sdagent tune` would have written it
    plan.write_text(json.dumps(d))
    ok = sdagent("--plan-file", str(plan), "exec", "--", PY, "-m", "sdagent", "verify", "--model", str(tiny_model),
                 "--targets", targets, *WL, "--json", env=lock_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lib.unlink()
    for how in ("direct", "exec"):  # the plan file read by verify itself, or handed on by exec
        pre = ("--plan-file", str(plan), "exec", "--", PY, "-m", "sdagent") if how == "exec" else \
            ("--plan-file", str(plan))
        r = sdagent(*pre, "verify", "--model", str(tiny_model), "--targets", targets, *WL, "--json", env=lock_env)
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert checks["plan_honoured"]["status"] == "warn" and str(lib) in checks["plan_honoured"]["detail"]
        # under exec the host's copy is preloaded: a pass with the warning; read directly, nothing is
        # preloaded at all, which is the allocator check's exit 3 as for any plan outside exec
        assert r.returncode == (0 if how == "exec" else 3), (how, r.stdout, r.stderr)
        assert checks["allocator"]["status"] == ("pass" if how == "exec" else "fail")


def test_two_benchmarks_at_once_the_second_waits_then_exits_5_naming_the_first(tiny_model, tmp_path, targets,
                                                                                lock_env):
    first = sdagent_popen("bench", "--model", str(tiny_model), *WL, "--runs", "100000", env=lock_env)
    try:
        lock = Path(lock_env["SDAGENT_LOCK_FILE"])
        wait_for(lambda: lock.exists() and str(first.pid) in Path("/proc/locks").read_text())
        report = tmp_path / "second.json"
        t0 = time.monotonic()
        second = sdagent("--lock-timeout", "2", "verify", "--model", str(tiny_model), "--targets", targets, *WL,
                         "--report", str(report), env=lock_env)
        assert second.returncode == 5, second.stderr
        assert time.monotonic() - t0 < 60
        assert f"pid {first.pid}" in second.stderr and "bench" in second.stderr
        assert json.loads(report.read_text())["verdict"] == "inconclusive"
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    # the lock went with its holder: the next one runs
    r = sdagent("--lock-timeout", "5", "bench", "--model", str(tiny_model), *WL, "--runs", "1", env=lock_env)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, needle", [
    (["tune", "--model", "M", "--budget", "nan"], "'nan' is not a finite number"),
    (["tune", "--model", "M", "--budget", "inf"], "'inf' is not a finite number"),
    (["tune", "--model", "M", "--timeout", "nan"], "--timeout"),
    (["run", "--model", "M", "--prompt", "x", "--guidance", "nan", "-o", "OUT"], "'nan' is not a finite number"),
    (["bench", "--model", "M", "--steps", "1000000000"], "invalid steps 1000000000"),
    (["run", "--model", "M", "--prompt", "x", "--height", "100000", "--width", "100000", "-o", "OUT"],
     "needs about"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_model, tmp_path, args, needle):
    args = [str(tiny_model) if a == "M" else str(tmp_path / "x.png") if a == "OUT" else a for a in args]
    r = sdagent(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_bad_topology_and_plan_files(tmp_path):
    topo = json.loads(sdagent("topology", "--json").stdout)
    for name, change, needle in (
        ("nocpu", {"cpus": [], "allowed_cpus": []}, "'cpus' is empty"),
        ("period", {"cgroup": {"version": 2, "quota_us": 100000, "period_us": 0}}, "both must be > 0"),
    ):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({**topo, **change}))
        r = sdagent("--topology-file", str(f), "plan")
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    plan = json.loads(sdagent("plan", "--json").stdout)
    plan["request"]["instances"] = "two"
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(plan))
    r = sdagent("--plan-file", str(f), "plan")
    assert r.returncode == 2 and "request.instances must be an integer" in r.stderr


def test_sizes_beyond_memory_are_refused_up_front_with_the_estimate(tiny_model):
    from sdagent.errors import BadInput
    from sdagent.pipeline.modeldir import check_model_dir
    from sdagent.pipeline.workload import Workload, check_fits_in_memory, memory_estimate_bytes

    md = check_model_dir(tiny_model)
    e = {s: memory_estimate_bytes(md, Workload(height=s, width=s)) for s in (64, 4096, 8192)}
    assert 0 < e[64] < e[4096] < e[8192]
    assert math.isclose(e[8192] - e[64], 4 * (e[4096] - e[64]), rel_tol=0.01)  # activations grow with the area
    check_fits_in_memory(md, Workload(height=64, width=64), available=2**30)
    with pytest.raises(BadInput, match=r"invalid size 8192x8192: one image of it needs about [0-9.]+ GiB"):
        check_fits_in_memory(md, Workload(height=8192, width=8192), available=2**30)


def test_compiled_packages_built_ahead_are_verified_and_a_fallback_is_exit_3(tiny_model, tmp_path, targets,
                                                                            lock_env, aot_store):
    # the session's build (conftest aot_store: `model compile` into an empty store) built all three
    plan = aot_store["plan"]
    store = copy_store(aot_store, tmp_path / "artifacts")
    built = aot_store["compile"]["artifacts"]
    assert set(built) == {"unet", "vae_decoder", "text_encoder"}
    assert set(aot_store["compile"]["built"]) == set(built)
    # again, with verify's own workload options: every package is found, nothing built (the role's `changed`)
    again = sdagent("--plan-file", str(plan), "model", "compile", "--model", str(tiny_model), *WL[:6],
                    "--artifacts", str(store), "--json", env=lock_env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["built"] == [] and json.loads(again.stdout)["artifacts"] == built
    under = ("--plan-file", str(plan), "exec", "--", PY, "-m", "sdagent", "verify", "--model", str(tiny_model),
             "--targets", targets, *WL, "--json")
    ok = sdagent(*under, "--artifacts", str(store), env=lock_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    d = json.loads(ok.stdout)
    check = {c["name"]: c for c in d["checks"]}["artifact"]
    assert check["status"] == "pass" and built["unet"] in check["detail"] and d["bench"]["startup_s"] > 0
    # a store the agent cannot write, with no package in it: the plan's compiled path falls back to eager
    bad = sdagent(*under, "--artifacts", "/proc/sdagent-no-store", env=lock_env)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    check = {c["name"]: c for c in json.loads(bad.stdout)["checks"]}["artifact"]
    assert check["status"] == "fail" and "the UNet ran eager" in check["detail"]


# ---------------------------------------------------------------------------
# Issue 20: full and read-only filesystems (a small tmpfs the test mounts), kills, SIGTERM in native code
# ---------------------------------------------------------------------------


@pytest.fixture()
def small_fs(tmp_path):
    """mount(size, ro=False) -> a fresh tmpfs of `size` under tmp_path (skipped where mounting is not permitted)."""
    mounted: list[Path] = []

    def mount(size: str, ro: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "sdagent-test",
                            str(where)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({r.stderr.strip() or r.returncode}): the "
                        "injected-writer tests in test_robust_cli.py cover the same paths")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(where: Path) -> None:
    with contextlib.suppress(OSError), open(where / "filler", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def test_full_and_read_only_outputs_are_refused_before_any_work(tiny_model, small_fs, lock_env):
    full, ro = small_fs("64k"), small_fs("64k", ro=True)
    fill(full)
    for where, why in ((full, "full filesystem"), (ro, "read-only filesystem")):
        for args in (["plan", "-o", str(where / "plan.json")], ["topology", "-o", str(where / "t.json")],
                     ["env", "-o", str(where / "tuned.env")],
                     ["bench", "--model", str(tiny_model), *WL, "--runs", "1", "-o", str(where / "b.json")],
                     ["model", "create", "--preset", "tiny", str(where / "m")]):
            t0 = time.monotonic()
            r = sdagent(*args, env=lock_env)
            assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 60
    assert sorted(p.name for p in full.iterdir()) == ["filler"] and not list(ro.iterdir())


def test_a_write_that_fails_after_the_work_is_exit_7_and_the_result_goes_to_stdout(tiny_model, small_fs,
                                                                                   lock_env):
    tiny = small_fs("4k")  # room for the check, not for the result
    r = sdagent("bench", "--model", str(tiny_model), *WL, "--runs", "2", "-o", str(tiny / "bench.json"), env=lock_env)
    assert r.returncode == 7, r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        f"sdagent: error: cannot write {tiny / 'bench.json'}: No space left on device"  # (above: the bar's label)
    assert "Traceback" not in r.stderr
    d = json.loads(r.stdout)  # nothing measured is lost
    assert d["latency_s"]["n"] == 2 and d["latency_s"]["median"] > 0
    r = sdagent("model", "create", "--preset", "tiny", str(tiny / "m"), env=lock_env)
    assert r.returncode == 7 and "cannot write the model to" in r.stderr and "Traceback" not in r.stderr
    assert not list(tiny.iterdir())  # nothing half-written


def test_verify_killed_outright_leaves_incomplete_never_the_old_pass(tiny_model, tmp_path, targets, lock_env):
    report, prom = tmp_path / "verify.json", tmp_path / "sdagent.prom"
    stale_pass(report, prom)
    p = sdagent_popen("verify", "--model", str(tiny_model), "--targets", targets, *WL, "--runs", "100000",
                      "--report", str(report), "--prometheus", str(prom), env=lock_env)
    try:
        wait_for(lambda: json.loads(report.read_text()).get("state") == "incomplete", timeout=60)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the OOM killer, or TimeoutStopSec's escalation
        p.communicate(timeout=60)
    d = json.loads(report.read_text())
    assert d["state"] == "incomplete" and d["verdict"] is None and d["exit_code"] is None
    assert d["pid"] == p.pid and d["started_at"] > 0 and "not finished" in d["error"]["reason"]
    text = prom.read_text()
    assert 'sdagent_verify_pass{sdagent_instance="0"} 0' in text
    assert f'sdagent_verify_in_progress{{sdagent_instance="0",pid="{p.pid}"}} 1' in text
    assert "sdagent_verify_exit_code" not in text


LONG_NATIVE_CALL = """
import signal, sys, torch
from sdagent.cli import _terminate, last_words
signal.signal(signal.SIGTERM, _terminate)
last_words.install()
last_words.register(lambda: open(sys.argv[1], "w").write("last words"))
a = torch.randn(9000, 9000)
print("ready", flush=True)
torch.mm(a, a)  # one native call of tens of seconds on a small host (GIL released inside)
print("finished", flush=True)
"""


def test_sigterm_ends_a_long_native_call_within_seconds(tmp_path):
    pytest.importorskip("torch")
    marker = tmp_path / "words"
    p = subprocess.Popen([PY, "-c", LONG_NATIVE_CALL, str(marker)], env=clean_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # inside torch.mm
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 143 and "finished" not in out, (p.returncode, out, err)
    assert took < 15, took
    assert marker.read_text() == "last words" and "sdagent: terminated" in err


def test_sigterm_ends_run_at_a_large_size_within_seconds(tiny_model, tmp_path):
    # 1024x1024 on the tiny model: each step one attention over 16384 tokens, a native call of seconds
    # (8 s on a 2-core AVX2 EPYC); 50 steps keep the run going well past the 20 s wait on any host
    p = sdagent_popen("run", "--model", str(tiny_model), "--prompt", "ship", "--steps", "50", "--height", "1024",
                      "--width", "1024", "-o", str(tmp_path / "big.png"))
    time.sleep(20)  # loaded, inside the UNet (a signal earlier is handled at once anyway)
    assert p.poll() is None, p.communicate()
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "big.png").exists()
