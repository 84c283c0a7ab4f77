"""Issue 19 items 1-6 and 8 (planning): hosts as fleets really have them, each shape a `--sysroot` fixture.

CFS quota without an owned cpuset, memoryless NUMA nodes, membind's reason, SNC/NPS sockets, hybrid P/E
cores, isolated CPUs, and KMP_AFFINITY under numactl/taskset. Each test fails on the tree before the fix.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace

import pytest
from click.testing import CliRunner

from hosts import HOSTS, write_tree
from sdagent.cli import cli
from sdagent.host.software import HostFacts, IpexStatus, memory_node, numa_binding_permitted
from sdagent.host.topology import read_topology
from sdagent.planning.layout import PlanRequest, latency_layouts
from sdagent.planning.plan import make_plan
from sdagent.planning.settings import KMP_AFFINITY_COMPACT, UNSET
from sdagent.tuning.axes import HostChoices, make_axes
from sdagent.tuning.search import Candidate

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
IOMP = "/opt/sdagent/venv/lib/libiomp5.so"
FULL = HostFacts(libraries={"jemalloc": JE, "tcmalloc": None, "iomp": IOMP}, numactl="/usr/bin/numactl",
                 taskset="/usr/bin/taskset", numa_permitted=True,
                 ipex=IpexStatus(False, None, "2.13.0", "not installed"))
TASKSET = replace(FULL, numactl=None)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("shapes")
    return {name: write_tree(base / name, spec) for name, spec in HOSTS.items()}


@pytest.fixture(scope="module")
def topo(trees):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = read_topology(trees[name])
        return cache[name]
    return get


def reasons(plan):
    return {d.key: d.reason for d in plan.decisions}


# --- item 1: a CFS quota over a mask the process does not own ------------------------------------------

@pytest.mark.parametrize("name, threads", [("pod-quota-fullmask", 7), ("container-v1-quota", 2)])
def test_quota_budget_floors_threads_and_never_pins(topo, name, threads):
    t = topo(name)
    assert t.cpu_budget == "quota"
    for facts in (FULL, TASKSET):
        for req in (PlanRequest(), PlanRequest(instances=2)):
            p = make_plan(t, facts, req)
            assert p.omp_num_threads == (threads if req.instances is None else threads // 2)
            assert (p.binding, p.membind, p.kmp_affinity) == ("none", False, UNSET)
            assert all(p.launcher(i.index) == [] for i in p.instances) and "KMP_AFFINITY" not in p.env(0)
            r = reasons(p)
            assert "CFS quota" in r["binding"] and "same CPUs" in r["binding"]
    assert "floor of the quota" in reasons(make_plan(t, FULL))["omp_num_threads"]


def test_fractional_and_tiny_quotas(tmp_path):
    for quota, threads in (("765000 100000", 7), ("50000 100000", 1)):
        spec = replace(HOSTS["spr-2s-smt"], name="q", cgroup=f"v2:{quota}", cgroup_path="/system.slice/sd.service")
        t = read_topology(write_tree(tmp_path / quota.split()[0], spec))
        p = make_plan(t, FULL)
        assert p.omp_num_threads == threads and p.binding == "none"


def test_an_owned_cpuset_is_still_pinned_inside(topo):
    """The kubelet's static CPU manager: an exclusive cpuset (quota = its size) is the process's own."""
    t = topo("container-4cpu")
    assert t.cpu_budget == "cpuset"
    p = make_plan(t, FULL, PlanRequest(instances=2))
    assert p.binding == "numactl" and p.launcher(1)[1] == "--physcpubind=10-11"


# --- item 2: NUMA nodes without memory --------------------------------------------------------------

def test_memoryless_nodes_are_never_bound(topo):
    t = topo("2s-node0-memoryless")
    assert [n.has_memory for n in t.nodes] == [False, True]
    latency = make_plan(t, FULL)
    assert latency.instance(0).node == 1 and latency.launcher(0)[-1] == "--membind=1"
    two = make_plan(t, FULL, PlanRequest(instances=2))
    assert [i.node for i in two.instances] == [0, 1]
    assert [p[-1] for p in (two.launcher(0), two.launcher(1))] == ["--membind=1", "--membind=1"]
    tr = make_plan(topo("tr-4node-memoryless"), FULL, PlanRequest(instances=4))
    assert [tr.launcher(i)[-1] for i in range(4)] == ["--membind=0", "--membind=0", "--membind=2", "--membind=2"]
    # a saved layout whose instance binds a memoryless node (a plan file from before) is laid out anew
    stale = replace(two.instances[1], mem_nodes=(0,))
    again = make_plan(t, FULL, PlanRequest(instances=2), instances=(two.instances[0], stale))
    assert again.instances[1].mem_nodes == (1,) and any("laid out anew" in w for w in again.warnings)


def test_no_node_with_memory_binds_nothing(tmp_path):
    spec = replace(HOSTS["spr-2s-smt"], name="nomem", node_mem_kb={0: 0, 1: 0})
    p = make_plan(read_topology(write_tree(tmp_path, spec)), FULL, PlanRequest(instances=2))
    assert p.membind is False and all("--membind" not in " ".join(p.launcher(i)) for i in range(2))
    assert "no node" in reasons(p)["membind"]


def test_the_numa_probe_binds_a_node_with_memory(tmp_path):
    """A stand-in numactl that refuses the memoryless node 0, as the real one does ("<0> is invalid")."""
    fake = tmp_path / "numactl"
    fake.write_text('#!/bin/sh\ncase "$1" in --membind=0) echo "<0> is invalid" >&2; exit 1;; esac\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "sys/devices/system/node").mkdir(parents=True)
    (tmp_path / "sys/devices/system/node/has_memory").write_text("1,3\n")
    node = memory_node(str(tmp_path))
    assert node == 1
    assert numa_binding_permitted(str(fake), node) is True
    assert numa_binding_permitted(str(fake), 0) is False  # what the old probe on node 0 concluded


# --- item 3: a decision's reason describes the value in effect ---------------------------------------

MULTI_NODE = [n for n, s in HOSTS.items() if s.sockets * s.nodes_per_socket > 1]
FACTS = {"full": FULL, "taskset": TASKSET, "no-numa": replace(FULL, numa_permitted=False),
         "bare": replace(FULL, numactl=None, taskset=None)}
FILES = {"none": {}, "all-on": {"binding": "numactl", "membind": True, "kmp_affinity": "compact"},
         "membind-off": {"binding": "numactl", "membind": False}, "unpinned": {"binding": "none", "membind": True}}


@pytest.mark.parametrize("name", MULTI_NODE)
def test_every_reason_describes_the_value_in_effect(topo, name):
    t = topo(name)
    for facts in FACTS.values():
        for fs in FILES.values():
            for req in (PlanRequest(), PlanRequest(instances=2), PlanRequest(span_nodes=True)):
                p = make_plan(t, facts, req, file_settings=fs, source="tuned")
                for d in p.decisions:
                    if " asked, but " in d.reason:  # a fallback: the reason ends with the value kept
                        assert d.reason.endswith(f"so {'none' if d.value is None else d.value}"), d
                r, s = reasons(p), p.settings
                if "asked, but" not in r["membind"] and not r["membind"].startswith("from the"):
                    assert s["membind"] == r["membind"].startswith("memory bound"), (name, r["membind"])
                assert s["membind"] == ("--membind" in " ".join(p.launcher(0))), (name, s, r["membind"])
                if s["binding"] == "none":
                    assert "pin with" not in r["binding"] or "asked, but" in r["binding"]


# --- item 4: SNC / NPS: sockets, not sub-nodes, by default --------------------------------------------

def test_snc_latency_instance_is_the_socket_and_one_sub_node_is_a_tune_axis(topo):
    t = topo("spr-2s-snc")
    assert t.socket_nodes() == {0: (0, 1), 1: (2, 3)}
    p = make_plan(t, FULL)
    assert p.instance(0).cpulist == "0-55" and p.launcher(0)[-1] == "--membind=0,1"
    assert "socket's nodes 0,1" in reasons(p)["membind"]
    sub = make_plan(t, FULL, PlanRequest(sub_node=True))
    assert sub.instance(0).cpulist == "0-27" and sub.launcher(0)[-1] == "--membind=0"
    assert latency_layouts(t) == [PlanRequest(sub_node=True).to_dict()]
    assert latency_layouts(topo("spr-2s-smt")) == []
    axes = {a.name: a for a in make_axes(_choices(latency_layouts(t)), lambda o, lay=None: _resolve(t, o, lay))}
    cands = axes["layout"].variants(Candidate("plan", {}, _resolve(t, {}), "plan"))
    assert [c.name for c in cands] == ["latency instance: one NUMA node (not the socket)"]
    assert cands[0].settings["omp_num_threads"] == 28


def _choices(layouts):
    return HostChoices(physical_cores=56, bf16=True, ipex=False, jemalloc=True, tcmalloc=False, iomp=True,
                       pin="numactl", compile=False, layouts=tuple(layouts))


def _resolve(t, overrides, layout=None):
    return dict(make_plan(t, FULL, PlanRequest.from_dict(layout) if layout else PlanRequest(),
                          overrides=dict(overrides)).settings)


# --- item 5: hybrid CPUs --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alderlake-hybrid", "hybrid-capacity"])
def test_hybrid_latency_instance_is_p_cores_only(topo, name):
    t = topo(name)
    assert t.hybrid and {t.cpu(c).kind for c in range(16)} == {"P"} and {t.cpu(c).kind for c in range(16, 24)} == {"E"}
    p = make_plan(t, FULL)
    assert p.instance(0).cpulist == "0-7" and p.omp_num_threads == 8
    assert "P-core" in reasons(p)["omp_num_threads"] and "E-cores left out" in reasons(p)["omp_num_threads"]
    both = make_plan(t, FULL, PlanRequest(e_cores=True))
    assert both.instance(0).cpulist == "0-7,16-23" and both.omp_num_threads == 16
    assert PlanRequest(e_cores=True).to_dict() in latency_layouts(t)


# --- item 6: isolated CPUs ---------------------------------------------------------------------------

def test_isolated_cpus_are_left_out_unless_nothing_else(topo, tmp_path):
    t = topo("isolcpus-8core")
    assert t.isolated_cpus == (6, 7) and t.usable_cpus == (0, 1, 2, 3, 4, 5)
    p = make_plan(t, FULL)
    assert p.instance(0).cpulist == "0-5" and p.launcher(0) == ["/usr/bin/numactl", "--physcpubind=0-5"]
    assert "isolated CPUs 6-7" in reasons(p)["binding"]
    only = read_topology(write_tree(tmp_path, replace(HOSTS["isolcpus-8core"], allowed="6-7")))
    assert only.usable_cpus == (6, 7) and make_plan(only, FULL).instance(0).cpulist == "6-7"


# --- item 8 (planning): KMP_AFFINITY under numactl/taskset ---------------------------------------------

@pytest.mark.parametrize("facts", [FULL, TASKSET])
def test_pinned_plans_leave_kmp_affinity_unset_and_tune_measures_it(topo, facts):
    t = topo("spr-2s-smt")
    intel = {"omp_runtime": "intel"}  # only Intel OpenMP reads KMP_*; the evidence leaves it off by default
    p = make_plan(t, facts, file_settings=intel, source="tuned")
    assert p.binding in ("numactl", "taskset") and p.kmp_affinity == UNSET and "KMP_AFFINITY" not in p.env(0)
    assert "one CPU" in reasons(p)["kmp_affinity"]
    axes = {a.name: a for a in make_axes(_choices(()), lambda o, lay=None: _resolve(t, o, lay))}
    cands = axes["KMP_AFFINITY"].variants(Candidate("plan", intel, _resolve(t, intel), "plan"))
    assert [c.settings["kmp_affinity"] for c in cands] == [KMP_AFFINITY_COMPACT]
    tuned = make_plan(t, facts, file_settings={**intel, "kmp_affinity": KMP_AFFINITY_COMPACT}, source="tuned")
    assert tuned.env(0)["KMP_AFFINITY"] == KMP_AFFINITY_COMPACT  # kept where tune measured it faster


# --- topology --json carries the new facts --------------------------------------------------------------

def test_topology_json_carries_memory_core_types_isolation_and_budget(trees):
    def topo_json(name):
        r = CliRunner().invoke(cli, ["--sysroot", str(trees[name]), "topology", "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    d = topo_json("tr-4node-memoryless")
    assert d["summary"]["memory_per_node_kb"]["1"] == 0 and d["summary"]["memoryless_nodes"] == [1, 3]
    assert d["nodes"][1]["distances"] == [16, 10, 32, 32]
    h = topo_json("alderlake-hybrid")
    assert h["summary"]["core_types"] == {"P": "0-15", "E": "16-23"} and h["cpus"][16]["kind"] == "E"
    assert topo_json("isolcpus-8core")["summary"]["isolated_cpus"] == "6-7"
    assert topo_json("pod-quota-fullmask")["summary"]["cpu_budget"] == "quota"
    assert topo_json("container-4cpu")["summary"]["cpu_budget"] == "cpuset"
    assert topo_json("spr-2s-smt")["summary"]["cpu_budget"] == "host"
    r = CliRunner().invoke(cli, ["--sysroot", str(trees["alderlake-hybrid"]), "topology"], catch_exceptions=False)
    assert "P-cores" in r.output and "budget" in r.output


def test_topology_json_roundtrips_the_new_fields(trees, tmp_path):
    for name in ("tr-4node-memoryless", "alderlake-hybrid", "isolcpus-8core"):
        t = read_topology(trees[name])
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(t.to_dict()))
        r = CliRunner().invoke(cli, ["--topology-file", str(f), "plan", "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        from sdagent.host.topology import load_topology_file
        back = load_topology_file(f)
        assert (back.cpus, back.nodes, back.isolated_cpus) == (t.cpus, t.nodes, t.isolated_cpus)


def test_sub_node_and_e_cores_on_the_command_line(trees):
    r = CliRunner().invoke(cli, ["--sysroot", str(trees["spr-2s-snc"]), "plan", "--sub-node", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.output)["instances"][0]["cpus"] == "0-27"
    r = CliRunner().invoke(cli, ["--sysroot", str(trees["alderlake-hybrid"]), "plan", "--e-cores", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.output)["instances"][0]["cpus"] == "0-7,16-23"


def test_systemd_drop_in_binds_the_nodes_with_memory(topo):
    """The unit drop-in's NUMAMask= follows the same rule as numactl: never a memoryless node."""
    from sdagent.planning.render import render

    two = make_plan(topo("2s-node0-memoryless"), FULL, PlanRequest(instances=2))
    assert "NUMAMask=1\n" in render(two, "systemd", 0) and "NUMAMask=0" not in render(two, "systemd", 0)
    snc = render(make_plan(topo("spr-2s-snc"), FULL), "systemd", 0)
    assert "NUMAPolicy=bind\nNUMAMask=0 1\n" in snc
    assert "NUMAMask" not in render(make_plan(topo("pod-quota-fullmask"), FULL), "systemd", 0)
