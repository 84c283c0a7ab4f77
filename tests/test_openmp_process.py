"""What a pinned plan does to a server's children (issue 19 item 8, verify's side) and two OpenMP runtimes in
one process (item 10): verify's process checks and exec's error path, on real processes where this host can
show it (the venv's libiomp5, a copy of it standing in for an application's own), on fake states otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from clirun import PY, REPO, clean_env, sdagent, sdagent_popen
from sdagent.errors import Exit
from sdagent.host.openmp import abort_diagnosis, duplicate_runtimes, family, find_runtime_files, search_roots
from sdagent.host.software import find_library
from sdagent.verifying.checks import FAIL, PASS, check_child_affinity, check_openmp_runtimes

IOMP = find_library("iomp")
needs_iomp = pytest.mark.skipif(IOMP is None, reason="no libiomp5 on this host (the intel-openmp wheel puts one "
                                                     "in the venv's lib)")
needs_2cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                 reason="one allowed CPU: a child bound to one CPU looks like the instance")

TORCH_GOMP = "/venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1"


# ---------------------------------------------------------------------------
# Item 8: a child process inherits the instance's CPUs
# ---------------------------------------------------------------------------


def test_a_child_bound_to_one_cpu_is_exit_3_naming_kmp_affinity():
    c = check_child_affinity((0, 1, 2, 3), (0,), {"KMP_AFFINITY": "granularity=fine,compact,1,0"})
    assert c.status == FAIL and c.exit_code == Exit.TUNING_NOT_IN_EFFECT
    assert "may run only on CPUs 0, the instance's are 0-3" in c.detail and "KMP_AFFINITY=granularity" in c.detail
    assert check_child_affinity((0, 1, 2, 3), (3, 2, 1, 0), {}).status == PASS
    assert check_child_affinity((0, 1), (), {}).status == FAIL  # no child could start: not a pass


STATE = textwrap.dedent("""\
    import json, sys
    sys.path.insert(0, {agent!r})
    from sdagent.host.process import process_state
    s = process_state()
    print(json.dumps({{"affinity": s.affinity, "child": s.child_affinity, "mapped": s.mapped}}))
    """).format(agent=str(REPO / "agent"))


def state_under(env_extra: dict[str, str]) -> dict:
    env = clean_env(OMP_NUM_THREADS=str(len(os.sched_getaffinity(0))), **env_extra)
    r = subprocess.run([PY, "-c", STATE], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_iomp
@needs_2cpus
def test_process_state_sees_kmp_affinity_confine_children_after_torchs_first_op():
    """The real trap: Intel OpenMP with KMP_AFFINITY binds the main thread at the first parallel region; the
    process as a whole keeps its CPUs, a child started afterwards gets one."""
    pytest.importorskip("torch")
    allowed = sorted(os.sched_getaffinity(0))
    pinned = state_under({"LD_PRELOAD": IOMP, "KMP_AFFINITY": "granularity=fine,compact,1,0"})
    assert pinned["affinity"] == allowed and len(pinned["child"]) == 1, pinned
    free = state_under({"LD_PRELOAD": IOMP})
    assert free["child"] == allowed


@needs_iomp
@needs_2cpus
def test_verify_under_a_plan_with_kmp_affinity_is_exit_3_on_the_child_check(tiny_model, tmp_path):
    pytest.importorskip("torch")
    targets = tmp_path / "t.yml"
    targets.write_text("- name: smoke\n  match: {model: tiny}\n  p50_s: 120\n  min_runs: 5\n")
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "lock"), SDAGENT_CACHE=str(tmp_path / "cache"))
    r = sdagent("exec", "--set", "omp_runtime=intel", "--set", "kmp_affinity=compact", "--", PY, "-m", "sdagent",
                "verify", "--model", str(tiny_model), "--targets", str(targets), "--steps", "2", "--height", "64",
                "--width", "64", "--json", env=env)
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["child_affinity"]["status"] == "fail" and "KMP_AFFINITY" in checks["child_affinity"]["detail"]
    assert checks["affinity"]["status"] == "pass"  # the process as a whole keeps its CPUs: only a child shows it


# ---------------------------------------------------------------------------
# Item 10: two OpenMP runtimes in one process
# ---------------------------------------------------------------------------


def test_runtime_families_and_duplicates(tmp_path):
    assert family("/x/libiomp5.so") == family("/x/libomp.so.5") == family("/a.libs/libiomp5-4a1b2c3d.so") \
        == "intel/llvm"
    assert family(TORCH_GOMP) == family("/x/libgomp-a34b3233.so.1") == "gnu"
    assert family("/x/libomptarget.so") is None and family("/x/libtorch_cpu.so") is None
    assert family("/venv/lib/libiomp5_db.so") is None  # the debugger support library, no runtime
    a, b = tmp_path / "libiomp5.so", tmp_path / "app" / "libiomp5-4a1b2c3d.so"
    b.parent.mkdir()
    a.write_text("")
    b.write_text("")
    (tmp_path / "link.so").symlink_to(a)
    # the plan's libiomp5 beside torch's libgomp is the intended state (libiomp5 interposes GOMP_*)
    assert duplicate_runtimes([str(a), TORCH_GOMP, str(tmp_path / "link.so")]) == []
    [d] = duplicate_runtimes([str(a), TORCH_GOMP, str(b)])
    assert d.family == "intel/llvm" and d.files == (str(a), str(b))


def test_check_names_both_files_and_the_remedy():
    c = check_openmp_runtimes(["/venv/lib/libiomp5.so", TORCH_GOMP, "/app/fancy.libs/libiomp5-4a1b2c3d.so"],
                              {"KMP_DUPLICATE_LIB_OK": "TRUE"})
    assert c.status == FAIL and c.exit_code == Exit.TUNING_NOT_IN_EFFECT
    assert "/venv/lib/libiomp5.so and /app/fancy.libs/libiomp5-4a1b2c3d.so" in c.detail
    assert "omp_runtime" in c.detail and "KMP_DUPLICATE_LIB_OK is set" in c.detail
    assert check_openmp_runtimes(["/venv/lib/libiomp5.so", TORCH_GOMP], {}).status == PASS


def app_with_own_runtime(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in application: a script beside its own copy of libiomp5 (as a wheel bundles one) that
    starts the preloaded runtime, then its own: what an import order does in a real server."""
    app = tmp_path / "app"
    (app / "fancy.libs").mkdir(parents=True)
    own = app / "fancy.libs" / "libiomp5-4a1b2c3d.so"
    shutil.copyfile(IOMP, own)
    script = app / "serve.py"
    script.write_text(textwrap.dedent(f"""\
        import ctypes, os, sys
        print("KMP_DUPLICATE_LIB_OK=" + str(os.environ.get("KMP_DUPLICATE_LIB_OK")), flush=True)
        ctypes.CDLL(None).omp_get_max_threads()  # the preloaded runtime starts
        ctypes.CDLL({str(own)!r}).omp_get_max_threads()  # the application's own: Error #15, abort()
        print("both started", flush=True)
        """))
    return script, own


@needs_iomp
def test_exec_names_both_runtimes_when_the_command_aborts(tmp_path):
    script, own = app_with_own_runtime(tmp_path)
    r = sdagent("exec", "--set", "omp_runtime=intel", "--", PY, str(script),
                env=clean_env(SDAGENT_CACHE=str(tmp_path / "cache")))
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stderr[-3000:])  # the command's own status
    assert "KMP_DUPLICATE_LIB_OK=None" in r.stdout and "both started" not in r.stdout
    assert "OMP: Error #15" in r.stderr  # the runtime's own words stay
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("sdagent:")]
    assert os.path.realpath(IOMP) in line and str(own) in line and "omp_runtime" in line, line
    assert "never KMP_DUPLICATE_LIB_OK" in line


@needs_iomp
def test_verify_process_check_sees_two_runtimes_kept_alive_by_kmp_duplicate_lib_ok(tmp_path):
    """The process lives only because KMP_DUPLICATE_LIB_OK hides the fault: the check names both files."""
    script, own = app_with_own_runtime(tmp_path)
    code = textwrap.dedent(f"""\
        import json, os, runpy, sys
        sys.path.insert(0, {str(REPO / 'agent')!r})
        runpy.run_path({str(script)!r})
        from sdagent.host.process import read_mapped_libraries
        from sdagent.verifying.checks import check_openmp_runtimes
        c = check_openmp_runtimes(read_mapped_libraries(), dict(os.environ))
        print(json.dumps(c.to_dict()), flush=True)
        os._exit(0)  # two runtimes crash at a normal exit
        """)
    env = clean_env(LD_PRELOAD=IOMP, KMP_DUPLICATE_LIB_OK="TRUE")
    r = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads(r.stdout.strip().splitlines()[-1])
    assert c["status"] == "fail" and c["exit_code"] == 3
    assert os.path.realpath(IOMP) in c["detail"] and str(own) in c["detail"] and "KMP_DUPLICATE_LIB_OK" in c["detail"]


def test_the_diagnosis_without_the_applications_file_still_names_the_plans():
    line = abort_diagnosis(["python", "serve.py"], "/venv/lib/libiomp5.so", [])
    assert line.startswith("python aborted (SIGABRT)") and "/venv/lib/libiomp5.so" in line
    assert "none found beside the command" in line and "omp_runtime" in line


def test_search_roots_and_find_runtime_files(tmp_path):
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib" / "site-packages" / "x.libs").mkdir(parents=True)
    lib = prefix / "lib" / "site-packages" / "x.libs" / "libomp-77aa12bc.so"
    lib.write_text("")
    prog = prefix / "bin" / "serve"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    roots = search_roots([str(prog)], None)
    assert roots == [prefix / "lib"]
    assert find_runtime_files(roots) == [str(lib)]


# ---------------------------------------------------------------------------
# exec as a parent: every signal reaches the command once, and its status is exec's
# ---------------------------------------------------------------------------

COUNT_TERMS = textwrap.dedent("""\
    import signal, sys, time
    n = []
    signal.signal(signal.SIGTERM, lambda *a: n.append(1))
    print("ready", flush=True)
    t = time.time()
    while time.time() - t < 3 and not n:
        time.sleep(0.05)
    time.sleep(1)  # a second SIGTERM would come now
    sys.exit(40 + len(n))
    """)


@needs_iomp
def test_exec_as_a_parent_passes_a_group_sigterm_once_and_returns_the_commands_status(tmp_path):
    p = sdagent_popen("exec", "--set", "omp_runtime=intel", "--", PY, "-c", COUNT_TERMS,
                      env=clean_env(SDAGENT_CACHE=str(tmp_path / "cache")))
    assert p.stdout.readline().strip() == "ready"
    os.killpg(p.pid, signal.SIGTERM)  # a unit's stop, a shell's job kill: the whole group
    p.wait(timeout=60)
    assert p.returncode == 41, p.stderr.read()
    assert sdagent("exec", "--set", "omp_runtime=intel", "--", PY, "-c", "raise SystemExit(7)").returncode == 7


def test_two_libgomp_copies_fail_unless_a_preloaded_libiomp5_serves_both():
    """Compiled packages link the system libgomp beside torch's bundled one: two GNU thread teams
    (docs/results/amx-16c-defaults) unless the plan's preloaded libiomp5 interposes GOMP_* for both."""
    system_gomp = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    bare = check_openmp_runtimes([TORCH_GOMP, system_gomp], {})
    assert bare.status == FAIL and system_gomp in bare.detail
    preloaded = {"LD_PRELOAD": "/venv/lib/libiomp5.so"}
    assert check_openmp_runtimes(["/venv/lib/libiomp5.so", TORCH_GOMP, system_gomp], preloaded).status == PASS


def test_a_narrow_child_is_a_warning_when_the_plan_itself_sets_kmp_affinity():
    """KMP_AFFINITY the tuned plan kept (measured faster): the confined child is reported, not exit 3;
    the same value inherited from elsewhere fails."""
    from sdagent.verifying.checks import WARN

    env = {"KMP_AFFINITY": "granularity=fine,compact,1,0"}
    planned = check_child_affinity([0, 1, 2, 3], [0], env, planned_kmp_affinity=env["KMP_AFFINITY"])
    assert planned.status == WARN and "kmp_affinity=unset" in planned.detail
    assert check_child_affinity([0, 1, 2, 3], [0], env, planned_kmp_affinity="unset").status == FAIL
