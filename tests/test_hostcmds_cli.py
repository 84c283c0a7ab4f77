"""`sdagent topology/plan/env/exec` through the CLI, on fixture hosts and on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from clirun import clean_env
from clirun import sdagent as run_sdagent
from evidence_fixtures import POSITIVE
from hosts import HOSTS, write_tree
from sdagent.cli import cli
from sdagent.planning.launch import build_exec
from sdagent.planning.layout import PlanRequest
from sdagent.planning.plan import make_plan
from sdagent.host.software import HostFacts, IpexStatus
from sdagent.host.topology import read_topology



@pytest.fixture(scope="module")
def spr(tmp_path_factory):
    return str(write_tree(tmp_path_factory.mktemp("h") / "spr", HOSTS["spr-2s-smt"]))


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def sdagent(*args, env=None, **kw):
    return run_sdagent(*args, env=clean_env(**(env or {})), **kw)


def test_topology_json_feeds_topology_file(spr, tmp_path):
    r = run("--sysroot", spr, "topology", "--json", "-o", str(tmp_path / "t.json"))
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["summary"]["physical_cores"] == 112 and d["summary"]["numa_nodes"] == 2
    r2 = run("--topology-file", str(tmp_path / "t.json"), "plan", "--json")
    plan = json.loads(r2.output)
    assert plan["instances"][0]["cpus"] == "0-55" and plan["settings"]["omp_num_threads"] == 56


def test_topology_human(spr):
    r = run("--sysroot", spr, "topology")
    assert "NUMA node 1 CPUs 56-111,168-223" in r.output and "amx_bf16" in r.output


def fake_iomp(tmp_path):
    """A preloadable-looking libiomp5 (a regular file of ours, not writable by others): only Intel OpenMP
    reads KMP_*, and the shipped evidence leaves it off, so KMP tests ask for it explicitly."""
    lib = tmp_path / "libiomp5.so"
    lib.write_bytes(b"")
    lib.chmod(0o644)
    return str(lib)


def test_plan_file_written_and_reused(spr, tmp_path):
    out = tmp_path / "plan.json"
    r = run("--sysroot", spr, "plan", "--instances", "2", "--set", "kmp_blocktime=0", "--set", "omp_runtime=intel",
            "--set", f"iomp_path={fake_iomp(tmp_path)}", "-o", str(out))
    assert r.exit_code == 0 and "instance 1: CPUs 56-111" in r.output
    r2 = run("--sysroot", spr, "--plan-file", str(out), "env", "--instance", "1")
    assert 'KMP_BLOCKTIME="0"' in r2.output and 'OMP_NUM_THREADS="56"' in r2.output
    assert f'SDAGENT_PLAN_FILE="{out}"' in r2.output


def test_env_formats(spr, tmp_path):
    sh = run("--sysroot", spr, "env", "--format", "shell").output
    assert "export OMP_NUM_THREADS=56" in sh and "SDAGENT_LAUNCHER=" in sh
    unit = run("--sysroot", spr, "env", "--format", "systemd").output
    assert unit.splitlines()[3] == "[Service]"
    if "numactl" in unit or "CPUAffinity" in unit:
        assert "CPUAffinity=" + " ".join(str(c) for c in range(56)) in unit
    f = tmp_path / "tuned.env"
    assert run("--sysroot", spr, "env", "-o", str(f)).exit_code == 0
    assert 'OMP_NUM_THREADS="56"' in f.read_text()


def test_env_file_is_sourceable(spr, tmp_path):
    f = tmp_path / "tuned.sh"
    f.write_text(run("--sysroot", spr, "env", "--format", "shell").output)
    out = subprocess.run(["sh", "-c", f". {f} && echo $OMP_NUM_THREADS $MALLOC_CONF"],
                         capture_output=True, text=True).stdout
    assert out.startswith("56")


@pytest.mark.parametrize("args, message", [
    (["plan", "--set", "binding=pin"], "invalid value 'pin' for plan setting 'binding'"),
    (["plan", "--instances", "999"], "invalid --instances 999"),
    (["plan", "--instances", "0"], "invalid --instances 0"),
    (["env", "--instance", "3"], "instance 3 out of range"),
    (["--topology-file", "/nonexistent.json", "plan"], "topology file not found: /nonexistent.json"),
    (["--plan-file", "/nonexistent.json", "plan"], "plan file not found: /nonexistent.json"),
    (["plan", "-o", "/nonexistent-dir/plan.json"], "output directory does not exist: /nonexistent-dir"),
    (["plan", "--overrides", "/nonexistent.yml"], "overrides file not found"),
])
def test_bad_input_one_line_exit_2(spr, args, message):
    r = sdagent("--sysroot", spr, *args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdagent: error: ") and message in lines[0]
    assert "Traceback" not in r.stderr


def test_overrides_file(spr, tmp_path):
    f = tmp_path / "o.yml"
    f.write_text(f"binding: taskset\nkmp_blocktime: 1\nomp_runtime: intel\niomp_path: {fake_iomp(tmp_path)}\n")
    d = json.loads(run("--sysroot", spr, "plan", "--overrides", str(f), "--json").output)
    assert d["settings"]["binding"] == "taskset" and d["env"]["KMP_BLOCKTIME"] == "1"
    f.write_text("bogus: 1\n")
    r = sdagent("--sysroot", spr, "plan", "--overrides", str(f))
    assert r.returncode == 2 and "unknown plan setting 'bogus'" in r.stderr


def test_build_exec_scopes_env():
    facts = HostFacts({"jemalloc": "/je.so", "tcmalloc": None, "iomp": "/iomp.so"}, "/usr/bin/numactl",
                      "/usr/bin/taskset", True, IpexStatus(False, None, None, "absent"))
    topo = read_topology("/")
    p = make_plan(topo, facts, PlanRequest(), evidence=POSITIVE)  # evidence that keeps both preloads
    argv, env = build_exec(p, 0, ["python", "x.py"], {"LD_PRELOAD": "/asan.so", "KMP_BLOCKTIME": "7", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == "/je.so:/iomp.so:/asan.so"
    assert "KMP_BLOCKTIME" not in env  # a stale caller value would silently change the plan
    assert argv[-2:] == ["python", "x.py"] and env["PATH"] == "/bin"


def test_exec_runs_under_the_plan():
    code = "import os; print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('SDAGENT_INSTANCE'))"
    r = sdagent("exec", "--", sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    threads = json.loads(sdagent("plan", "--json").stdout)["settings"]["omp_num_threads"]
    assert r.stdout.split() == [str(threads), "0"]


def test_exec_passes_exit_status_and_reports_missing_command():
    assert sdagent("exec", "--", sys.executable, "-c", "raise SystemExit(7)").returncode == 7
    r = sdagent("exec", "--", "no-such-command-xyz")
    assert r.returncode == 127 and "command not found: no-such-command-xyz" in r.stderr


def test_exec_refuses_a_file_it_cannot_execute_as_a_shell_does(tmp_path):
    script = tmp_path / "serve.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = sdagent("exec", "--", str(script))
    assert r.returncode == 126 and f"command not executable: {script}" in r.stderr


def test_exec_dry_run():
    r = sdagent("exec", "--dry-run", "--", "echo", "hi")
    assert r.returncode == 0 and r.stdout.strip().endswith("echo hi") and "OMP_NUM_THREADS=" in r.stdout


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for a 2-instance layout")
def test_exec_hands_its_plan_to_the_child():
    """A child of exec sees the parent's plan (layout, overrides), not one re-derived from its narrowed affinity."""
    r = sdagent("exec", "--instances", "2", "--instance", "1", "--set", "kmp_blocktime=0", "--",
                sys.executable, "-m", "sdagent", "plan", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert len(d["instances"]) == 2 and d["settings"]["kmp_blocktime"] == 0
    assert d["source"] == "derived+overrides"


def test_exec_child_with_the_same_plan_file_keeps_execs_overrides(tmp_path):
    f = tmp_path / "plan.json"
    assert sdagent("plan", "-o", str(f)).returncode == 0
    r = sdagent("--plan-file", str(f), "exec", "--set", "kmp_blocktime=0", "--",
                sys.executable, "-m", "sdagent", "plan", "--json")  # the child sees SDAGENT_PLAN_FILE too
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["settings"]["kmp_blocktime"] == 0 and d["plan_file"] == str(f)


def test_every_option_reads_the_variable_named_after_its_flag():
    """The README's rule, SDAGENT_<COMMAND>_<OPTION> from the flag a user types (not Click's Python
    name: `--format` is stored as `fmt`), with exec's SDAGENT_PLAN_JSON hand-off never read as an option."""
    import click

    from sdagent.cli import cli
    from sdagent.envvars import PLAN_ENV

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            at = f"{prefix}_{name.upper().replace('-', '_')}"
            if isinstance(cmd, click.Group):
                yield from walk(cmd, at)
                continue
            for p in cmd.params:
                longs = [o for o in getattr(p, "opts", ()) if o.startswith("--")]
                if isinstance(p, click.Option) and longs:
                    yield at, longs[0], p.envvar

    seen = list(walk(cli, "SDAGENT"))
    assert seen
    for at, flag, envvar in seen:
        want = f"{at}_{flag[2:].upper().replace('-', '_')}"
        explicit = {"SDAGENT_INSTANCE"}  # verify --instance: the variable the wrapper and units set
        assert envvar == want or envvar in explicit or (want == PLAN_ENV and envvar is None), (flag, envvar)
    r = run_sdagent("env", env=clean_env(SDAGENT_ENV_FORMAT="shell"))
    assert r.returncode == 0 and "export OMP_NUM_THREADS=" in r.stdout, r.stderr
