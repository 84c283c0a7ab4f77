"""Each model family's tiny version through the paths a fleet serves it on (issue 23, "Done when"): the
compiled packages (`sdagent model compile`, then `verify` under `exec` loading them) and the OpenVINO
backend (its export built by `model compile`, then `run` and `verify` on it), for SD 2.x (v-prediction),
SDXL (two text encoders, added conditioning) and LCM (guidance embedding). SD 1.x, the tiny preset, has
the same paths in test_faults.py (conftest aot_store) and test_ov_backend.py. The compiled path is
tested on the families whose UNet takes further inputs (SDXL, LCM): SD 2.x's UNet is called as SD 1.x's
(its 1024-d cross-attention and v-prediction are config and scheduler, which run, bench, verify and the
OpenVINO export here cover), and an inductor build costs 1.5-3 minutes a family on a loaded 2-core host.

Through the CLI in fresh processes, as the Ansible role and a fleet's timer run them, with each family's
own workload defaults (size, steps, guidance): the arguments a service verifies with build exactly the
packages it loads. Slow (an inductor build of three packages is a minute or more a family on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from clirun import PY, REPO, clean_env, sdagent

pytestmark = pytest.mark.slow

#: fixture -> the preset name `sdagent model create` records (what a target's match.model is).
FAMILIES = {"tiny_sd21": "tiny-sd21", "tiny_sdxl": "tiny-sdxl", "tiny_lcm": "tiny-lcm"}
#: Steps and warm-up only: size and guidance stay each family's default, so compile and verify agree.
WL = ["--steps", "1", "--warmup", "1"]


def _targets(tmp_path: Path, preset: str, **match: str) -> str:
    p = tmp_path / "targets.yml"
    p.write_text(yaml.safe_dump([{"name": f"{preset}-smoke", "match": {"model": preset, **match}, "p50_s": 300,
                                  "p90_s": 600, "min_runs": 5}]))
    return str(p)


@pytest.fixture(scope="module")
def compile_plan(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A plan with the compiled path on (fp32: every CPU runs it natively) and a benchmark lock of its own."""
    d = tmp_path_factory.mktemp("famplan")
    env = clean_env(SDAGENT_LOCK_FILE=str(d / "bench.lock"))
    plan = d / "plan.json"
    r = sdagent("plan", "--set", "compile=true", "--set", "precision=fp32", "-o", str(plan), env=env)
    assert r.returncode == 0, r.stderr
    return plan, env


@pytest.mark.parametrize("fixture", ["tiny_sdxl", "tiny_lcm"])
def test_model_compile_builds_each_familys_packages_and_verify_loads_them(request, fixture, compile_plan,
                                                                          tmp_path):
    model, preset = request.getfixturevalue(fixture), FAMILIES[fixture]
    plan, env = compile_plan
    store = tmp_path / "artifacts"
    r = sdagent("--plan-file", str(plan), "model", "compile", "--model", str(model), "--artifacts", str(store),
                "--json", env=env)
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    assert set(built["built"]) == set(built["artifacts"]) == {"unet", "vae_decoder", "text_encoder"}
    assert built["batch"] == (1 if preset == "tiny-lcm" else 2)  # LCM: its guidance embedding, no CFG batch
    v = sdagent("--plan-file", str(plan), "exec", "--", PY, "-m", "sdagent", "verify", "--model", str(model), *WL,
                "--targets", _targets(tmp_path, preset), "--artifacts", str(store), "--json", env=env)
    d = json.loads(v.stdout)
    checks = {c["name"]: c for c in d["checks"]}
    assert v.returncode == 0, (v.stderr[-2000:], [c for c in d["checks"] if c["status"] not in ("pass", "skip")])
    assert d["host_key"]["model"] == preset and d["target"]["name"] == f"{preset}-smoke"
    assert checks["artifact"]["status"] == "pass" and built["artifacts"]["unet"] in checks["artifact"]["detail"]
    assert checks["image_finite"]["status"] == checks["image_not_blank"]["status"] == "pass"


def _ov(py: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([py, "-m", "sdagent", *args], env=env, capture_output=True, text=True, timeout=900,
                          cwd=str(REPO))


@pytest.mark.openvino
@pytest.mark.parametrize("fixture", sorted(FAMILIES))
def test_the_openvino_backend_exports_runs_and_verifies_each_family(request, fixture, ov_python, tmp_path):
    """The export class follows the family (optimum-intel's OVStableDiffusion/XL/LatentConsistencyModel
    pipeline); OpenVINO GenAI runs it; verify checks the loaded export is the planned one."""
    model, preset = request.getfixturevalue(fixture), FAMILIES[fixture]
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "bench.lock"))
    plan, store = tmp_path / "plan.json", tmp_path / "artifacts"
    p = _ov(ov_python, "plan", "--set", "backend=openvino", "--set", "precision=fp32", "-o", str(plan), env=env)
    assert p.returncode == 0, p.stderr
    c = _ov(ov_python, "--plan-file", str(plan), "model", "compile", "--model", str(model), "--artifacts",
            str(store), "--json", env=env)
    assert c.returncode == 0, c.stderr[-3000:]
    built = json.loads(c.stdout)
    assert built["built"] == ["openvino"]
    digest = built["artifacts"]["openvino"]
    marker = json.loads((store / "openvino" / digest / "manifest.json").read_text())
    assert marker["key"]["height"] == 64 and marker["key"]["batch"] == (1 if preset == "tiny-lcm" else 2)
    out = tmp_path / "a.png"
    r = _ov(ov_python, "--plan-file", str(plan), "run", "--model", str(model), "--prompt", "a red ship", *WL[:2],
            "--artifacts", str(store), "-o", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["run"]["backend"] == "openvino" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    v = _ov(ov_python, "--plan-file", str(plan), "exec", "--", ov_python, "-m", "sdagent", "verify", "--model",
            str(model), *WL, "--targets", _targets(tmp_path, preset, backend="openvino"), "--artifacts", str(store),
            "--json", env=env)
    d = json.loads(v.stdout)
    checks = {c["name"]: c for c in d["checks"]}
    assert v.returncode == 0, (v.stderr[-2000:], [c for c in d["checks"] if c["status"] not in ("pass", "skip")])
    assert checks["backend"]["value"] == "openvino" and digest in checks["artifact"]["detail"]
