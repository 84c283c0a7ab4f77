"""backend: openvino (pipeline.ov_backend, pipeline.ov_artifacts) and the CPU key of compiled packages.

Unit tests run anywhere (no OpenVINO: the store's builder is injected). The end-to-end tests run the
agent's CLI with the OpenVINO venv's python (PYTHONPATH=<repo>/agent, as the peer's worker) on the tiny
model and skip, saying why, where that venv is absent (scripts/lib.sh venv_openvino creates it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import REPO, clean_env
from sdagent.errors import BadInput, Exit, SdagentError
from sdagent.peers import ovexport
from sdagent.pipeline import ov_artifacts as A
from sdagent.pipeline.artifacts import ArtifactKey, ArtifactStore, cpu_identity
from sdagent.pipeline.observe import Observed, observe_unet
from sdagent.planning.runspec import RunSpec

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f amx_tile amx_bf16 hypervisor

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu
"""


# ---------------------------------------------------------------------------
# The CPU part of a package's key: what -march=native depends on
# ---------------------------------------------------------------------------


def test_cpu_identity_is_vendor_family_model_and_every_flag_of_the_first_cpu():
    ident = cpu_identity(CPUINFO)
    assert ident[:3] == ("vendor=GenuineIntel", "family=6", "model=143")
    assert set(ident[3:]) == {"fpu", "sse2", "avx2", "fma", "avx512f", "amx_tile", "amx_bf16", "hypervisor"}
    assert cpu_identity("") == ()


def _akey(isa: tuple[str, ...]) -> ArtifactKey:
    return ArtifactKey("m", "unet", 64, 64, 2, "bf16", True, {"freezing": True}, "2.13.0", isa)


def test_a_package_for_a_cpu_with_the_same_isa_subset_but_another_flag_is_stale(tmp_path):
    # Two CPUs alike in the 15 ISA flags the old key used, unlike in one the compiler may use (avx512_vbmi).
    here = cpu_identity(CPUINFO)
    other = cpu_identity(CPUINFO.replace("hypervisor", "avx512_vbmi"))
    built, want = _akey(other), _akey(here)
    assert built.digest != want.digest
    d = tmp_path / built.digest
    d.mkdir()
    (d / "unet.pt2").write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"key": built.to_dict(), "file": "unet.pt2"}))
    found = ArtifactStore(tmp_path).lookup(want)
    assert found.artifact is None
    assert len(found.stale) == 1 and "another CPU (lacks hypervisor; had avx512_vbmi)" in found.stale[0]


def test_host_isa_is_the_whole_cpu_identity_not_the_isa_subset():
    from sdagent.host.topology import ISA_FLAGS
    from sdagent.pipeline.backends import host_isa

    ident = host_isa()
    assert ident[0].startswith("vendor=") and len(ident) > 3
    assert any(f not in ISA_FLAGS for f in ident[3:])  # sse2, fpu, ...: more than the 15-flag subset


# ---------------------------------------------------------------------------
# The export store (fake builder: no OpenVINO)
# ---------------------------------------------------------------------------


def _key(**kw) -> A.OvKey:
    base = dict(model="fp", height=64, width=64, batch=2, precision="fp32",
                versions={"openvino": "2026.4.1", "optimum-intel": "2.2.0"}, cpu=("vendor=X", "avx2"))
    return A.OvKey(**{**base, **kw})


def fake_builder(calls: list):
    def build(model_dir: Path, tmp: Path, key: A.OvKey):
        calls.append(key.digest)
        assert tmp.name.startswith(f".{key.digest}.")  # a hidden temp dir beside the store
        for rel, text in (("ir/unet/openvino_model.xml", "<net/>"), ("ir/unet/openvino_model.bin", "w" * 10)):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        (tmp / "blobs").mkdir()
        return "f32", {"probe": {"inference_precision_hint": "f32"}}
    return build


def test_the_key_digest_changes_with_every_field():
    k = _key()
    for change in (dict(model="fp2"), dict(height=128), dict(batch=1), dict(precision="bf16"),
                   dict(versions={"openvino": "2026.5.0", "optimum-intel": "2.2.0"}), dict(cpu=("vendor=X",)),
                   dict(recipe=99)):
        assert _key(**change).digest != k.digest, change


def test_an_export_is_built_once_atomically_then_found(tmp_path):
    from sdagent.pipeline.ov_backend import find_or_build

    calls: list = []
    notes: list[str] = []
    art = find_or_build(tmp_path / "model", _key(), str(tmp_path), True, notes, fake_builder(calls))
    root = tmp_path / "openvino"
    assert art.path == root / _key().digest and art.resolved_precision == "f32"
    assert [p.name for p in root.iterdir() if p.is_dir()] == [_key().digest]  # no temp dir left (the lock file stays)
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["key"] == _key().to_dict() and m["files"]["unet/openvino_model.xml"]["sha256"]
    assert notes and notes[0].startswith("openvino: built the export once")
    again = find_or_build(tmp_path / "model", _key(), str(tmp_path), True, [], fake_builder(calls))
    assert again.path == art.path and len(calls) == 1


def test_a_failed_build_leaves_nothing(tmp_path):
    def broken(model_dir, tmp, key):
        (tmp / "ir").mkdir()
        raise SdagentError("export failed (exit 1): boom", Exit.ERROR)

    with pytest.raises(SdagentError, match="boom"):
        A.OvStore(tmp_path).build(_key(), tmp_path, broken)
    assert [p.name for p in tmp_path.iterdir()] == [f".{_key().digest}.lock"]  # no temp dir, the empty lock file


def test_a_build_removes_what_a_killed_builder_left_and_finds_a_build_finished_while_it_waited(tmp_path):
    """A builder killed midway (SIGKILL at a tune's ceiling) leaves its temp directory: the next build of that key
    removes it once it holds the key's lock (another key's stays); a build that finds the export done once it
    holds the lock (another process built it meanwhile) returns it without building."""
    store, calls = A.OvStore(tmp_path), []
    killed = tmp_path / f".{_key().digest}.k1ll3d"
    (killed / "ir").mkdir(parents=True)
    other = tmp_path / f".{_key(height=128).digest}.busy"
    other.mkdir()
    art = store.build(_key(), tmp_path, fake_builder(calls))
    assert not killed.exists() and other.is_dir() and len(calls) == 1
    assert store.build(_key(), tmp_path, fake_builder(calls)).path == art.path and len(calls) == 1


def test_a_second_builder_waits_for_the_first(tmp_path):
    """atomicio.building: while one holder has a key's lock, another (here a second descriptor in a thread)
    waits; it runs once the first is done."""
    import threading

    from sdagent import atomicio

    order: list[str] = []

    def second() -> None:
        with atomicio.building(tmp_path, "k"):
            order.append("second")

    with atomicio.building(tmp_path, "k"):
        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]


@pytest.mark.parametrize("tamper, why", [
    (lambda d: (d / "ir/unet/openvino_model.xml").write_text("<mod/>"), "unet/openvino_model.xml changed"),
    (lambda d: (d / "ir/unet/openvino_model.bin").write_text("w"), "unet/openvino_model.bin resized"),
    (lambda d: (d / "ir/unet/openvino_model.bin").unlink(), "unet/openvino_model.bin missing"),
    (lambda d: (d / "manifest.json").unlink(), "no sdagent manifest"),
])
def test_a_tampered_export_is_stale_never_loaded_and_rebuilt(tmp_path, tamper, why):
    from sdagent.pipeline.ov_backend import find_or_build

    calls: list = []
    art = find_or_build(tmp_path, _key(), str(tmp_path), True, [], fake_builder(calls))
    tamper(art.path)
    with pytest.raises(SdagentError, match=why):
        find_or_build(tmp_path, _key(), str(tmp_path), False, [], fake_builder(calls))
    notes: list[str] = []
    again = find_or_build(tmp_path, _key(), str(tmp_path), True, notes, fake_builder(calls))
    assert len(calls) == 2 and why in notes[0] and "stale" in notes[0]
    assert A.OvStore(A.store_root(str(tmp_path))).check(again.path, _key()) is None


def test_an_export_for_another_toolchain_or_cpu_is_reported_stale_and_removed(tmp_path):
    from sdagent.pipeline.ov_backend import find_or_build

    calls: list = []
    old = _key(versions={"openvino": "2025.1.0", "optimum-intel": "2.2.0"}, cpu=("vendor=X", "avx2", "amx_tile"))
    stale = find_or_build(tmp_path, old, str(tmp_path), True, [], fake_builder(calls))
    other_shape = find_or_build(tmp_path, _key(height=128), str(tmp_path), True, [], fake_builder(calls))
    notes: list[str] = []
    find_or_build(tmp_path, _key(), str(tmp_path), True, notes, fake_builder(calls))
    assert "openvino 2025.1.0 (here 2026.4.1)" in notes[0] and "another CPU (had amx_tile)" in notes[0]
    assert not stale.path.exists() and other_shape.path.exists()  # another shape is not stale: kept


def test_an_export_dir_of_another_model_under_this_digest_is_not_loaded(tmp_path):
    calls: list = []
    store = A.OvStore(tmp_path)
    art = store.build(_key(model="another-model"), tmp_path, fake_builder(calls))
    shutil.move(str(art.path), str(tmp_path / _key().digest))  # copied in under this key's name
    found = store.lookup(_key())
    assert found.artifact is None and "model 'another-model' (here 'fp')" in found.stale[0]


def test_the_model_fingerprint_follows_the_tokenizer_and_scheduler(tmp_path):
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "tokenizer" / "vocab.json").write_text("{}")
    a = A.ov_model_fingerprint(tmp_path)
    (tmp_path / "tokenizer" / "vocab.json").write_text('{"a": 1}')
    assert A.ov_model_fingerprint(tmp_path) != a


# ---------------------------------------------------------------------------
# The backend in the run record, the checks and the tune axis
# ---------------------------------------------------------------------------


def test_runspec_and_observed_know_openvino():
    spec = RunSpec("openvino", "bf16", False, False, True)
    assert RunSpec.from_dict(spec.to_dict()) == spec and "openvino" in spec.describe()
    obs = Observed("bfloat16", "bfloat16", 0, False, "openvino", "abc")
    assert obs.backend == "openvino" and obs.precision == "bf16" and not obs.compiled

    class Own:
        def observe_unet(self):
            return (lambda: obs), (lambda: None)

    get, remove = observe_unet(Own())
    assert get() is obs


def test_verify_fails_with_exit_3_when_the_loaded_export_is_not_the_planned_one():
    from sdagent.verifying.checks import check_artifacts, decide_exit

    ok = check_artifacts(True, {"openvino": "aaa"}, {"openvino": "aaa"}, "openvino", None, "openvino")
    assert ok.status == "pass" and decide_exit([ok]) == Exit.OK
    wrong = check_artifacts(True, {"openvino": "aaa"}, {"openvino": "bbb"}, "openvino", None, "openvino")
    assert wrong.status == "fail" and "openvino bbb (planned aaa)" in wrong.detail
    assert decide_exit([wrong]) == Exit.TUNING_NOT_IN_EFFECT
    torch_ran = check_artifacts(True, {"openvino": "aaa"}, {}, "eager", None, "openvino")
    assert decide_exit([torch_ran]) == Exit.TUNING_NOT_IN_EFFECT


def test_the_tune_axis_tries_openvino_where_it_is_usable():
    from sdagent.tuning import axes as X
    from sdagent.tuning.search import Candidate

    def resolve(overrides, layout=None):
        return {"backend": "native", "precision": "fp32", "compile": False, "channels_last": True, **overrides}

    best = Candidate("plan", {}, resolve({}), "plan")
    for ov in (False, True):
        host = X.HostChoices(physical_cores=2, bf16=True, ipex=False, jemalloc=False, tcmalloc=False, iomp=False,
                             pin=None, openvino=ov)
        axis = next(a for a in X.make_axes(host, resolve) if a.name == "precision/backend")
        names = [c.name for c in axis.variants(best)]
        assert ("openvino bf16" in names) is ov and ("openvino fp32" in names) is ov
    ov_best = next(c for c in axis.variants(best) if c.name == "openvino bf16")
    assert ov_best.overrides == {"backend": "openvino", "precision": "bf16", "compile": False}
    # a best that won with preloads: its openvino variants drop them (refused under openvino)
    preloaded = Candidate("preloads", {"allocator": "jemalloc", "omp_runtime": "intel"},
                          resolve({"allocator": "jemalloc", "omp_runtime": "intel"}), "preloads")
    ov_pre = next(c for c in axis.variants(preloaded) if c.name == "openvino fp32")
    assert ov_pre.overrides["allocator"] == ov_pre.overrides["omp_runtime"] == "default"
    assert next(c for c in axis.variants(preloaded) if c.name == "native fp32").overrides["allocator"] == "jemalloc"
    mem = next(a for a in X.make_axes(host, resolve) if a.name == "memory format")
    assert mem.variants(ov_best) == []  # channels_last means nothing to the IR


def test_backend_openvino_without_openvino_is_one_line_exit_2(tiny_model, tmp_path):
    from sdagent.pipeline.ov_backend import openvino_status

    if openvino_status().usable:
        pytest.skip("OpenVINO GenAI is installed in this Python: the refusal cannot be seen here")
    p = subprocess.run([sys.executable, "-m", "sdagent", "run", "--model", str(tiny_model), "--prompt", "x",
                        "--backend", "openvino", "-o", str(tmp_path / "a.png")], env=clean_env(),
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert p.returncode == 2, p.stderr
    assert "backend openvino is not usable here" in p.stderr and "sdagent[openvino]" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# OpenVINO's knobs as plan settings, and how they meet the binding and the preloads
# ---------------------------------------------------------------------------

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _plan(tmp_path, host: str, request=None, ipex_usable: bool = False, **overrides):
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.planning.layout import PlanRequest
    from sdagent.planning.plan import make_plan

    facts = HostFacts(libraries={"jemalloc": JE, "iomp": "/opt/venv/lib/libiomp5.so"}, numactl="/usr/bin/numactl",
                      taskset="/usr/bin/taskset", numa_permitted=True,
                      ipex=IpexStatus(True, "2.8.0", "2.8.0", "usable") if ipex_usable
                      else IpexStatus(False, None, "2.13.0", "not installed"))
    topo = read_topology(write_tree(tmp_path / host, HOSTS[host]))
    return make_plan(topo, facts, request or PlanRequest(), overrides=overrides)


def test_a_plan_with_backend_openvino_takes_no_preload_no_kmp_and_sets_its_knobs(tmp_path):
    from sdagent.planning.layout import PlanRequest

    native = _plan(tmp_path, "spr-2s-smt", allocator="jemalloc", omp_runtime="intel")
    assert native.settings["allocator"] == "jemalloc" and native.settings["omp_runtime"] == "intel"
    assert native.settings["ov_num_threads"] == "unset" and native.settings["ov_cpu_pinning"] is False
    p = _plan(tmp_path, "spr-2s-smt", backend="openvino")
    s = p.settings
    assert s["allocator"] == "default" and s["omp_runtime"] == "default" and s["kmp_affinity"] == "unset"
    assert s["compile"] is False and not p.preload
    assert s["ov_num_threads"] == s["omp_num_threads"] and s["ov_num_streams"] == 1
    assert s["ov_performance_hint"] == "latency"
    assert s["ov_cpu_pinning"] is (s["binding"] != "none") is True  # one node of two: pinned
    env = p.env(0)
    assert "LD_PRELOAD" not in env and "KMP_AFFINITY" not in env
    why = {d.key: d.reason for d in p.decisions}
    assert "free(): invalid pointer" in why["allocator"] and "one core" in why["kmp_affinity"]
    spread = _plan(tmp_path, "epyc-2core-avx2", backend="openvino")
    assert spread.settings["binding"] == "none" and spread.settings["ov_cpu_pinning"] is False
    many = _plan(tmp_path, "spr-2s-smt", PlanRequest(instances=2), backend="openvino", ov_num_streams=2)
    assert many.settings["ov_num_streams"] == 2


def test_an_openvino_process_under_exec_never_inherits_kmp_affinity(tmp_path):
    from sdagent.planning.launch import build_exec

    p = _plan(tmp_path, "spr-2s-smt", backend="openvino")
    argv, env = build_exec(p, 0, ["python", "serve.py"], {"KMP_AFFINITY": "granularity=fine,compact,1,0",
                                                          "LD_PRELOAD": JE, "PATH": "/usr/bin"})
    assert "KMP_AFFINITY" not in env and "LD_PRELOAD" not in env and argv[-2:] == ["python", "serve.py"]


@pytest.mark.parametrize("override, word", [({"allocator": "jemalloc"}, "free(): invalid pointer"),
                                            ({"omp_runtime": "intel"}, "oneTBB, not OpenMP"),
                                            ({"kmp_affinity": "granularity=fine,compact,1,0"}, "one core")])
def test_a_preload_or_kmp_affinity_asked_with_openvino_is_refused_in_one_line(tmp_path, override, word):
    with pytest.raises(BadInput, match=word.replace("(", r"\(").replace(")", r"\)")):
        _plan(tmp_path, "spr-2s-smt", backend="openvino", **override)


def test_openvino_in_bf16_without_native_bf16_is_refused_where_the_plugin_would_run_f32(tmp_path):
    """OpenVINO takes bf16 as a hint and runs f32 on an AVX2 CPU: the plan would say bf16 and verify fail it."""
    with pytest.raises(BadInput, match="OpenVINO's CPU plugin would run f32"):
        _plan(tmp_path, "epyc-2core-avx2", backend="openvino", precision="bf16")
    assert _plan(tmp_path, "spr-2s-smt", backend="openvino", precision="bf16").settings["precision"] == "bf16"


@pytest.mark.parametrize("override, word", [({"ov_weights": "int8"}, "ov_weights=int8"),
                                            ({"ov_cpu_pinning": True}, "ov_cpu_pinning=True"),
                                            ({"ov_num_streams": 2}, "ov_num_streams=2"),
                                            ({"ov_performance_hint": "throughput"}, "ov_performance_hint")])
def test_an_openvino_setting_asked_on_another_backend_is_refused_in_one_line(tmp_path, override, word):
    """Nothing reads an ov_* setting on the native backend: asked there, it would be believed in force."""
    with pytest.raises(BadInput, match=f"{word}.* but only backend openvino reads it"):
        _plan(tmp_path, "spr-2s-smt", backend="native", **override)
    assert _plan(tmp_path, "spr-2s-smt", backend="openvino", **override).settings[next(iter(override))] \
        == next(iter(override.values()))


@pytest.mark.parametrize("backend, word", [("openvino", "CPU plugin compiles"), ("ipex", "ipex.optimize")])
def test_compile_asked_where_the_backend_compiles_itself_is_refused(tmp_path, backend, word):
    """IPEX and OpenVINO compile the graph themselves: compile=true there is a setting nothing reads."""
    with pytest.raises(BadInput, match=f"compile=True but .*{word}"):
        _plan(tmp_path, "spr-2s-smt", ipex_usable=True, backend=backend, compile=True)
    assert _plan(tmp_path, "spr-2s-smt", ipex_usable=True, backend=backend).settings["compile"] is False


def test_the_compile_config_is_the_plans_knobs():
    from sdagent.pipeline.ov_backend import compile_config

    spec = RunSpec.from_settings({"backend": "openvino", "precision": "bf16", "channels_last": False,
                                  "compile": False, "weights_prepack": True, "ov_num_threads": 4,
                                  "ov_num_streams": 1, "ov_performance_hint": "latency", "ov_cpu_pinning": False},
                                 ())
    assert compile_config(spec, "/c") == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": "NO",
        "INFERENCE_NUM_THREADS": "4", "NUM_STREAMS": "1", "CACHE_DIR": "/c"}
    old = RunSpec.from_dict({"backend": "openvino", "precision": "fp32", "channels_last": False, "compile": False,
                             "weights_prepack": True})  # a record written before the OpenVINO knobs
    assert compile_config(old, None) == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                         "ENABLE_CPU_PINNING": "YES"}
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_tune_tries_no_preload_for_openvino_and_toggles_its_pinning():
    from sdagent.tuning import axes as X
    from sdagent.tuning.search import Candidate

    host = X.HostChoices(physical_cores=2, bf16=False, ipex=False, jemalloc=True, tcmalloc=True, iomp=True,
                         pin="numactl", openvino=True)
    settings = {"backend": "openvino", "precision": "fp32", "allocator": "default", "omp_runtime": "default",
                "ov_cpu_pinning": True}
    best = Candidate("openvino fp32", {"backend": "openvino"}, settings, "precision/backend")
    resolve = lambda o, layout=None: {**settings, **o}  # noqa: E731
    axes = {a.name: a for a in X.make_axes(host, resolve)}
    for name in ("allocator", "OpenMP runtime", "preloads"):
        assert axes[name].variants(best) == [], name
    (pin,) = axes["OpenVINO"].variants(best)
    assert pin.overrides == {"backend": "openvino", "ov_cpu_pinning": False}
    assert axes["OpenVINO"].variants(Candidate("n", {}, {"backend": "native"}, "plan")) == []
    won = Candidate("openvino int8", {"backend": "openvino", "ov_weights": "int8", "ov_cpu_pinning": True},
                    {**settings, "ov_weights": "int8"}, "OpenVINO weights")
    native = [c for c in axes["precision/backend"].variants(won) if c.overrides["backend"] == "native"]
    assert native and all(c.overrides["ov_weights"] == "full" and c.overrides["ov_cpu_pinning"] is False
                          for c in native)  # the planner refuses ov_* settings off backend openvino


# ---------------------------------------------------------------------------
# End to end on the tiny model, in the OpenVINO venv
# ---------------------------------------------------------------------------

WL = ["--steps", "2", "--height", "64", "--width", "64"]


def ov_sdagent(py: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([py, "-m", "sdagent", *args], env=clean_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


# ov_setup (conftest): a plan with backend openvino and the tiny model's export, built once a session.


@pytest.mark.slow
@pytest.mark.openvino
def test_model_compile_builds_the_openvino_export_once(ov_setup):
    s = ov_setup
    first = s["first"]
    assert first["backend"] == "openvino" and first["built"] == ["openvino"]
    digest = first["artifacts"]["openvino"]
    root = Path(s["art"]) / "openvino"
    assert [p.name for p in root.iterdir() if p.is_dir()] == [digest]  # built in a temp dir and renamed
    assert [p.name for p in root.iterdir() if not p.is_dir()] == [f".{digest}.lock"]  # and its build's lock file
    m = json.loads((root / digest / "manifest.json").read_text())
    assert m["key"]["precision"] == "fp32" and m["key"]["height"] == 64 and m["key"]["batch"] == 2
    assert m["key"]["versions"]["openvino"] and m["key"]["cpu"][0].startswith("vendor=")
    assert m["resolved_precision"] == "f32" and not ovexport.missing_files(root / digest / "ir")
    assert any((root / digest / "blobs").iterdir())  # the CPU plugin's compiled blobs
    again = ov_sdagent(s["py"], "--plan-file", s["plan"], "model", "compile", "--model", s["model"], *WL,
                       "--artifacts", s["art"], "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["built"] == [] and json.loads(again.stdout)["artifacts"] == first["artifacts"]


@pytest.mark.slow
@pytest.mark.openvino
def test_run_and_bench_with_backend_openvino(ov_setup, tmp_path):
    s = ov_setup
    out = tmp_path / "a.png"
    r = ov_sdagent(s["py"], "run", "--model", s["model"], "--prompt", "a ship", *WL, "--backend", "openvino",
                   "--precision", "fp32", "--artifacts", s["art"], "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["run"]["backend"] == "openvino" and d["artifacts"] == s["first"]["artifacts"]
    assert d["scheduler"] == "PNDMScheduler" and len(d["timings"]["unet_steps_s"]) >= 2  # GenAI's iterations
    assert d["openvino"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    b = ov_sdagent(s["py"], "bench", "--model", s["model"], *WL, "--backend", "openvino", "--precision", "fp32",
                   "--artifacts", s["art"], "--runs", "2", "--json")
    assert b.returncode == 0, b.stderr
    bd = json.loads(b.stdout)
    assert bd["observed"]["backend"] == "openvino" and bd["observed"]["precision"] == "fp32"
    assert bd["observed"]["artifact"] == s["first"]["artifacts"]["openvino"]
    assert bd["latency_s"]["n"] == 2 and bd["latency_s"]["median"] > 0 and bd["startup_s"] > 0
    bad = ov_sdagent(s["py"], "run", "--model", s["model"], "--prompt", "x", *WL, "--backend", "openvino",
                     "--scheduler", "dpm", "--artifacts", s["art"], "-o", str(tmp_path / "b.png"))
    assert bad.returncode == 2 and "not available in OpenVINO GenAI" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.openvino
def test_verify_under_exec_checks_the_loaded_export_and_reports_startup(ov_setup, tmp_path):
    s = ov_setup
    targets = tmp_path / "t.yml"
    targets.write_text(json.dumps([{"name": "ov", "match": {"model": "tiny", "backend": "openvino"},
                                    "p50_s": 300, "p90_s": 600, "min_runs": 5}]))
    r = ov_sdagent(s["py"], "--plan-file", s["plan"], "exec", "--", s["py"], "-m", "sdagent", "verify",
                   "--model", s["model"], *WL, "--warmup", "1", "--targets", str(targets),
                   "--artifacts", s["art"], "--json")
    d = json.loads(r.stdout)
    cs = {c["name"]: c for c in d["checks"]}
    assert r.returncode == 0, (r.stderr, [c for c in d["checks"] if c["status"] not in ("pass", "skip")])
    assert cs["backend"]["status"] == "pass" and cs["backend"]["value"] == "openvino"
    assert cs["artifact"]["status"] == "pass" and s["first"]["artifacts"]["openvino"] in cs["artifact"]["detail"]
    assert cs["startup"]["status"] == "pass" and "process start to the first image" in cs["startup"]["detail"]


@pytest.mark.slow
@pytest.mark.openvino
def test_a_stale_export_is_never_loaded(ov_setup, tmp_path):
    """A copy of the real export, once edited (another toolchain in its manifest; an IR file changed):
    the loader refuses both, naming why (build=False: the refusal, not the minutes of a rebuild)."""
    s = ov_setup
    digest = s["first"]["artifacts"]["openvino"]
    script = f"""
import json, shutil, sys
from pathlib import Path
from sdagent.errors import SdagentError
from sdagent.pipeline.ov_backend import ready_openvino
from sdagent.pipeline.workload import Workload
from sdagent.planning.runspec import RunSpec
src, store = Path({s['art']!r}) / "openvino" / {digest!r}, Path(sys.argv[1])
spec, w = RunSpec("openvino", "fp32", False, False, True), Workload(steps=2, height=64, width=64)
out = []
for case in ("versions", "ir"):
    dst = store / "openvino" / {digest!r}
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(src, dst)
    if case == "versions":
        m = json.loads((dst / "manifest.json").read_text())
        m["key"]["versions"]["openvino"] = "2020.1.0"
        (dst / "manifest.json").write_text(json.dumps(m))
    else:
        with open(dst / "ir" / "unet" / "openvino_model.xml", "a") as f:
            f.write("<!-- another model -->")
    try:
        ready_openvino({s['model']!r}, spec, w, str(store), build=False)
        out.append("loaded")
    except SdagentError as exc:
        out.append(str(exc))
print(json.dumps(out))
"""
    p = subprocess.run([s["py"], "-c", script, str(tmp_path / "store")], env=clean_env(), capture_output=True,
                       text=True, timeout=300, cwd=str(REPO))
    assert p.returncode == 0, p.stderr
    versions, ir = json.loads(p.stdout)
    assert "stale, not loaded" in versions and "openvino 2020.1.0 (here " in versions
    assert "stale, not loaded" in ir and "unet/openvino_model.xml resized" in ir


@pytest.mark.slow
@pytest.mark.openvino
def test_load_pipeline_returns_the_openvino_pipeline_under_exec(ov_setup):
    s = ov_setup
    code = f"""
import json, sdagent
from sdagent.errors import BadInput
pipe = sdagent.load_pipeline({s['model']!r}, height=64, width=64, artifacts={s['art']!r})
img = pipe("sailing ship in storm by Rembrandt", num_inference_steps=2).images[0]
try:
    pipe("x", num_inference_steps=2, height=128, width=128)
    refused = None
except BadInput as exc:
    refused = str(exc)
print(json.dumps({{"type": type(pipe).__name__, "genai": type(pipe.genai).__name__, "size": list(img.size),
                  "backend": pipe.sdagent["run"]["backend"], "source": pipe.sdagent["plan_source"],
                  "artifacts": pipe.sdagent["artifacts"], "refused": refused}}))
"""
    p = ov_sdagent(s["py"], "--plan-file", s["plan"], "exec", "--", s["py"], "-c", code)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert d["type"] == "OvPipeline" and d["genai"] == "Text2ImagePipeline" and d["size"] == [64, 64]
    assert d["backend"] == "openvino" and d["artifacts"] == s["first"]["artifacts"]
    assert "compiled for 64x64" in d["refused"]


def test_the_step_callback_counts_the_steps_asked_when_genai_iterates_more():
    """GenAI's PNDM makes steps + 1 iterations and calls back each (i of n): the callback gets the steps asked,
    so bench's bar (sized by steps: measuring.bench.unet_calls) ends at its end ("verify: 18/12" before)."""
    from types import SimpleNamespace

    import numpy as np

    from sdagent.measuring.bench import unet_calls
    from sdagent.pipeline.ov_backend import OvPipeline, OvPrepared
    from sdagent.pipeline.ov_artifacts import OvKey
    from sdagent.pipeline.workload import Workload

    class Genai:
        def generate(self, prompt, num_inference_steps, callback=None, **kw):
            n = num_inference_steps + 1
            for i in range(n):
                if callback:
                    callback(i, n, None)
            self.n = n
            return SimpleNamespace(data=np.zeros((1, 64, 64, 3), dtype=np.uint8))

        def get_performance_metrics(self):
            return SimpleNamespace(raw_metrics=SimpleNamespace(iteration_durations=[1000.0] * self.n),
                                   get_text_encoder_infer_duration=lambda: {},
                                   get_vae_decoder_infer_duration=lambda: 1.0)

    key = OvKey("m", 64, 64, 2, "fp32", {}, ())
    pipe = OvPipeline(Genai(), SimpleNamespace(TorchGenerator=lambda seed: seed, CppStdGenerator=lambda seed: seed),
                      Path("/nonexistent"), key, "f32", "default")
    prepared = OvPrepared(pipe, RunSpec("openvino", "fp32", False, False, True))
    w = Workload(steps=2, height=64, width=64)
    seen = []
    prepared.generate(w, step_callback=lambda i, n, s: seen.append((i, n)))
    assert seen == [(0, 2), (1, 2)] and unet_calls(pipe, w.steps) == 2
