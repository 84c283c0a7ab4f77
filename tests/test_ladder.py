"""sdagent ladder: schedule, paired ratios and spread, the run loop with a fake runner; the --quick smoke test."""

from __future__ import annotations

import json
import os

import pytest

from dataclasses import replace

from clirun import sdagent
from sdagent.errors import BadInput
from sdagent.measuring import ladder as L
from sdagent.planning.runspec import STOCK_RUN
from sdagent.measuring.ladder_report import markdown
from sdagent.measuring.runner import WorkerJob
from sdagent.workers.parent import missing_preloads
from sdagent.workers.result import Measurement, ProcessRecord, WorkerResult
from sdagent.planning.launch import Launch
from sdagent.pipeline.workload import Workload



def test_schedule_interleaves_and_rotates():
    s = L.schedule(["a", "b", "c", "d"], 3)
    assert s == [["a", "b", "c", "d"], ["b", "c", "d", "a"], ["c", "d", "a", "b"]]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in s)  # every rung once per round
    assert L.schedule([], 3) == []


def sample(rnd, lat, step=None, evals=3):
    return L.Sample(rnd, lat, step, evals, lat + 5)


def test_paired_speedups_are_per_round_and_skip_missing_rounds():
    base = [sample(1, 10.0), sample(2, 12.0), sample(3, 11.0)]
    other = [sample(1, 5.0), sample(3, 4.0)]
    assert L.paired_speedups(base, other) == [2.0, 2.75]


def test_spread_median_min_max():
    s = L.spread([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert L.spread([]) is None


def rung(name, precision="fp32", unavailable=None):
    job = WorkerJob("/m", Workload(steps=2, height=64, width=64), replace(STOCK_RUN, precision=precision))
    return L.Rung(name, f"{name} rung", Launch(name, ("python",)), job, unavailable=unavailable)


def result(latency, steps=(0.1, 0.1, 0.1), ok=True, reason="ok"):
    if not ok:
        return WorkerResult(False, reason, 1.0)
    m = Measurement("images", Workload(steps=2, height=64, width=64), (latency,),
                    ProcessRecord(("/x/libgomp.so.1",), 2, (0, 1)), (1.0, 1.0, 1.0),
                    runs=({"unet_steps_s": list(steps)},), unet_evals=len(steps))
    return WorkerResult(True, "ok", latency + 3, m)


def test_run_ladder_interleaves_and_a_failing_rung_does_not_stop_the_others():
    calls = []
    lat = {"vanilla": 10.0, "run_cpu": 8.0, "tuned": 5.0}

    def runner(r, i):
        calls.append((r.name, i))
        if r.name == "broken":
            return result(0, ok=False, reason="exit 1: boom")
        return result(lat[r.name] + 0.1 * i)

    events = []
    rungs = [rung("vanilla"), rung("run_cpu"), rung("broken"), rung("tuned"), rung("ipex", unavailable="IPEX absent")]
    out = L.run_ladder(rungs, 3, runner, on_event=lambda kind, data: events.append((kind, data)))
    assert calls[:4] == [("vanilla", 1), ("run_cpu", 1), ("broken", 1), ("tuned", 1)]
    assert calls[4:7] == [("run_cpu", 2), ("tuned", 2), ("vanilla", 2)]  # rotated; broken dropped
    assert ("ipex", 1) not in calls
    assert out["broken"].failed == "exit 1: boom" and out["broken"].failed_round == 1
    assert out["ipex"].failed == "IPEX absent"
    assert [s.round for s in out["tuned"].samples] == [1, 2, 3]
    done = [d for k, d in events if k == "done"]
    assert len(done) == len(calls)
    first = done[0]
    assert first["rung"] == "vanilla" and first["ok"] and first["latency_s"] == 10.1 and first["step_s"] == 0.1
    assert first["rounds"] == 3 and first["wall_s"] == 13.1
    broken = next(d for d in done if d["rung"] == "broken")
    assert not broken["ok"] and broken["reason"] == "exit 1: boom" and "latency_s" not in broken


def test_warm_cache_rung_is_warmed_once_before_round_one():
    order = []
    r = L.Rung("compiled", "c", Launch("c", ("python",)), WorkerJob("/m", Workload(), STOCK_RUN), warm_cache=True)

    def warm(x):
        order.append(("warm", x.name))
        return result(1.0)

    def runner(x, i):
        order.append((x.name, i))
        return result(1.0)

    L.run_ladder([rung("vanilla"), r], 2, runner, warm=warm)
    assert order[0] == ("warm", "compiled") and order.count(("warm", "compiled")) == 1


def test_summarize_ratios_flops_and_peak_fraction():
    rungs = [rung("vanilla"), rung("run_cpu"), rung("tuned+backend", precision="bf16")]
    out = {r.name: L.RungOutcome(r) for r in rungs}
    out["vanilla"].samples = [sample(1, 10.0, 2.0), sample(2, 12.0, 2.2), sample(3, 11.0, 2.1)]
    out["run_cpu"].samples = [sample(1, 8.0, 1.6), sample(2, 8.0, 1.6), sample(3, 8.0, 1.6)]
    out["tuned+backend"].samples = [sample(1, 5.0, 1.0), sample(2, 4.0, 0.8), sample(3, 5.5, 1.1)]
    from sdagent.measuring.flops import ModelFlops

    flops = ModelFlops(height=64, width=64, unet_batch=2, unet_step=int(100e9), vae_decode=int(50e9),
                       text_encoder=int(5e9))
    rows = {r.name: r for r in L.summarize(out, flops, {"fp32": 200e9, "bf16": 1000e9})}
    v = rows["tuned+backend"].vs_vanilla
    assert (v.median, v.min, v.max) == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(3.0))
    assert rows["tuned+backend"].vs_run_cpu.median == pytest.approx(1.6)
    assert rows["vanilla"].vs_vanilla is None and rows["run_cpu"].vs_run_cpu is None
    # image FLOPs: 3 UNet evals + decode + 2 prompt encodings = 360 G over the median 5.0 s
    assert rows["tuned+backend"].image_flops == pytest.approx(360e9 / 5.0)
    assert rows["tuned+backend"].step_flops == pytest.approx(100e9 / 1.0)
    assert rows["tuned+backend"].step_peak_fraction == pytest.approx(0.1)  # against the bf16 peak
    assert rows["vanilla"].step_peak_fraction == pytest.approx(100e9 / 2.1 / 200e9)


def test_markdown_has_a_row_per_rung_and_names_failures():
    rungs = [rung("vanilla"), rung("run_cpu", unavailable="run_cpu missing")]
    out = {r.name: L.RungOutcome(r) for r in rungs}
    out["vanilla"].samples = [sample(1, 10.0, 2.0)]
    out["run_cpu"].failed = "run_cpu missing"
    rows = L.summarize(out, None, {})
    report = {"model": "/m", "model_preset": "tiny", "rounds": 1, "repeats": 1, "warmup": 1, "warmup_steps": 1,
              "workload": {"height": 64, "width": 64, "steps": 2, "guidance": 7.5},
              "machine": {"cpu_model": "cpu", "load_before": [1, 1, 1], "load_after": [1, 1, 1], "versions": {}},
              "command": "sdagent ladder --quick"}
    text = markdown(report, rows)
    assert "| vanilla | 10.00 |" in text and "| run_cpu | failed: run_cpu missing |" in text
    assert "sdagent ladder --quick" in text


def test_openvino_ratio_and_the_shipped_plan_line():
    rungs = [rung("openvino"), rung("tuned+backend+compile", precision="bf16")]
    out = {r.name: L.RungOutcome(r) for r in rungs}
    out["openvino"].samples = [sample(1, 6.0, 1.0), sample(2, 9.0, 1.0)]
    out["tuned+backend+compile"].samples = [sample(1, 4.0, 1.0), sample(2, 10.0, 1.0)]
    rows = {r.name: r for r in L.summarize(out, None, {})}
    v = rows["tuned+backend+compile"].vs_openvino  # per round: 6/4 and 9/10
    assert (v.min, v.max) == (pytest.approx(0.9), pytest.approx(1.5))
    assert rows["openvino"].vs_openvino is None
    report = {"model": "/m", "model_preset": "tiny", "rounds": 2, "repeats": 1, "warmup": 1, "warmup_steps": 1,
              "workload": {"height": 64, "width": 64, "steps": 2, "guidance": 7.5},
              "machine": {"cpu_model": "cpu", "load_before": [1, 1, 1], "load_after": [1, 1, 1], "versions": {}},
              "command": "sdagent ladder", "shipped_rung": "tuned+backend+compile"}
    text = markdown(report, list(rows.values()))
    assert "× vs OpenVINO" in text
    assert "The plan as shipped (no tune) is the `tuned+backend+compile` rung: 7.00 s per image, 0.93x the best " \
           "other rung's (`openvino`, 7.50 s" in text


def test_missing_preloads_compares_real_paths():
    assert missing_preloads(("/usr/lib/libjemalloc.so.2",), ["/usr/lib/libjemalloc.so.2"]) == []
    assert missing_preloads(("/usr/lib/libjemalloc.so.2",), ["/x/libgomp.so.1"]) == ["/usr/lib/libjemalloc.so.2"]


@pytest.mark.slow
def test_ladder_quick_smoke(tiny_model, tmp_path):
    # --step-size given explicitly survives --quick (which otherwise turns the step figure off)
    out = tmp_path / "new" / "ladder"  # a folder that does not exist yet is created (`ladder --help`'s example)
    r = sdagent("ladder", "--model", str(tiny_model), "--quick", "--step-size", "64", "--step-calls", "1",
                "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    tmp_path = out
    d = json.loads((tmp_path / "ladder.json").read_text())
    by = {x["rung"]: x for x in d["rungs"]}
    assert set(by) >= {"vanilla", "run_cpu", "tuned", "tuned+backend", "tuned+backend+dpm"}
    from sdagent.measuring.ladder_run import SHIPPED, rung_names

    # --rungs knows every rung the ladder builds, no other (the peer's rung is not built under --quick)
    assert set(by) | {"openvino"} == set(rung_names()) - {SHIPPED}
    assert by["vanilla"]["latency_s"]["median"] > 0 and by["tuned"]["speedup_vs_vanilla"]["median"] > 0
    assert by["tuned+backend+compile"]["failed"].startswith("skipped")
    # the backend rungs: native eager measured as the plan in force runs it; compiled and openvino off in --quick
    assert by["backend: native eager"]["latency_s"]["median"] > 0 and by["backend: native eager"]["failed"] is None
    assert by["backend: native compiled"]["failed"].startswith("skipped: --quick")
    assert all(by[f"backend: openvino {x}"]["failed"].startswith("skipped") for x in ("fp32", "bf16", "int8"))
    # each whole-image rung's image beside stock's: identical for stock's own compute path, close for the rest
    fid = d["fidelity"]
    assert set(fid) >= {"run_cpu", "tuned", "backend: native eager"} and "vanilla" not in fid
    assert fid["tuned"]["psnr_db"] == "inf" and by["tuned"]["fidelity_vs_vanilla"] == fid["tuned"]
    assert (tmp_path / "images" / "vanilla.png").is_file() and (tmp_path / "images" / "backend_native_eager.png").is_file()
    assert "| image vs vanilla |" in (tmp_path / "ladder.md").read_text()
    assert d["flops"]["unet_step"] > 0 and d["gemm_peak"]["fp32"]["peak_flops"] > 0
    assert d["machine"]["load_before"] and d["machine"]["versions"]["torch"]
    assert "| vanilla |" in (tmp_path / "ladder.md").read_text()
    step = {x["rung"]: x for x in d["step_figure"]["rows"]}
    assert d["step_figure"]["height"] == 64 and d["step_figure"]["unet_step_flops"] > 0
    assert set(step) == {"vanilla", "run_cpu", "tuned", "tuned+backend"} and step["vanilla"]["step_s"]["n"] == 1
    assert "Per UNet step at 64x64" in (tmp_path / "ladder.md").read_text()
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # stderr is a pipe here, where Click draws no bar: one line per measured process instead
    assert "ladder: vanilla round 1/1: " in r.stderr and " s wall)" in r.stderr


def test_the_backend_rungs_each_backend_as_the_host_supports_them():
    from sdagent.measuring.ladder_backends import backend_rung_specs

    def why(**kw):
        args = dict(native_bf16=True, with_compile=True, compile_why="skipped: --no-compile", with_openvino=True,
                    openvino_python="/ov/python")
        return {s.name[len("backend: "):]: s.unavailable for s in backend_rung_specs(**{**args, **kw})}

    assert why() == dict.fromkeys(["native eager", "native compiled", "native int8", "native int8-mixed-bf16",
                                   "openvino fp32", "openvino bf16", "openvino int8", "openvino int8-hybrid"])
    assert why(int8=False)["native int8"].startswith("skipped: no torchao")
    assert why(with_compile=False)["native int8"] == "skipped: --no-compile"
    assert why(native_bf16=False)["openvino bf16"].startswith("skipped: no native bf16")
    assert why(native_bf16=False)["native int8-mixed-bf16"].startswith("skipped: no native bf16")
    assert why(native_bf16=False)["native int8"] is None
    assert why(native_bf16=False)["openvino int8"] is None
    assert why(with_compile=False)["native compiled"] == "skipped: --no-compile"
    off = why(with_openvino=False)
    assert off["native eager"] is None and all(off[k].startswith("skipped") for k in off if "openvino" in k)
    assert why(openvino_python=None)["openvino fp32"].startswith("skipped: no Python with OpenVINO GenAI")


def test_backend_rungs_run_the_plan_in_force_per_backend_and_show_int8_fidelity(tmp_path):
    """Planned through plan_with (the plan in force + the backend's settings), launched under that plan; the
    openvino rungs in the OpenVINO Python; the int8 rung's description carries tune's gate figures; a plan the
    planner refuses is a skipped rung with its reason."""
    from hosts import HOSTS, write_tree
    from sdagent.errors import BadInput
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.measuring.ladder_backends import backend_rungs
    from sdagent.measuring.ladder_run import LadderRequest
    from sdagent.pipeline.modeldir import ModelDir
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.plan import make_plan

    topo = read_topology(write_tree(tmp_path, HOSTS["epyc-2core-zen5"]))  # native bf16
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None},
                      ipex=IpexStatus(False, None, None, "absent"))
    gate = {"passed": True, "reason": "passes the fidelity gate: PSNR 39.9 dB / SSIM 0.999 vs the fp32 reference"}
    tuning = {"candidates": [{"name": "OpenVINO int8 weights", "overrides": {"backend": "openvino",
                                                                             "ov_weights": "int8"}}],
              "fidelity": {"OpenVINO int8 weights": gate}}
    plan = make_plan(topo, facts, tuning=tuning)

    def plan_with(overrides):
        if overrides.get("compile"):
            raise BadInput("compile=True but no C++ compiler (g++) to build compiled packages")
        return make_plan(topo, facts, overrides=overrides)

    req = LadderRequest(ModelDir(tmp_path, "StableDiffusionPipeline", {}, "tiny"), Workload(steps=1, height=64,
                                                                                           width=64))
    rungs = {r.name: r for r in backend_rungs(plan, plan_with, "/m", req, {"PATH": "/bin"}, "/ov/bin/python")}
    assert rungs["backend: native compiled"].unavailable == (
        "skipped: compile=True but no C++ compiler (g++) to build compiled packages")
    eager = rungs["backend: native eager"]
    assert eager.job.run.backend == "native" and not eager.job.run.compile and eager.launch.argv[0] != "/ov/bin/python"
    for x in ("fp32", "bf16", "int8"):
        r = rungs[f"backend: openvino {x}"]
        assert r.unavailable is None and r.job.run.backend == "openvino" and r.warm_cache
        assert "/ov/bin/python" in r.launch.argv and "KMP_AFFINITY" not in r.launch.env
    assert rungs["backend: openvino bf16"].job.run.precision == "bf16"
    assert rungs["backend: openvino int8"].job.run.ov_weights == "int8"
    int8 = rungs["backend: openvino int8"].description
    assert "fidelity (tune's gate): passes the fidelity gate: PSNR 39.9 dB" in int8
    untuned = backend_rungs(make_plan(topo, facts), plan_with, "/m", req, {}, "/ov/bin/python")
    assert "its image against stock's: the last column" in next(
        r for r in untuned if r.name.endswith("openvino int8")).description
    hybrid = rungs["backend: openvino int8-hybrid"].job.run
    assert hybrid.ov_weights == "int8-hybrid" and hybrid.precision == "fp32"
    assert rungs["backend: native int8"].unavailable.startswith("skipped: compile=True")
    assert rungs["backend: native int8-mixed-bf16"].unavailable.startswith("skipped: compile=True")


def test_ladder_bad_input_is_one_line(tmp_path):
    # the model is checked first: a bad one leaves the (missing) --out-dir uncreated
    r = sdagent("ladder", "--model", str(tmp_path), "--out-dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a diffusers pipeline directory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "missing").exists()
    r = sdagent("ladder", "--model", str(tmp_path / "nope"), "--out-dir", str(tmp_path))
    assert r.returncode == 2 and "model directory not found" in r.stderr


def test_step_figure_uses_every_call_and_the_rung_precision_peak():
    rungs = [rung("vanilla"), rung("tuned+backend", precision="bf16")]
    out = {r.name: L.RungOutcome(r) for r in rungs}
    out["vanilla"].samples = [L.Sample(1, 4.0, 4.0, 1, 9.0, steps=(4.0, 3.0, 5.0))]
    out["tuned+backend"].samples = [L.Sample(1, 1.0, 1.0, 1, 5.0, steps=(1.0, 2.0, 1.0))]
    rows = {r["rung"]: r for r in L.step_figure(out, 400e9, {"fp32": 200e9, "bf16": 1000e9})}
    st = rows["vanilla"]["step_s"]
    assert (st["median"], st["min"], st["max"], st["n"]) == (4.0, 3.0, 5.0, 3)
    assert rows["tuned+backend"]["speedup_vs_vanilla"] == pytest.approx(4.0)
    assert rows["tuned+backend"]["fraction_of_gemm_peak"] == pytest.approx(0.4)
    assert rows["vanilla"]["fraction_of_gemm_peak"] == pytest.approx(0.5)


def test_quick_profile_keeps_what_the_user_gave():
    from sdagent.cli.ladder_cmd import QUICK, apply_quick
    from sdagent.cli.options import MeasureArgs, ModelArgs

    m = MeasureArgs(ModelArgs("/m", {"prompt": "p", "steps": 4, "height": 256, "width": 256, "guidance": 7.5}),
                    1, 2, 60)
    q, rounds, step = apply_quick(m, 3, 512, set())
    assert (q.wl["steps"], q.wl["height"], rounds, q.warmup_steps, step) == (QUICK["steps"], 64, 1, 1, 0)
    q, rounds, step = apply_quick(m, 3, 128, {"steps", "rounds", "step_size"})
    assert (q.wl["steps"], q.wl["height"], rounds, step) == (4, 64, 3, 128)


def test_launches_start_from_the_stock_environment():
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.planning.launch import exec_launch, plan_launch, run_cpu_launch, stock_launch
    from sdagent.planning.plan import make_plan
    from sdagent.host.topology import current_topology

    from sdagent.measuring.runner import worker_cmd, worker_file

    environ = {"PATH": "/bin", "LD_PRELOAD": "/stale.so", "OMP_NUM_THREADS": "64", "KMP_BLOCKTIME": "9"}
    cmd = worker_cmd()
    st = stock_launch(cmd, environ)
    assert st.argv[1:] == ("-m", "sdagent.measuring.worker") and "LD_PRELOAD" not in st.env
    assert "OMP_NUM_THREADS" not in st.env and "KMP_BLOCKTIME" not in st.env
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None},
                      ipex=IpexStatus(False, None, None, "absent"))
    plan = make_plan(current_topology(), facts)
    pl = plan_launch(plan, cmd, environ)
    assert pl.env["OMP_NUM_THREADS"] == str(plan.settings["omp_num_threads"]) and "KMP_BLOCKTIME" not in pl.env
    assert "LD_PRELOAD" not in pl.env  # nothing to preload: the stale one must not leak in
    ex = exec_launch(plan, "/p.json", cmd, environ)
    assert ex.argv[1:6] == ("-m", "sdagent", "--plan-file", "/p.json", "exec") and ex.argv[-2:] == (
        "-m", "sdagent.measuring.worker")
    rc = run_cpu_launch(worker_file(), environ)
    assert rc.argv[1:4] == ("-m", "torch.backends.xeon.run_cpu", "--enable-jemalloc")
    assert rc.argv[-1].endswith("measuring/worker.py")


def test_rungs_selects_by_name_or_shipped_and_reports_the_rest_as_skipped():
    from sdagent.measuring import ladder as L
    from sdagent.measuring.ladder_run import parse_rungs, select_rungs

    rungs = [L.Rung(n, n, None, None) for n in ("vanilla", "tuned", "tuned+backend", "openvino")]
    rungs.append(L.Rung("backend: openvino bf16", "", None, None, unavailable="skipped: no native bf16"))
    only = parse_rungs(" vanilla, shipped ,openvino")
    assert only == ("vanilla", "shipped", "openvino")
    got = {r.name: r.unavailable for r in select_rungs(rungs, only, shipped="tuned+backend")}
    assert got == {"vanilla": None, "tuned": "skipped: not in --rungs", "tuned+backend": None, "openvino": None,
                   "backend: openvino bf16": "skipped: no native bf16"}  # an unavailable rung keeps its reason
    assert select_rungs(rungs, (), shipped="tuned") == rungs  # no --rungs: every rung
    for bad, needle in [("vanilla,nope", "invalid --rungs name 'nope': choose from vanilla, run_cpu"),
                        (" , ", "invalid --rungs ' , ': name at least one of vanilla")]:
        with pytest.raises(BadInput, match=needle):
            parse_rungs(bad)


def test_rungs_bad_name_is_one_line_exit_2_before_any_work(tiny_model, tmp_path):
    r = sdagent("ladder", "--model", str(tiny_model), "--quick", "--rungs", "vanilla,fastest",
                "--out-dir", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("sdagent: error: invalid --rungs name 'fastest'")
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ladder_with_rungs_starts_only_the_named_processes(tiny_model, tmp_path):
    r = sdagent("ladder", "--model", str(tiny_model), "--quick", "--rungs", "shipped", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "ladder.json").read_text())
    by = {x["rung"]: x for x in d["rungs"]}
    assert d["rungs_selected"] == ["shipped"]
    measured = {n for n, x in by.items() if x["failed"] is None}
    assert measured == {d["shipped_rung"]} and set(d["samples"]) >= measured
    assert by["vanilla"]["failed"] == "skipped: not in --rungs" and not d["samples"].get("vanilla")
    assert r.stderr.count(" round 1/1: ") == 1  # one process measured, one line


def test_ladder_images_go_to_whole_image_sdagent_workers_only_and_read_as_psnr_ssim(tmp_path):
    """with_images tells each whole-image sdagent worker where to write its image (not a UNet-only job, a rung
    that cannot run, or the peer's job); rung_fidelity compares each image that was written with vanilla's."""
    import numpy as np
    from PIL import Image

    from sdagent.measuring import ladder as L
    from sdagent.measuring.ladder_fidelity import fidelity_cell, image_name, rung_fidelity, with_images
    from sdagent.measuring.runner import WorkerJob
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.runspec import STOCK_RUN

    job = WorkerJob("/m", Workload(steps=1, height=16, width=16), STOCK_RUN)
    rungs = [L.Rung(L.VANILLA, "", None, job), L.Rung("backend: native int8", "", None, job),
             L.Rung("step", "", None, replace(job, unet_only=True)), L.Rung("off", "", None, job, unavailable="x"),
             L.Rung(L.OPENVINO, "", None, None)]
    assert image_name("backend: native int8") == "backend_native_int8.png"
    out = with_images(rungs, str(tmp_path))
    assert [r.job.image_out if isinstance(r.job, WorkerJob) else None for r in out] == [
        str(tmp_path / "vanilla.png"), str(tmp_path / "backend_native_int8.png"), None, None, None]
    assert with_images(rungs, None) == rungs
    base = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(base).save(tmp_path / "vanilla.png")
    Image.fromarray(np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)).save(tmp_path / "backend_native_int8.png")
    ran = lambda: L.RungOutcome(out[0], samples=[L.Sample(1, 1.0, None, None, 1.0)])  # noqa: E731
    fid = rung_fidelity(out, {r.name: ran() for r in out})
    assert set(fid) == {"backend: native int8"} and 30 < fid["backend: native int8"]["psnr_db"] < 45
    assert fidelity_cell(fid["backend: native int8"]).startswith("PSNR ") and fidelity_cell(None) == "–"
    assert fidelity_cell({"psnr_db": "inf", "ssim": 1.0}) == "identical, SSIM 1.000"
    assert rung_fidelity(out, {}) == {}  # vanilla did not run: nothing to compare with
