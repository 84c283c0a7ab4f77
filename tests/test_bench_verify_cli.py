"""`sdagent bench` and `sdagent verify` end to end on the tiny model, through the CLI in subprocesses.

Subprocesses because the checks are about the process itself (what is mapped,
its threads): only a fresh `python -m sdagent` started with or without
`sdagent exec` shows whether the tuning is in effect.

The targets here have a huge max_spread on purpose: these tests prove the
machinery (exit codes, reports), not this busy 2-core machine's noise; the
noise rule itself is unit-tested in test_verify_unit.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from clirun import PY, sdagent
from sdagent.measuring.stats import median_bounds

pytestmark = pytest.mark.slow

WL = ["--steps", "2", "--height", "64", "--width", "64", "--warmup", "1"]


def under_exec(*args: str, group: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`sdagent [group] exec -- python -m sdagent ARGS`: the command runs under the plan."""
    return sdagent(*group, "exec", "--", PY, "-m", "sdagent", *args)


def write_targets(path: Path, entries: list[dict]) -> str:
    path.write_text(yaml.safe_dump(entries))
    return str(path)


@pytest.fixture(scope="module")
def plan():
    from sdagent.cli.context import AgentContext

    return AgentContext().plan()


@pytest.fixture
def smoke(tmp_path) -> str:
    return write_targets(tmp_path / "smoke.yml", [{
        "name": "smoke", "match": {"model": "tiny"}, "p50_s": 120, "p90_s": 240, "min_runs": 5,
        "bf16_max_diff": 0.05}])


def checks_of(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_bench_json_with_machine_state(tiny_model, tmp_path, plan):
    out = tmp_path / "bench.json"
    r = under_exec("bench", "--model", str(tiny_model), *WL, "--runs", "3", "--json", "-o", str(out))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert json.loads(out.read_text()) == d
    assert "bench" in r.stderr  # the progress bar's label, on stderr
    lat = d["latency_s"]
    assert len(d["runs"]) == lat["n"] == 3 and d["warmup"] == 1 and len(d["warmup_s"]) == 1
    assert lat["min"] <= lat["median"] <= lat["max"] and lat["p90"] is None and lat["p99"] is None
    assert lat["median"] == pytest.approx(sorted(x["latency_s"] for x in d["runs"])[1], abs=1e-5)
    assert d["images_per_s"] == pytest.approx(1 / lat["median"], rel=1e-3)
    assert d["unet_step_s"]["n"] == sum(len(x["step_s"]) for x in d["runs"]) >= 6
    assert d["workload"]["steps"] == 2 and d["model"] == "tiny"
    m = d["machine"]
    assert m["plan"]["settings"]["backend"] == plan.backend
    assert m["torch_threads"] == plan.omp_num_threads
    assert m["affinity"] == sorted(os.sched_getaffinity(0)) and len(m["load_average"]) == 3
    assert m["versions"]["torch"] and m["versions"]["diffusers"]
    for lib in plan.preload:  # the libraries actually mapped, not the ones asked for
        assert os.path.realpath(lib) in {os.path.realpath(x) for x in m["libraries"]}
    assert d["observed"]["precision"] == plan.precision
    assert d["runs_with"]["plan_in_effect"]  # under exec: the maps show the plan's preloads


def test_verify_help_documents_exit_codes_and_their_order():
    from click.testing import CliRunner

    from sdagent.cli import cli

    from sdagent.errors import EXIT_CODES
    from sdagent.verifying.checks import PRIORITY

    r = CliRunner().invoke(cli, ["verify", "--help"])
    assert r.exit_code == 0
    assert " > ".join(str(int(c)) for c in PRIORITY) + " > 0" in r.output
    flat = " ".join(r.output.split())
    for e in EXIT_CODES:  # the table is the source: every code and its meaning, as written there
        assert f"{e.code} {e.meaning}" in flat, e


def test_bench_table_and_bad_runs(tiny_model):
    r = sdagent("bench", "--model", str(tiny_model), *WL, "--runs", "2", "--backend", "native",
                "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    assert "latency  median" in r.stdout and "libraries mapped:" in r.stdout and "load average:" in r.stdout
    # stderr is a pipe here: progress as lines with counts (2 runs x 2 steps + 1 warmup x 2), no bare label
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("bench")]
    assert progress and all(ln.startswith("bench: ") and ln.endswith(" UNet steps") for ln in progress), r.stderr
    assert progress[-1].split()[1].split("/")[0] == progress[-1].split()[1].split("/")[1], progress
    # outside exec the header says what the process runs with (the maps), not the plan's preloads
    runs_with = next(ln for ln in r.stdout.splitlines() if ln.startswith("runs with: "))
    from sdagent.cli.context import AgentContext

    p = AgentContext().plan()
    assert ("NOT in effect" in runs_with and "sdagent exec --" in runs_with) == bool(p.preload), runs_with
    if p.allocator in ("jemalloc", "tcmalloc"):
        assert "glibc malloc" in runs_with and f"lib{p.allocator}" in runs_with, runs_with
    bad = sdagent("bench", "--model", str(tiny_model), "--runs", "0")
    assert bad.returncode == 2 and "invalid --runs 0" in bad.stderr and "Traceback" not in bad.stderr


def test_verify_passes_under_exec(tiny_model, tmp_path, smoke, plan):
    rep, prom = tmp_path / "r.json", tmp_path / "v.prom"
    r = under_exec("verify", "--model", str(tiny_model), "--targets", smoke, *WL, "--json",
                   "--report", str(rep), "--prometheus", str(prom))
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert json.loads(rep.read_text())["checks"] == d["checks"]
    assert d["exit_code"] == 0 and d["verdict"] == "pass" and d["target"]["name"] == "smoke"
    cs = checks_of(d)
    for name in ("plan_honoured", "allocator", "openmp", "threads", "affinity", "backend", "precision", "target",
                 "latency_p50", "latency_p90", "runs", "image_finite", "image_not_blank"):
        assert cs[name]["status"] == "pass", cs[name]
    assert cs["bf16_vs_fp32"]["status"] == ("pass" if plan.precision == "bf16" else "skip")
    assert cs["stock_measured"]["status"] == "skip" and cs["stock_tune"]["status"] == "skip"
    assert len(d["bench"]["runs"]) == 5  # the target's min_runs
    assert d["host_key"]["model"] == "tiny" and d["plan"]["settings"]["allocator"] == plan.allocator
    text = prom.read_text()
    assert 'sdagent_verify_exit_code{sdagent_instance="0"} 0' in text
    assert 'sdagent_check_ok{sdagent_instance="0",check="allocator",category="tuning"} 1' in text


def test_verify_without_the_tuning_env_exits_3(tiny_model, tmp_path, smoke, plan):
    if not plan.preload:
        pytest.skip("this host's plan preloads nothing, so a stock process already matches it")
    rep = tmp_path / "r.json"
    r = sdagent("verify", "--model", str(tiny_model), "--targets", smoke, *WL, "--report", str(rep))
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout.startswith("sdagent verify: FAIL (exit 3: tuning not in effect)")
    cs = checks_of(json.loads(rep.read_text()))
    assert cs["allocator" if plan.allocator != "default" else "openmp"]["status"] == "fail"
    assert cs["latency_p50"]["status"] == "skip"  # no benchmark without the tuning


def test_impossible_target_exits_1(tiny_model, tmp_path):
    t = write_targets(tmp_path / "t.yml", [{"name": "impossible", "match": {"model": "tiny"},
                                            "p50_s": 1e-6, "min_runs": 5}])
    rep = tmp_path / "r.json"
    r = under_exec("verify", "--model", str(tiny_model), "--targets", t, *WL, "--report", str(rep))
    assert r.returncode == 1, r.stdout + r.stderr
    cs = checks_of(json.loads(rep.read_text()))
    assert cs["latency_p50"]["status"] == "fail" and cs["latency_p50"]["limit"] == 1e-6
    assert cs["allocator"]["status"] == "pass"


def test_no_matching_target_exits_4(tiny_model, tmp_path):
    t = write_targets(tmp_path / "t.yml", [{"name": "xeon-sd15", "match": {"model": "sd15", "min_physical_cores": 1000},
                                            "p50_s": 6.5}])
    rep = tmp_path / "r.json"
    r = under_exec("verify", "--model", str(tiny_model), "--targets", t, *WL, "--report", str(rep))
    assert r.returncode == 4, r.stdout + r.stderr
    d = json.loads(rep.read_text())
    assert d["target"] is None and "model 'tiny' is not sd15" in d["target_selection"]
    assert checks_of(d)["target"]["status"] == "fail"
    assert d["bench"] is None  # nothing to compare with: no benchmark


def test_bad_targets_file_exits_2_and_records_it(tiny_model, tmp_path):
    t = write_targets(tmp_path / "t.yml", [{"name": "bad", "match": {}, "p50_s": -1}])
    prom = tmp_path / "v.prom"
    r = sdagent("verify", "--model", str(tiny_model), "--targets", t, "--prometheus", str(prom))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"sdagent: error: targets file {t}: entry #1 'bad': key 'p50_s': must be a number > 0, got -1")
    assert "Traceback" not in r.stderr
    assert 'sdagent_verify_exit_code{sdagent_instance="0"} 2' in prom.read_text()  # no stale pass
    missing = sdagent("verify", "--model", str(tiny_model), "--targets", t,
                      "--report", str(tmp_path / "nodir" / "r.json"))
    assert missing.returncode == 2 and "output directory does not exist" in missing.stderr
    assert not (tmp_path / "nodir").exists()


def test_plan_file_with_tune_results_slower_than_stock_exits_6(tiny_model, tmp_path, smoke):
    pf = tmp_path / "plan.json"
    r = sdagent("plan", "-o", str(pf))
    assert r.returncode == 0, r.stderr
    d = json.loads(pf.read_text())
    d["source"] = "tuned"
    d["tuning"] = {"chosen": "topology plan", "noise": {"sigma_pair_used": 0.03}, "candidates": [
        {"name": "stock", "stock": True, "measured_s": [1.0, 1.1, 1.2]},
        {"name": "topology plan", "stock": False, "measured_s": [1.5, 1.6, 1.7]}],
        "comparisons": [{"best": "topology plan", "candidate": "stock", "kind": "final",
                         "best_s": [1.5, 1.6, 1.7], "candidate_s": [1.0, 1.1, 1.2]}]}
    pf.write_text(json.dumps(d))
    rep = tmp_path / "r.json"
    r = under_exec("verify", "--model", str(tiny_model), "--targets", smoke, *WL, "--report", str(rep),
                   group=("--plan-file", str(pf)))
    assert r.returncode == 6, r.stdout + r.stderr
    rd = json.loads(rep.read_text())
    cs = checks_of(rd)
    assert cs["stock_tune"]["status"] == "fail" and "slower than stock beyond noise" in cs["stock_tune"]["detail"]
    assert cs["allocator"]["status"] == "pass" and cs["latency_p50"]["status"] == "pass"
    assert rd["plan"]["source"] == "tuned"


def test_against_stock_measures_a_fresh_stock_process(tiny_model, tmp_path, smoke, plan):
    r = under_exec("verify", "--model", str(tiny_model), "--targets", smoke, *WL, "--against-stock", "--json")
    assert r.returncode in (0, 6), r.stdout + r.stderr
    d = json.loads(r.stdout)
    fig = d["stock"]["figures"]
    assert len(fig["plan_s"]) == len(fig["stock_s"]) == 5  # the target's min_runs, both sides
    stock_process = d["stock"]["result"]["process"]  # what the stock worker really ran with
    assert "LD_PRELOAD" not in stock_process["env"] and "OMP_NUM_THREADS" not in stock_process["env"]
    assert not any("jemalloc" in x or "iomp5" in x for x in stock_process["libraries"])
    assert d["stock"]["result"]["observed"]["precision"] == "fp32"
    slower = median_bounds(fig["plan_s"])[0] > median_bounds(fig["stock_s"])[1]
    assert checks_of(d)["stock_measured"]["status"] == ("fail" if slower else "pass")
    assert r.returncode == (6 if slower else 0)
