"""The planner: expected plans for each fixture host, layouts, overrides, fallbacks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from evidence_fixtures import POSITIVE, shipped_keeps
from hosts import HOSTS, write_tree
from sdagent.errors import BadInput
from sdagent.host.software import HostFacts, IpexStatus
from sdagent.host.topology import read_topology
from sdagent.planning.layout import PlanRequest
from sdagent.planning.plan import make_plan
from sdagent.planning.planfile import load_plan_file
from sdagent.planning.settings import (MALLOC_CONF_PROFILES, UNSET, parse_assignments,
                                       parse_setting)

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
TC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"
IOMP = "/opt/sdagent/venv/lib/libiomp5.so"

FULL = HostFacts(
    libraries={"jemalloc": JE, "tcmalloc": TC, "iomp": IOMP},
    numactl="/usr/bin/numactl", taskset="/usr/bin/taskset", numa_permitted=True,
    ipex=IpexStatus(False, None, "2.13.0", "intel-extension-for-pytorch is not installed"),
)
IPEX_OK = replace(FULL, ipex=IpexStatus(True, "2.8.0", "2.8.0", "IPEX 2.8.0 matches torch 2.8.0"))


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = read_topology(write_tree(base / name, HOSTS[name]))
        return cache[name]
    return get


# name -> (cpus of instance 0, threads, binding, launcher, precision, KMP_AFFINITY)
NUMACTL = "/usr/bin/numactl"
EXPECTED = {
    "epyc-2core-avx2": ("0-1", 2, "none", [], "fp32", None),
    "xeon-vm-2core-amx": ("0-1", 2, "none", [], "bf16", None),
    # pinned by numactl: KMP_AFFINITY left unset (issue 19 item 8; tune measures compact pinning)
    "spr-2s-smt": ("0-55", 56, "numactl", [NUMACTL, "--physcpubind=0-55", "--membind=0"], "bf16", None),
    # SNC-2: the latency instance is the whole socket, its memory bound to both of its nodes (item 4)
    "spr-2s-snc": ("0-55", 56, "numactl", [NUMACTL, "--physcpubind=0-55", "--membind=0,1"], "bf16", None),
    "spr-1s-snc4": ("0-55", 56, "numactl", [NUMACTL, "--physcpubind=0-55", "--membind=0,1,2,3"], "bf16", None),
    "container-4cpu": ("8-11", 4, "none", [], "bf16", None),
    # a quota (2.5 CPUs) smaller than the mask: floor(quota) threads, no pinning (item 1)
    "container-v1-quota": ("0-1", 2, "none", [], "bf16", None),
    "pod-quota-fullmask": ("0-6", 7, "none", [], "bf16", None),
    # node 0 has no memory: the latency instance goes to the socket whose node has (item 2)
    "2s-node0-memoryless": ("8-15", 8, "numactl", [NUMACTL, "--physcpubind=8-15", "--membind=1"], "bf16", None),
    "tr-4node-memoryless": ("0-31", 32, "numactl", [NUMACTL, "--physcpubind=0-31", "--membind=0,2"], "fp32", None),
    # hybrid: P-cores only, one thread per core (item 5)
    "alderlake-hybrid": ("0-7", 8, "numactl", [NUMACTL, "--physcpubind=0-7"], "fp32", None),
    "hybrid-capacity": ("0-7", 8, "numactl", [NUMACTL, "--physcpubind=0-7"], "fp32", None),
    # isolcpus=6-7: left out, and pinned so that OpenMP stays off them (item 6)
    "isolcpus-8core": ("0-5", 6, "numactl", [NUMACTL, "--physcpubind=0-5"], "fp32", None),
}


@pytest.mark.parametrize("evidence", ["shipped", "positive"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_plan_per_host(topo, name, evidence):
    """The layout, binding and precision per host; the preloads as the evidence says for the host's class:
    the shipped evidence (jemalloc and libiomp5 measured slower on every class measured) or evidence that
    they measured faster everywhere (the plan then preloads them, with the demo's MALLOC_CONF)."""
    cpus, threads, binding, launcher, precision, kmp = EXPECTED[name]
    t = topo(name)
    p = make_plan(t, FULL, evidence=POSITIVE if evidence == "positive" else None)
    je = evidence == "positive" or shipped_keeps(t.flags, "jemalloc")
    iomp = evidence == "positive" or shipped_keeps(t.flags, "libiomp5")
    assert p.instance(0).cpulist == cpus
    assert p.omp_num_threads == threads
    assert p.binding == binding
    assert p.launcher(0) == launcher
    assert p.precision == precision
    env = p.env(0)
    assert env.get("LD_PRELOAD") == (":".join(([JE] if je else []) + ([IOMP] if iomp else [])) or None)
    assert env.get("MALLOC_CONF") == (MALLOC_CONF_PROFILES["demo"] if je else None)
    assert env["OMP_NUM_THREADS"] == str(threads)
    assert env.get("KMP_AFFINITY") == (kmp if iomp else None)
    assert "KMP_BLOCKTIME" not in env  # one latency instance keeps the default
    assert p.backend == "native"
    assert {d.key for d in p.decisions} >= {"allocator", "omp_runtime", "binding", "precision", "backend"}
    assert all(d.reason for d in p.decisions)


def test_epyc_says_why_fp32(topo):
    p = make_plan(topo("epyc-2core-avx2"), FULL)
    reason = next(d.reason for d in p.decisions if d.key == "precision")
    assert "emulated" in reason
    assert p.weights_prepack is False  # IPEX's bf16 prepack would assert without AVX512-BW/VL/DQ


def test_ipex_chosen_when_usable(topo):
    assert make_plan(topo("spr-2s-smt"), IPEX_OK).backend == "ipex"


def test_multi_instance_never_spans_nodes(topo):
    t = topo("spr-2s-smt")
    p = make_plan(t, FULL, PlanRequest(instances=4), evidence=POSITIVE)
    assert [i.cpulist for i in p.instances] == ["0-27", "28-55", "56-83", "84-111"]
    assert [i.node for i in p.instances] == [0, 0, 1, 1]
    assert p.omp_num_threads == 28
    assert p.env(2)["KMP_BLOCKTIME"] == "1" and p.env(2)["SDAGENT_INSTANCE"] == "2"
    # without Intel OpenMP (the shipped evidence on this class) nothing reads KMP_*
    stock_omp = make_plan(t, FULL, PlanRequest(instances=4))
    assert stock_omp.omp_runtime == "default" and "KMP_BLOCKTIME" not in stock_omp.env(2)
    assert stock_omp.binding == "numactl"  # instances sharing a host are pinned whatever the evidence
    assert p.launcher(3)[-1] == "--membind=1"
    # 3 instances on 2 nodes of 56: the largest size that fits is 28 cores.
    p3 = make_plan(t, FULL, PlanRequest(instances=3))
    assert [len(i.cpus) for i in p3.instances] == [28, 28, 28]
    pc = make_plan(t, FULL, PlanRequest(cores_per_instance=14))
    assert len(pc.instances) == 8 and {len(i.cpus) for i in pc.instances} == {14}


def test_span_nodes_and_smt(topo):
    t = topo("spr-2s-smt")
    p = make_plan(t, FULL, PlanRequest(span_nodes=True))
    assert p.instance(0).cpulist == "0-111" and p.instance(0).node is None
    assert "--membind" not in " ".join(p.launcher(0))
    s = make_plan(t, FULL, PlanRequest(use_smt=True))
    assert s.instance(0).cpulist == "0-55,112-167" and s.omp_num_threads == 112


@pytest.mark.parametrize("request_, message", [
    (PlanRequest(instances=113), "at most 112"),
    (PlanRequest(instances=0), "must be >= 1"),
    (PlanRequest(cores_per_instance=57), "more than the 56 cores"),
    (PlanRequest(instances=5, cores_per_instance=28), "only 4 such instances fit"),
])
def test_bad_layouts(topo, request_, message):
    with pytest.raises(BadInput, match=message):
        make_plan(topo("spr-2s-smt"), FULL, request_)


def test_numa_refused_falls_back_to_taskset(topo):
    facts = replace(FULL, numa_permitted=False)
    p = make_plan(topo("spr-2s-smt"), facts)
    assert p.binding == "taskset" and p.launcher(0) == ["/usr/bin/taskset", "-c", "0-55"]
    assert "refuses memory binding" in next(d.reason for d in p.decisions if d.key == "binding")


def test_missing_libraries_never_preloaded(topo):
    facts = replace(FULL, libraries={"jemalloc": None, "tcmalloc": None, "iomp": None})
    p = make_plan(topo("spr-2s-smt"), facts, evidence=POSITIVE)
    assert p.allocator == "default" and p.omp_runtime == "default"
    assert "LD_PRELOAD" not in p.env(0) and "KMP_AFFINITY" not in p.env(0)
    assert set(p.missing_libraries) == {"jemalloc", "tcmalloc", "iomp"}
    # a library the evidence does not keep is not missing: nothing wanted it
    assert make_plan(topo("spr-2s-smt"), facts).missing_libraries == ()
    tc = make_plan(topo("spr-2s-smt"), replace(FULL, libraries={"jemalloc": None, "tcmalloc": TC, "iomp": IOMP}),
                   evidence=POSITIVE)
    assert tc.allocator == "tcmalloc" and tc.env(0)["LD_PRELOAD"] == f"{TC}:{IOMP}"
    assert "MALLOC_CONF" not in tc.env(0)


def test_overrides_are_validated_and_strict(topo):
    t = topo("spr-2s-smt")
    p = make_plan(t, FULL, overrides=parse_assignments(["binding=taskset", "kmp_blocktime=0", "allocator=jemalloc",
                                                        "omp_runtime=intel", "malloc_conf=long"]))
    assert p.binding == "taskset" and p.env(0)["KMP_BLOCKTIME"] == "0"
    assert p.env(0)["MALLOC_CONF"] == MALLOC_CONF_PROFILES["long"]
    assert p.source == "derived+overrides"
    nolib = replace(FULL, libraries={"jemalloc": None, "tcmalloc": None, "iomp": IOMP})
    with pytest.raises(BadInput, match="libjemalloc was not found"):
        make_plan(t, nolib, overrides={"allocator": "jemalloc"})
    with pytest.raises(BadInput, match="backend=ipex but IPEX is not usable"):
        make_plan(t, FULL, overrides={"backend": "ipex"})
    with pytest.raises(BadInput, match="224 logical CPUs"):
        make_plan(t, FULL, overrides={"omp_num_threads": 500})


@pytest.mark.parametrize("key, raw, message", [
    ("binding", "pin", "choose one of numactl, taskset, none"),
    ("omp_num_threads", "0", "must be >= 1"),
    ("omp_num_threads", "two", "expected an integer"),
    ("compile", "maybe", "expected true or false"),
    ("bogus", "1", "unknown plan setting 'bogus'"),
    ("iomp_path", "/nonexistent/libiomp5.so", "no such file"),
])
def test_parse_setting_errors(key, raw, message):
    with pytest.raises(BadInput, match=message):
        parse_setting(key, raw)


def test_parse_assignment_syntax():
    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        parse_assignments(["binding"])
    assert parse_assignments(["kmp_affinity=unset", "compile=yes"]) == {"kmp_affinity": UNSET, "compile": True}


def test_bf16_override_on_avx2_warns(topo):
    p = make_plan(topo("epyc-2core-avx2"), FULL, overrides={"precision": "bf16"})
    assert p.precision == "bf16" and any("emulated" in w for w in p.warnings)


def test_plan_file_roundtrip_is_lenient(topo, tmp_path):
    t = topo("spr-2s-smt")
    tuned = make_plan(t, FULL, overrides={"kmp_blocktime": 1, "backend": "native"}, source="tuned",
                      tuning={"chosen": "x"})
    f = tmp_path / "plan.json"
    d = tuned.to_dict()
    d["source"] = "tuned"
    d["settings"]["allocator"] = "jemalloc"
    f.write_text(json.dumps(d))
    loaded = load_plan_file(f)
    assert loaded.source == "tuned" and loaded.settings["kmp_blocktime"] == 1
    # On a host without jemalloc, a plan file's allocator falls back with a warning.
    nolib = replace(FULL, libraries={"jemalloc": None, "tcmalloc": None, "iomp": IOMP})
    p = make_plan(t, nolib, file_settings={k: v for k, v in loaded.settings.items() if not k.endswith("_path")},
                  source=loaded.source)
    assert p.allocator == "default" and p.warnings and p.source == "tuned"
    assert make_plan(t, FULL, file_settings=loaded.settings, source="tuned",
                     overrides={"binding": "none"}).source == "tuned+overrides"
    assert "from the tuned plan file" in next(d.reason for d in p.decisions if d.key == "kmp_blocktime")


def test_bad_plan_files(tmp_path):
    f = tmp_path / "p.json"
    f.write_text('{"x": 1}')
    with pytest.raises(BadInput, match="not an sdagent plan"):
        load_plan_file(f)
    f.write_text('{"settings": {"binding": "glue"}}')
    with pytest.raises(BadInput, match="invalid value 'glue'"):
        load_plan_file(f)
    # a key given twice: refused, not the last one silently kept
    f.write_text('{"settings": {"precision": "fp32", "precision": "bf16"}}')
    with pytest.raises(BadInput, match=f"plan file {f} is not valid JSON: duplicate key 'precision'"):
        load_plan_file(f)


def test_a_compiler_that_cannot_build_plans_eager(topo):
    """HostFacts.cxx_error (the compiler's test build failed): compile false, the error as the reason; a plan
    file's compile true falls back with the same reason, an override is refused."""
    t = topo("spr-2s-smt")
    ok = make_plan(t, replace(FULL, cxx="/usr/bin/g++"))
    assert ok.settings["compile"] is True
    broken = replace(FULL, cxx="/usr/bin/g++", cxx_error="g++ 8.5.0: error: unrecognized option '-std=c++17'")
    p = make_plan(t, broken)
    d = next(d for d in p.decisions if d.key == "compile")
    assert d.value is False and d.reason == "compile unavailable: g++ 8.5.0: error: unrecognized option '-std=c++17'"
    f = make_plan(t, broken, file_settings={"compile": True}, source="tuned")
    assert f.settings["compile"] is False and any("compile unavailable" in w for w in f.warnings)
    with pytest.raises(BadInput, match="compile=True but compile unavailable"):
        make_plan(t, broken, overrides={"compile": True})


# ---------------------------------------------------------------------------
# Defaults from evidence (issue 21): the untuned plan is never slower than stock on a class measured
# ---------------------------------------------------------------------------

#: lever -> whether a plan has it on (for a lone latency instance over every allowed CPU)
LEVER_ON = {
    "jemalloc": lambda p: p.allocator == "jemalloc",
    "tcmalloc": lambda p: p.allocator == "tcmalloc",
    "libiomp5": lambda p: p.omp_runtime == "intel",
    "pinning": lambda p: p.binding != "none",
    "kmp_blocktime": lambda p: p.kmp_blocktime != UNSET,
    "native_bf16": lambda p: p.precision == "bf16",
    "compile": lambda p: bool(p.compile),
    "channels_last": lambda p: bool(p.channels_last),
}
#: a fixture host per ISA class the shipped evidence measured
CLASS_HOSTS = {"amx": "xeon-vm-2core-amx", "avx512_bf16": "epyc-2core-zen5", "avx2": "epyc-2core-avx2"}


@pytest.mark.parametrize("cls", sorted(CLASS_HOSTS))
def test_no_lever_measured_slower_on_a_class_is_in_its_untuned_plan(topo, cls):
    """The rule: on every class measured, a lever with any measurement slower than without it is off (and a
    lever on is one measured faster there), whatever libraries the host has."""
    from sdagent.planning.evidence import SLOWER, default_evidence, lever_finding

    t = topo(CLASS_HOSTS[cls])
    p = make_plan(t, replace(FULL, cxx="/usr/bin/g++"))
    ev = default_evidence()
    for lever, on in LEVER_ON.items():
        if lever == "libiomp5" and p.compile:
            continue  # compiled packages need one OpenMP runtime: test_a_compiled_plan_preloads_one_openmp_runtime
        f = lever_finding(ev, lever, cls)
        if any(m.verdict == SLOWER for m in f.on_class):
            assert not on(p), (cls, lever)
        if on(p):
            assert f.keep, (cls, lever)
    # today's evidence: no preload measured faster anywhere, except libiomp5 under compiled packages
    assert p.env(0).get("LD_PRELOAD", "") == (p.library_path("iomp") if p.compile else "")


@pytest.mark.parametrize("cls", sorted(CLASS_HOSTS))
def test_a_compiled_plan_preloads_one_openmp_runtime(topo, cls):
    """AOTInductor packages link the system libgomp beside torch's bundled one: a compiled plan preloads
    libiomp5 (one runtime for both), with that reason; an eager plan on the same host does not."""
    from sdagent.planning.rules import COMPILED_ONE_RUNTIME

    t = topo(CLASS_HOSTS[cls])
    p = make_plan(t, replace(FULL, cxx="/usr/bin/g++"))
    why = {d.key: d.reason for d in p.decisions}
    if p.compile:
        assert p.omp_runtime == "intel" and why["omp_runtime"] == COMPILED_ONE_RUNTIME
    else:
        assert p.omp_runtime == "default"
    eager = make_plan(t, replace(FULL, cxx="/usr/bin/g++"), overrides={"compile": False})
    assert eager.omp_runtime == "default" and "LD_PRELOAD" not in eager.env(0)


def test_the_reasons_name_the_evidence(topo):
    p = make_plan(topo("xeon-vm-2core-amx"), FULL)
    why = {d.key: d.reason for d in p.decisions}
    assert why["allocator"].startswith("glibc malloc, stock's: jemalloc off, measured 0.63-0.92x the speed "
                                       "without it on amx hosts (2, 16 cores;")
    assert "amx-16c-ladder-preloads-fp32" in why["allocator"] and "`sdagent tune` tries jemalloc (found here)" \
        in why["allocator"]
    assert why["omp_runtime"].startswith("torch's own OpenMP, stock's: libiomp5 off, measured ")
    assert "pinning off, measured" in why["binding"]
    assert "bf16 runs natively, measured 1.51-2.41x the speed without it on amx hosts" in why["precision"]
    bare = make_plan(topo("xeon-vm-2core-amx"), replace(FULL, libraries={"jemalloc": None, "tcmalloc": None,
                                                                         "iomp": None}))
    assert "libiomp5 is not installed here (pip install intel-openmp" in \
        next(d.reason for d in bare.decisions if d.key == "omp_runtime")


def test_a_class_without_evidence_gets_the_conservative_plan(topo):
    """AVX-512 without native bf16 (Skylake-SP to Ice Lake): measured nowhere, so only what measured faster on
    every class measured stays (native bf16 and compile, which need a bf16 ISA it lacks): stock's preloads."""
    t = replace(topo("xeon-vm-2core-amx"), flags=("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"))
    p = make_plan(t, replace(FULL, cxx="/usr/bin/g++"))
    assert (p.allocator, p.omp_runtime, p.binding, p.precision, p.compile) == ("default", "default", "none",
                                                                                 "fp32", False)
    assert "not measured on avx512 hosts, so the conservative plan" in \
        next(d.reason for d in p.decisions if d.key == "allocator")


def test_evidence_that_a_lever_pays_keeps_it_on_that_class_only(topo):
    """Evidence is per class: jemalloc measured faster on amx hosts is kept there, not on the AVX2 host,
    where the shipped evidence measured it slower."""
    from sdagent.planning.evidence import Evidence, Measurement, Ratio, default_evidence

    amx_only = Measurement("je-amx-test", "test", "amx", 2, "2.13.0", ("jemalloc",), "fp32", "stock",
                           Ratio(1.2, 1.1, 1.3, 3), "w", "c", "tests")
    # the shipped amx jemalloc entries are slower: replace them by the positive one
    ev = Evidence(tuple(m for m in default_evidence().measurements
                        if not (m.isa_class == "amx" and "jemalloc" in m.levers)) + (amx_only,))
    amx = make_plan(topo("xeon-vm-2core-amx"), FULL, evidence=ev)
    assert amx.allocator == "jemalloc" and "jemalloc found and kept: measured 1.20x" in \
        next(d.reason for d in amx.decisions if d.key == "allocator")
    assert amx.env(0)["LD_PRELOAD"] == JE and amx.omp_runtime == "default"
    assert make_plan(topo("epyc-2core-avx2"), FULL, evidence=ev).allocator == "default"
