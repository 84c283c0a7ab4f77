"""Throughput: the figures of N instances at once (pure), the splits tune tries, and end to end on the tiny
model: a 2-instance bench, a throughput verify, and the bad input of this mode."""

from __future__ import annotations

import json

import pytest
import yaml

from clirun import PY, clean_env, sdagent
from hosts import HOSTS, write_tree
from sdagent.host.topology import read_topology
from sdagent.pipeline.workload import Workload
from sdagent.workers.result import ImageSpan, Measurement, Window, WorkerResult
from sdagent.measuring.throughput import figures
from sdagent.planning.layout import throughput_layouts

WL = ["--steps", "2", "--height", "64", "--width", "64"]


def result(start: float, durations: list[float], deadline: float | None = None, ok: bool = True) -> WorkerResult:
    if not ok:
        return WorkerResult(False, "exit 1, no result: boom", 1.0)
    t, images = start, []
    for d in durations:
        images.append(ImageSpan(t, t + d, d))
        t += d
    m = Measurement("throughput", Workload(), tuple(durations), window=Window(start, deadline),
                    images=tuple(images))
    return WorkerResult(True, "ok", 1.0, m)


def test_host_rate_is_all_images_over_the_slowest_instance_and_bounds_add_up():
    f = figures([(0, "0", result(100.0, [1.0] * 6)), (1, "1", result(100.0, [2.0] * 6))])
    assert f.images_per_min == pytest.approx(60 * 12 / 12.0)  # 12 images, the slow instance took 12 s
    a, b = f.instances
    assert a.images_per_min == pytest.approx(60.0) and b.images_per_min == pytest.approx(30.0)
    assert f.rate_bounds == (pytest.approx(90.0), pytest.approx(90.0))  # constant image times: exact bounds
    assert b.straggler and not a.straggler  # 12 s against a median of 9 s
    assert f.latency_p50_s == pytest.approx(1.5)


def test_a_failed_instance_is_reported_not_averaged_away():
    f = figures([(0, "0", result(0.0, [1.0] * 5)), (1, "1", result(0.0, [], ok=False))])
    assert [i.index for i in f.failed] == [1] and "boom" in f.instances[1].reason
    assert f.images_per_min == pytest.approx(60.0)  # only what was really made
    assert f.to_dict()["failed"] == [1]


def test_a_window_counts_only_images_finished_inside_it():
    f = figures([(0, "0", result(0.0, [4.0, 4.0, 4.0], deadline=10.0))], window_s=10.0)
    assert f.instances[0].images == 2 and f.images_per_min == pytest.approx(12.0) and f.mode == "window"
    assert f.rate_bounds == (None, None)  # 2 images cannot bound a median


def test_throughput_layouts_split_each_node_evenly(tmp_path):
    spr = read_topology(write_tree(tmp_path / "spr", HOSTS["spr-2s-smt"]))
    lays = throughput_layouts(spr)
    plain = [(x["instances"], x["cores_per_instance"]) for x in lays if not x["use_smt"]]
    assert plain[:3] == [(2, 56), (4, 28), (8, 14)] and (112, 1) in plain
    assert any(x["use_smt"] for x in lays)  # SMT on as its own variants where the CPU has it
    vm = read_topology(write_tree(tmp_path / "vm", HOSTS["epyc-2core-zen5"]))
    assert [(x["instances"], x["cores_per_instance"]) for x in throughput_layouts(vm)] == [(1, 2), (2, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_sdxl", "tiny_lcm"])
def test_two_instances_at_once_end_to_end(request, fixture, tmp_path):
    """Every family's throughput: SDXL's two text encoders and added conditioning, LCM's unguided batch."""
    model = request.getfixturevalue(fixture)
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "lock"))
    r = sdagent("bench", "--model", str(model), *WL, "--instances", "2", "--images", "5", "--json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["format"] == "sdagent-throughput/1" and d["instances"] == 2 and not d["failed"]
    per = d["per_instance"]
    assert [p["images"] for p in per] == [5, 5] and per[0]["cpus"] != per[1]["cpus"]
    assert d["images_per_min"] > 0 and None not in d["images_per_min_bounds"]
    assert d["plan"]["settings"]["omp_num_threads"] == 1 and len(d["plan"]["instances"]) == 2


@pytest.mark.slow
def test_a_throughput_target_is_verified_with_the_plans_layout(tiny_model, tmp_path):
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "lock"))
    plan = tmp_path / "plan.json"
    assert sdagent("plan", "--instances", "2", "-o", str(plan), env=env).returncode == 0
    targets = tmp_path / "t.yml"
    targets.write_text(yaml.safe_dump([{"name": "tp", "match": {"model": "tiny"}, "p50_s": 60,
                                        "min_images_per_min": 1, "min_runs": 5}]))
    prom = tmp_path / "v.prom"
    r = sdagent("--plan-file", str(plan), "exec", "--instance", "0", "--", PY, "-m", "sdagent", "verify",
                "--model", str(tiny_model), "--targets", str(targets), *WL, "--json", "--prometheus", str(prom),
                env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    check = {c["name"]: c for c in d["checks"]}["images_per_min"]
    assert check["status"] == "pass" and d["throughput"]["instances"] == 2
    assert "sdagent_images_per_minute" in prom.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["bench", "--model", "M", *WL, "--instances", "3"], "invalid --instances 3: this host allows at most"),
    (["bench", "--model", "M", *WL, "--instances", "1", "--window", "0.001"], "shorter than one image"),
    (["tune", "--model", "M", "--objective", "fastest"], "'fastest' is not one of 'latency', 'throughput'"),
])
def test_throughput_bad_input_is_one_line_exit_2(tiny_model, tmp_path, args, needle):
    import os

    if "--instances" in args and "3" in args and os.cpu_count() and os.cpu_count() > 2:
        pytest.skip("this host has more than 2 CPUs: 3 instances fit")
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "lock"))
    r = sdagent(*[str(tiny_model) if a == "M" else a for a in args], env=env)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # progress lines may come before the one error line
    assert needle in last and last.startswith("sdagent: error: ") and "Traceback" not in r.stderr
