"""Issue 24: a plan file's library that this host lacks is a recorded decision, and verify judges it one way.

The table: every library setting (jemalloc, tcmalloc, the OpenMP runtime) x {present, missing with a host
copy, missing without one} x {derived, tuned plan file}. For each: the decision in force, the rendered env
(its LD_PRELOAD and the comment above it), and verify's process checks on a process started with that env
(and on exec's child, which reads the plan from SDAGENT_PLAN_JSON) agree.
"""

from __future__ import annotations

import json
import re

import pytest

from hosts import HOSTS, write_tree
from sdagent.envvars import PLAN_ENV
from sdagent.errors import Exit
from sdagent.host.process import ProcessState
from sdagent.host.software import HostFacts, IpexStatus
from sdagent.host.topology import read_topology
from sdagent.planning.planfile import plan_env_value, plan_in_force
from sdagent.planning.render import render
from sdagent.verifying.checks import FAIL, PASS, WARN, decide_exit, process_checks

#: kind -> (the setting that asks for it, its value, the library file name)
LIBS = {"jemalloc": ("allocator", "jemalloc", "libjemalloc.so.2"),
        "tcmalloc": ("allocator", "tcmalloc", "libtcmalloc.so.4"),
        "iomp": ("omp_runtime", "intel", "libiomp5.so")}
STATES = ("present", "missing-host-copy", "missing-none")
SOURCES = ("derived", "tuned")
TORCH = "/venv/lib/python3/site-packages/torch/lib/libtorch_cpu.so"

#: (state, source) -> (verify's exit code, plan_honoured's status)
EXPECTED = {
    ("present", "derived"): (Exit.OK, PASS),
    ("present", "tuned"): (Exit.OK, PASS),
    ("missing-host-copy", "derived"): (Exit.OK, PASS),
    ("missing-host-copy", "tuned"): (Exit.OK, WARN),  # the tuned figures were measured with another file
    ("missing-none", "derived"): (Exit.OK, PASS),  # a derived plan claims no measurement
    ("missing-none", "tuned"): (Exit.TUNING_NOT_IN_EFFECT, FAIL),  # the tuned allocator/OpenMP is gone
}


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    return read_topology(write_tree(tmp_path_factory.mktemp("host"), HOSTS["xeon-vm-2core-amx"]))


def _lib(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    path.chmod(0o644)
    return str(path)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", list(LIBS))
def test_library_setting_table(topo, tmp_path, kind, state, source):
    setting, asked, name = LIBS[kind]
    key = f"{kind}_path"
    file_path = str(tmp_path / "elsewhere" / name)
    if state == "present":
        _lib(tmp_path / "elsewhere" / name)
    host_path = _lib(tmp_path / "host" / name) if state != "missing-none" else None
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None, kind: host_path},
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"))
    other = {"allocator": "default"} if setting == "omp_runtime" else {"omp_runtime": "default"}
    pf = tmp_path / "plan.json"
    pf.write_text(json.dumps({"format": "sdagent-plan/1", "source": source,
                              "settings": {setting: asked, key: file_path, **other}}))

    plan = plan_in_force(topo, facts, plan_file=str(pf), environ={})
    d = {x.key: x for x in plan.decisions}
    in_effect = {"present": file_path, "missing-host-copy": host_path, "missing-none": None}[state]
    # 1. the decision: the value in effect, and why
    assert plan.settings[key] == d[key].value == in_effect
    if state == "present":
        assert d[key].reason == f"from the {source} plan file"
    else:
        assert file_path in d[key].reason and "no such file" in d[key].reason
        assert (host_path in d[key].reason) if host_path else d[key].reason.endswith("so none")
        assert any(f[0] == key and f[1] == file_path and f[2] == in_effect for f in plan.fallbacks)
        assert any(w.startswith(f"{key}={file_path} asked by the {source} plan file") for w in plan.warnings)
    assert plan.settings[setting] == (asked if in_effect else "default")
    # 2. the env file: LD_PRELOAD names the file in effect, the comment above says why
    env = render(plan, "env")
    preload = re.search(r'^LD_PRELOAD="([^"]*)"', env, re.M)
    preloads = preload.group(1).split(":") if preload else []
    assert (in_effect in preloads) if in_effect else not preloads
    assert file_path not in preloads or state == "present"
    comment = re.search(rf"^# {key} = (\S+): (.*)$", env, re.M)
    assert comment and comment.group(1) == str(in_effect) and comment.group(2) == d[key].reason
    # 3. verify on a process started with that env, and on exec's child (the plan from SDAGENT_PLAN_JSON)
    proc = ProcessState(mapped=(*preloads, TORCH), torch_threads=plan.omp_num_threads,
                        affinity=tuple(plan.instance(0).cpus))
    child = plan_in_force(topo, facts, plan_file=None, environ={PLAN_ENV: plan_env_value(plan)})
    want_exit, want_status = EXPECTED[(state, source)]
    for p in (plan, child):
        checks = {c.name: c for c in process_checks(p, proc, tuple(plan.instance(0).cpus))}
        assert checks["plan_honoured"].status == want_status, checks["plan_honoured"]
        assert checks["allocator"].status == checks["openmp"].status == PASS  # checked against the plan in force
        assert decide_exit(checks.values()) == want_exit
