"""Issue 20: no traceback, nothing lost, no stale verdict. The cases that load no model (fast).

Each test names the item it proves. The CLI runs as a user runs it (a fresh process, tests/clirun.py)
unless the case needs an injected fault (then in-process, through sdagent.cli.main).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from clirun import PY, clean_env, sdagent
from sdagent import atomicio
from sdagent.errors import BadInput, SdagentError


def one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The command failed with `code`, one stderr line naming the needles, no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------
# 1. An empty path never means "here"; --force replaces only sdagent's own
# ---------------------------------------------------------------------------


def test_1_model_create_force_with_an_empty_path_deletes_nothing(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = subprocess.run([PY, "-m", "sdagent", "model", "create", "--preset", "tiny", "--force", ""],
                       env=clean_env(), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    one_line(r, 2, "empty model directory path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
    for target in (".", str(tmp_path)):  # any path: a directory sdagent did not create is never replaced
        r = subprocess.run([PY, "-m", "sdagent", "model", "create", "--preset", "tiny", "--force", target],
                           env=clean_env(), capture_output=True, text=True, cwd=tmp_path, timeout=120)
        one_line(r, 2, "refusing to replace", "sdagent-model.json")
        assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_1_check_target_accepts_empty_and_sdagent_made_directories_only(tmp_path):
    from sdagent.pipeline.modelgen import MARKER, check_target

    assert check_target(tmp_path / "new", force=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", force=False)
    made = tmp_path / "made"
    made.mkdir()
    (made / MARKER).write_text(json.dumps({"format": "sdagent-model/1", "preset": "tiny"}))
    check_target(made, force=True)
    with pytest.raises(BadInput, match="not empty"):
        check_target(made, force=False)
    (made / MARKER).write_text("{}")  # a marker that is not sdagent's
    with pytest.raises(BadInput, match="refusing to replace"):
        check_target(made, force=True)
    for bad in ("", "   "):
        with pytest.raises(BadInput, match="empty model directory path"):
            check_target(bad, force=True)


# ---------------------------------------------------------------------------
# 2 and 3. Outputs checked before the work; a failed write is one line, exit 7
# ---------------------------------------------------------------------------


def test_3_empty_and_shared_output_paths_are_refused(tmp_path):
    for args in (["plan", "-o", ""], ["topology", "-o", ""], ["env", "-o", ""],
                 ["run", "--model", str(tmp_path), "--prompt", "x", "-o", ""],
                 ["bench", "--model", str(tmp_path), "-o", ""], ["tune", "--model", str(tmp_path), "-o", ""]):
        one_line(sdagent(*args), 2, "empty path")
    t = tmp_path / "t.yml"
    t.write_text("- {name: a, match: {}, p50_s: 1}\n")
    same = tmp_path / "same"
    same.write_text("old")
    r = sdagent("verify", "--model", str(tmp_path), "--targets", str(t), "--report", str(same),
                "--prometheus", str(same))
    one_line(r, 2, "--report and --prometheus name the same file")
    assert same.read_text() == "old"
    one_line(sdagent("verify", "--model", str(tmp_path), "--targets", str(t), "--report", ""), 2, "empty path")


def test_2_outputs_in_unwritable_places_are_refused_before_any_work(tmp_path):
    missing = tmp_path / "no" / "such"
    adir = tmp_path / "adir"
    adir.mkdir()
    for out in (str(missing / "x.json"), str(adir)):
        one_line(sdagent("plan", "-o", out), 2, out.rsplit("/", 1)[0])
    # run and bench refuse the output before the model is even looked at
    one_line(sdagent("run", "--model", str(tmp_path / "nomodel"), "--prompt", "x", "-o", str(missing / "a.png")),
             2, "output directory does not exist")


def test_2_dir_problem_names_read_only_unwritable_and_full(tmp_path):
    class St:
        def __init__(self, flag: int = 0, free: int = 10, blocks: int = 100) -> None:
            self.f_flag, self.f_bavail, self.f_bfree, self.f_blocks = flag, free, free, blocks

    assert atomicio.dir_problem(tmp_path) is None
    assert atomicio.dir_problem(tmp_path, statvfs=lambda p: St(os.ST_RDONLY), access=lambda p, m: False) \
        == "on a read-only filesystem"
    assert atomicio.dir_problem(tmp_path, statvfs=lambda p: St(), access=lambda p, m: False) \
        == "not writable by this user"
    assert "full filesystem" in atomicio.dir_problem(tmp_path, statvfs=lambda p: St(free=0))
    # /proc, /sys: no blocks at all, which is not "full"
    assert "without storage" in atomicio.dir_problem(tmp_path, statvfs=lambda p: St(free=0, blocks=0))


def test_2_an_output_that_is_a_fifo_is_refused_and_a_link_is_never_written_through(tmp_path):
    """-o onto a FIFO (or a device: as root, /dev/null) would be replaced by a plain file through the rename:
    refused, one line, exit 2, the node untouched. -o onto a symbolic link replaces the link, never its
    target: a link planted where the agent writes cannot redirect a root-owned write."""
    import stat as st

    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    one_line(sdagent("plan", "-o", str(fifo)), 2, "is a FIFO, not a regular file")
    assert st.S_ISFIFO(fifo.lstat().st_mode)
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "lnk"
    link.symlink_to(target.name)
    p = sdagent("plan", "-o", str(link))
    assert p.returncode == 0, p.stderr
    assert target.read_text() == "old" and not link.is_symlink()
    assert json.loads(link.read_text())["format"].startswith("sdagent-plan")


def test_2_a_write_that_fails_is_output_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "plan.json"
    target.write_text("old")

    def enospc(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", lambda fd: enospc(fd, b""))
    with pytest.raises(atomicio.OutputError, match=f"cannot write {target}: No space left on device") as ei:
        atomicio.write_text(target, "new")
    assert ei.value.exit_code == 7
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_2_results_go_to_stdout_when_the_write_fails(monkeypatch, capsys):
    from sdagent.cli.options import spill_on_write_failure

    def fail() -> None:
        raise atomicio.OutputError("cannot write /x: No space left on device")

    with pytest.raises(atomicio.OutputError):
        spill_on_write_failure({"p50_s": 1.5}, fail)
    assert json.loads(capsys.readouterr().out) == {"p50_s": 1.5}


# ---------------------------------------------------------------------------
# 7 and 10. The host lock
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "NaN"])
def test_10_lock_timeout_must_be_finite_and_non_negative(value):
    one_line(sdagent("--lock-timeout", value, "plan"), 2, "--lock-timeout")


def test_10_bench_lock_refuses_nan_itself(tmp_path):
    from sdagent.host.lock import bench_lock

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(BadInput, match="invalid lock timeout"):
            with bench_lock("x", bad, path=tmp_path / "l"):
                pass


PRIVATE_TMP = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
60 27 254:0 /tmp/systemd-private-0a1b-sdagent-verify.service-XyZ/tmp /tmp rw,relatime - ext4 /dev/vda rw
61 27 254:0 /var/tmp/systemd-private-0a1b-sdagent-verify.service-Abc/tmp /var/tmp rw - ext4 /dev/vda rw
70 27 0:50 / /run rw - tmpfs tmpfs rw
"""
INIT = """\
1 0 254:0 / / rw,relatime - ext4 /dev/vda rw
5 1 0:50 / /run rw - tmpfs tmpfs rw
"""


def test_7_a_lock_in_private_tmp_or_a_private_mount_is_found():
    from sdagent.host.lock import private_mount

    assert "PrivateTmp" in private_mount("/tmp/sdagent-bench.lock", PRIVATE_TMP, INIT)
    assert "PrivateTmp" in private_mount("/var/tmp/x/sdagent.lock", PRIVATE_TMP, None)  # PID 1 unreadable
    assert private_mount("/run/lock/sdagent-bench.lock", PRIVATE_TMP, INIT) is None
    assert private_mount("/srv/sdagent.lock", PRIVATE_TMP, INIT) is None  # on / itself
    unshared = INIT.replace("5 1 0:50 / /run", "5 1 0:51 / /run")  # PID 1 sees another filesystem at /run
    assert "mount namespace only" in private_mount("/run/lock/x.lock", PRIVATE_TMP, unshared)


def test_7_the_agent_refuses_a_lock_private_to_its_mount_namespace(tmp_path, tiny_model_or_skip):
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"creating a mount namespace is not permitted here: {probe.stderr.decode().strip()}")
    priv = tmp_path / "private"
    priv.mkdir()
    script = (f"mount -t tmpfs -o size=64k sdagent-test {priv} && exec {PY} -m sdagent bench --model "
              f"{tiny_model_or_skip} --steps 1 --height 64 --width 64 --runs 1")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True, env=clean_env(SDAGENT_LOCK_FILE=str(priv / "bench.lock")), timeout=300)
    if "mount:" in r.stderr and r.returncode != 2:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    one_line(r, 2, "private to this process's mount namespace", "SDAGENT_LOCK_FILE")


# ---------------------------------------------------------------------------
# 11. Every input checked before anything loads
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_or_skip(tmp_path_factory) -> Path:
    """A tiny model directory (the only test here that loads one skips without the ML stack)."""
    pytest.importorskip("diffusers", reason="the ML stack is not installed")
    from sdagent.pipeline.modelgen import create_model

    path = tmp_path_factory.mktemp("m") / "tiny"
    create_model("tiny", path)
    return path


def test_11_seed_beyond_int64_and_a_non_utf8_prompt_are_refused_before_loading(tiny_model_or_skip, tmp_path):
    m = str(tiny_model_or_skip)
    for cmd in (["run", "--prompt", "x", "-o", str(tmp_path / "a.png")], ["bench"]):
        one_line(sdagent(cmd[0], "--model", m, *cmd[1:], "--seed", str(2**63)), 2, "--seed", str(2**63))
    r = subprocess.run([PY, "-m", "sdagent", "run", "--model", m, "--prompt", b"caf\xe9 ship", "-o",
                        str(tmp_path / "a.png")], env=clean_env(), capture_output=True, timeout=120)
    r = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode("utf-8", "replace"))
    one_line(r, 2, "invalid prompt", "not UTF-8")
    assert not list(tmp_path.iterdir())


def test_11_a_tokenizer_without_its_config_is_refused_before_loading(tiny_model_or_skip, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_or_skip, broken)
    (broken / "tokenizer" / "tokenizer_config.json").unlink()
    t = tmp_path / "t.yml"
    t.write_text("- {name: a, match: {}, p50_s: 100}\n")
    for args in (["run", "--prompt", "x", "-o", str(tmp_path / "a.png")], ["bench"], ["verify", "--targets", str(t)]):
        one_line(sdagent(args[0], "--model", str(broken), *args[1:]), 2, "tokenizer/tokenizer_config.json")


def test_11_workload_checks(tmp_path):
    from sdagent.pipeline.workload import MAX_SEED, Workload, validate_workload

    validate_workload(Workload(seed=MAX_SEED, height=64, width=64))
    with pytest.raises(BadInput, match="invalid seed"):
        validate_workload(Workload(seed=MAX_SEED + 1))
    with pytest.raises(BadInput, match="invalid prompt: byte b'\\\\xff' at position 3 is not UTF-8"):
        validate_workload(Workload(prompt="abc" + b"\xff".decode("utf-8", "surrogateescape")))


# ---------------------------------------------------------------------------
# 12. Input files read as strictly as documented
# ---------------------------------------------------------------------------


def test_12_yaml_duplicate_keys_are_refused_in_targets_and_overrides(tmp_path):
    t = tmp_path / "targets.yml"
    t.write_text("- name: a\n  match: {}\n  p50_s: 5\n  p50_s: 500\n")
    r = sdagent("verify", "--model", str(tmp_path), "--targets", str(t))
    one_line(r, 2, "duplicate key 'p50_s'", str(t), "line 3")
    o = tmp_path / "overrides.yml"
    o.write_text("binding: taskset\nbinding: numactl\n")
    one_line(sdagent("plan", "--overrides", str(o)), 2, "duplicate key 'binding'", str(o))
    assert atomicio.parse_yaml("a: 1\nb: {a: 2}\n", "x") == {"a": 1, "b": {"a": 2}}  # nested: other mapping


def test_12_plan_files_with_an_empty_instance_or_a_future_format_are_refused(tmp_path):
    plan = json.loads(sdagent("plan", "--json").stdout)
    for name, change, needle in (
        ("future", {"format": "sdagent-plan/2"}, "key 'format' is 'sdagent-plan/2'"),
        ("nocpus", {"instances": [{**plan["instances"][0], "cpu_ids": []}]}, "instances[0].cpu_ids is empty"),
        ("twice", {"instances": [{**plan["instances"][0], "cpu_ids": [0, 0]}]}, "names a CPU twice"),
    ):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({**plan, **change}))
        one_line(sdagent("--plan-file", str(f), "plan"), 2, needle, str(f))
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(plan))
    assert sdagent("--plan-file", str(ok), "plan").returncode == 0


def test_12_a_topology_with_a_duplicated_cpu_is_refused(tmp_path):
    topo = json.loads(sdagent("topology", "--json").stdout)
    f = tmp_path / "topo.json"
    f.write_text(json.dumps({**topo, "cpus": topo["cpus"] + topo["cpus"][:1]}))
    one_line(sdagent("--topology-file", str(f), "plan"), 2, f"lists CPU {topo['cpus'][0]['id']} twice")


# ---------------------------------------------------------------------------
# 13. What is rendered is checked, not only the settings
# ---------------------------------------------------------------------------


def test_13_a_newline_in_the_plan_file_path_never_reaches_a_unit(tmp_path):
    plan = tmp_path / "p\nExecStartPre=+touch pwned.json"
    r = sdagent("plan", "-o", str(tmp_path / "ok.json"))
    assert r.returncode == 0, r.stderr
    shutil.copy(tmp_path / "ok.json", plan)
    one_line(sdagent("--plan-file", str(plan), "env", "--format", "systemd"), 2, "control character")
    one_line(sdagent("env", "--format", "systemd", env=clean_env(SDAGENT_PLAN_FILE=str(plan))), 2,
             "control character")


def test_13_check_rendered_refuses_a_line_that_is_not_a_statement(tmp_path):
    from sdagent.cli.context import AgentContext
    from sdagent.planning.render import FORMATS, check_rendered, render

    plan = tmp_path / "p\nExecStartPre=+id"
    assert sdagent("plan", "-o", str(tmp_path / "ok.json")).returncode == 0
    shutil.copy(tmp_path / "ok.json", plan)
    p = AgentContext(plan_file=str(plan)).plan()
    assert p.plan_file == str(plan)
    for fmt in FORMATS:
        with pytest.raises(BadInput, match=f"refusing to render the plan as {fmt}"):
            render(p, fmt)
        clean = render(AgentContext(plan_file=str(tmp_path / "ok.json")).plan(), fmt)  # checked, and passes
        assert "SDAGENT_PLAN_FILE" in clean
    with pytest.raises(BadInput, match="line 2"):
        check_rendered("systemd", 1, '[Service]\nExecStartPre=+/bin/sh\nEnvironment="A=1"\n')
    with pytest.raises(BadInput, match="2 assignment lines for 1"):
        check_rendered("env", 1, 'A="1"\nB="2"\n')


# ---------------------------------------------------------------------------
# 15. Headers say what the process runs with
# ---------------------------------------------------------------------------


def test_15_runs_with_reads_the_maps_not_the_plan():
    from sdagent.textfmt import runs_with, runs_with_line

    plan = {"settings": {"allocator": "jemalloc", "omp_runtime": "intel"}}
    bare = ["/usr/lib/libgomp.so.1"]
    assert runs_with(plan, bare) == {"allocator": "glibc", "omp_runtime": "default", "plan_in_effect": False,
                                     "missing": ["libjemalloc", "libiomp5"]}
    line = runs_with_line(plan, bare)
    assert "glibc malloc" in line and "NOT in effect" in line and "sdagent exec --" in line
    under = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/opt/intel/libiomp5.so"]
    assert runs_with(plan, under)["plan_in_effect"] and "NOT" not in runs_with_line(plan, under)


# ---------------------------------------------------------------------------
# 16. verify --help's rules come from the rules
# ---------------------------------------------------------------------------


def test_16_verify_help_is_made_from_the_rule_functions():
    from sdagent.cli.verify_cmd import RULE_SOURCES, _doc
    from sdagent.tuning.rule import Rule
    from sdagent.verifying.checks import PRIORITY

    r = sdagent("verify", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for category, fns in RULE_SOURCES:
        for fn in fns:
            doc = _doc(fn)
            assert doc and doc.split(". ")[0] in text, (category, fn.__name__)
    assert " > ".join(str(int(c)) for c in PRIORITY) + " > 0" in text
    assert f"alpha {Rule().alpha:g}" in text
    # the old rules are gone
    for old in ("median <= p50_s", "(max-min)/median <= max_spread", "fastest run slower than stock's slowest"):
        assert old not in text


# ---------------------------------------------------------------------------
# 18. One word for Ctrl-C, one rule for the default size
# ---------------------------------------------------------------------------


def test_18_ctrl_c_says_interrupted(monkeypatch, capsys):
    from sdagent import cli as C

    def abort(*a, **k):
        raise click.exceptions.Abort()

    monkeypatch.setattr(C.cli, "main", abort)
    with pytest.raises(SystemExit) as ei:
        C.main(["plan"])
    assert ei.value.code == 130 and capsys.readouterr().err == "sdagent: interrupted\n"


def test_18_one_default_size_rule_in_every_command():
    from sdagent.cli import cli
    from sdagent.cli.options import SIZE_RULE

    for name in ("run", "bench", "verify", "tune", "ladder"):
        cmd = cli.commands[name]
        params = {p.name: p for p in cmd.params}
        assert params["height"].default is None and params["width"].default is None, name
        assert SIZE_RULE in params["height"].help and SIZE_RULE in params["width"].help, name
        assert params["model_dir"].required, name
    compile_ = cli.commands["model"].commands["compile"]
    assert {p.name: p for p in compile_.params}["height"].default is None


def test_18_a_prompt_longer_than_77_tokens_is_said_once(tiny_model_or_skip, capsys):
    from sdagent.cli.options import model_and_workload, prompt_tokens

    long = " ".join(["sailing ship in storm by rembrandt"] * 20)
    md, w = model_and_workload(str(tiny_model_or_skip), {"prompt": long, "steps": 1, "height": None, "width": None,
                                                          "guidance": 7.5, "seed": 0})
    assert (w.height, w.width) == (64, 64)  # the model's own
    err = capsys.readouterr().err
    assert err.count("warning: the prompt is") == 1 and "reads the first 77" in err
    assert prompt_tokens(md, "short") is None
    model_and_workload(str(tiny_model_or_skip), {"prompt": "a ship", "steps": 1, "height": None, "width": None,
                                                 "guidance": 7.5, "seed": 0})
    assert capsys.readouterr().err == ""


def test_output_error_is_the_tables_error_code():
    from sdagent.errors import Exit

    assert issubclass(atomicio.OutputError, SdagentError) and atomicio.OutputError.exit_code == Exit.ERROR == 7


@pytest.mark.parametrize("bad", [["--steps", "abc"], ["--bogus-opt"], ["--guidance", "-3"]])
def test_5_a_verify_click_refuses_still_replaces_an_old_pass(tmp_path, bad):
    """Click rejects these before verify runs; the reports of the last run (a pass) must still be replaced
    by a bad-input record, or a typo in a unit's arguments leaves node_exporter showing the old pass."""
    report, prom = tmp_path / "v.json", tmp_path / "v.prom"
    report.write_text(json.dumps({"exit_code": 0, "verdict": "pass"}))
    prom.write_text('sdagent_verify_exit_code{sdagent_instance="0"} 0\n')
    r = sdagent("verify", "--model", str(tmp_path), "--targets", str(tmp_path / "t.yml"), "--report", str(report),
                f"--prometheus={prom}", *bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads(report.read_text())["exit_code"] == 2
    assert 'sdagent_verify_exit_code{sdagent_instance="0"} 2' in prom.read_text()
