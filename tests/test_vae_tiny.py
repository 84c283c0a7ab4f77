"""The tiny autoencoder as a plan choice (pipeline/vae.py, modelgen_tae.py) and tune's fidelity gate for it.

Cheap: the `tiny` pipeline at 64x64, 1 step, with the `tiny-tae` autoencoder; the presets' architectures are
checked from their configs; one real `sdagent tune` (the gate failing under an impossible bound).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from clirun import clean_env, sdagent

from sdagent.measuring.fidelity import FidelityBound
from sdagent.pipeline.vae import fit_problem
from sdagent.tuning import axes as A
from sdagent.tuning import search as T

TINY_1STEP = ("--steps", "1", "--height", "64", "--width", "64")


@pytest.fixture(scope="module")
def tae_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny pipeline with a `tiny-tae` autoencoder in MODEL/vae_tiny."""
    from sdagent.pipeline.modelgen_tae import create_tae

    path = tmp_path_factory.mktemp("tae") / "tiny"
    shutil.copytree(tiny_model, path)
    create_tae("tiny-tae", path / "vae_tiny")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "bench.lock"))


# ---------------------------------------------------------------------------
# Presets and fit (pure)
# ---------------------------------------------------------------------------

VAE = {"latent_channels": 4, "block_out_channels": [16, 16, 32, 32]}
UNET = {"in_channels": 4}


def test_taesd_presets_are_madebyollins_architecture():
    from sdagent.pipeline.modelgen_tae import TAE_PRESETS

    for name in ("taesd", "taesdxl"):
        cfg = TAE_PRESETS[name][1]
        assert cfg["encoder_block_out_channels"] == cfg["decoder_block_out_channels"] == (64, 64, 64, 64)
        assert cfg["num_encoder_blocks"] == (1, 3, 3, 3) and cfg["num_decoder_blocks"] == (3, 3, 3, 1)
        assert cfg["latent_channels"] == 4 and cfg["scaling_factor"] == 1.0
        assert fit_problem({"_class_name": "AutoencoderTiny", **cfg}, {"latent_channels": 4,
                           "block_out_channels": [128, 256, 512, 512]}, UNET) is None  # fits SD-1.5's VAE


@pytest.mark.parametrize("tiny, words", [
    ({"_class_name": "AutoencoderKL"}, "not AutoencoderTiny"),
    ({"_class_name": "AutoencoderTiny", "latent_channels": 16, "decoder_block_out_channels": [8] * 4},
     "latent_channels 16 do not fit the model's 4"),
    ({"_class_name": "AutoencoderTiny", "latent_channels": 4, "decoder_block_out_channels": [8] * 3},
     "upsamples 4x, the model's VAE 8x"),
])
def test_fit_problems_are_named(tiny, words):
    assert words in fit_problem(tiny, VAE, UNET)


def test_vae_axis_only_where_a_tiny_vae_is_available():
    def resolve(overrides, layout=None):
        return {"backend": "native", "vae": "full", **overrides}

    best = T.Candidate("plan", {}, resolve({}), "plan")
    host = A.HostChoices(physical_cores=2, bf16=False, ipex=False, jemalloc=False, tcmalloc=False, iomp=False,
                         pin=None)
    assert A.vae_axis(host, resolve, best) == []
    with_tiny = A.HostChoices(**{**host.__dict__, "vae_tiny": True})
    [v] = A.vae_axis(with_tiny, resolve, best)
    assert v.settings["vae"] == "tiny" and v.axis == "VAE"
    ov = T.Candidate("ov", {"backend": "openvino"}, resolve({"backend": "openvino"}), "plan")
    assert A.vae_axis(with_tiny, resolve, ov) == []


def test_the_tiny_vae_is_lossy_for_the_gate():
    from sdagent.planning.runspec import STOCK_RUN
    from sdagent.tuning.gate import lossy

    assert "tiny VAE" in lossy({"backend": "native", "vae": "tiny"}) and lossy({"backend": "native"}) is None
    assert replace(STOCK_RUN, vae="tiny").lossy and not STOCK_RUN.lossy


# ---------------------------------------------------------------------------
# The session: real gate images on the tiny model, fake worker timings (the tiny VAE faster)
# ---------------------------------------------------------------------------


def _tune_session(tmp_path: Path, model: Path, bound: FidelityBound):
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.pipeline.modeldir import check_model_dir
    from sdagent.pipeline.workload import Workload
    from sdagent.tuning.session import TuneRequest, tune
    from sdagent.workers.result import Measurement, ProcessRecord, WorkerResult

    topo = read_topology(write_tree(tmp_path, HOSTS["xeon-vm-2core-amx"]))
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None}, numactl=None,
                      taskset="/usr/bin/taskset", numa_permitted=False,
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"), cxx=None)
    now = [0.0]

    def runner(launch, job, timeout_s):
        lat = 10.0 if launch.name == "stock" else 4.0 if job.run.vae == "tiny" else 8.0
        now[0] += lat + 2.0
        m = Measurement("images", job.workload, (lat,), ProcessRecord(("/x/libgomp.so.1",), 2, (0, 1)),
                        runs=({"unet_steps_s": [lat]},), unet_evals=1)
        return WorkerResult(True, "ok", lat + 2.0, m)

    w = Workload(steps=1, height=64, width=64)
    req = TuneRequest(check_model_dir(model), w, 600.0, allow_compile=False, fidelity_bound=bound,
                      only_axes=("VAE",))
    return tune(topo, facts, req, environ={}, runner=runner, clock=lambda: now[0])


@pytest.mark.slow
def test_tune_session_ships_the_tiny_vae_past_the_gate_with_its_figures_in_the_reason(tmp_path, tae_model):
    out = _tune_session(tmp_path, tae_model, FidelityBound(relative_to="none", min_psnr_db=1))
    gate = out.record["fidelity"]["vae=tiny"]
    assert gate["passed"] is True and gate["fidelity"]["n_images"] == 2 and "vae=tiny" in out.record["processes"]
    assert out.plan.vae == "tiny" and out.plan.run_spec.vae == "tiny"
    reason = next(d.reason for d in out.plan.decisions if d.key == "vae")
    assert reason.startswith("vae tiny: ") and "x faster per image" in reason and "PSNR" in reason
    assert "vs the fp32 reference" in reason and "bound: PSNR >= 1 dB" in reason


@pytest.mark.slow
def test_tune_session_default_bound_measures_bf16_and_refuses_random_weights_tiny_vae(tmp_path, tae_model):
    """The default bound: at least bf16's fidelity. A random-weights tiny VAE decodes other pixels: it fails."""
    out = _tune_session(tmp_path, tae_model, FidelityBound())
    gate = out.record["fidelity"]["vae=tiny"]
    assert gate["passed"] is False and gate["bf16"]["n_images"] == 2 and "bf16's" in gate["reason"]
    assert out.plan.vae == "full"
    assert "vae=tiny" not in out.record["processes"]
    failed = next(c for c in out.record["comparisons"] if c["candidate"] == "vae=tiny")
    assert failed["verdict"] == "failed" and "fails the fidelity gate" in failed["reason"]


# ---------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_model_create_taesd_writes_the_exact_architecture(tmp_path):
    r = sdagent("model", "create", "--preset", "taesd", "--json", str(tmp_path / "vae_tiny"))
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    cfg = json.loads((tmp_path / "vae_tiny" / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["num_encoder_blocks"] == [1, 3, 3, 3]
    assert cfg["decoder_block_out_channels"] == [64, 64, 64, 64] and cfg["scaling_factor"] == 1.0
    assert 2_000_000 < made["params"]["vae_tiny"] < 3_000_000  # TAESD: ~2.4M parameters (encoder + decoder)


@pytest.mark.slow
def test_run_with_the_tiny_vae_and_a_misfit_refused_in_one_line(tmp_path, tae_model):
    out = tmp_path / "a.png"
    r = sdagent("run", "--model", str(tae_model), "--prompt", "a cat", *TINY_1STEP, "--precision", "fp32",
                "--no-compile", "--vae", "tiny", "--json", "-o", str(out), env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["run"]["vae"] == "tiny" and "tiny VAE" in rec["ran"] and out.is_file()
    assert any("AutoencoderTiny" in n for n in rec["notes"])
    bad = tmp_path / "bad"
    shutil.copytree(tae_model, bad)
    cfg = json.loads((bad / "vae_tiny" / "config.json").read_text())
    (bad / "vae_tiny" / "config.json").write_text(json.dumps({**cfg, "latent_channels": 16}))
    r = sdagent("run", "--model", str(bad), "--prompt", "a cat", *TINY_1STEP, "--vae", "tiny", "-o",
                str(tmp_path / "b.png"), env=_env(tmp_path))
    assert r.returncode == 2 and "latent_channels 16 do not fit the model's 4" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.png").exists()
    r = sdagent("run", "--model", str(tae_model.parent.parent / "nope"), "--prompt", "x", "--vae", "tiny", "-o",
                str(tmp_path / "c.png"), env=_env(tmp_path))
    assert r.returncode == 2


def test_vae_tiny_with_backend_openvino_is_refused_in_one_line():
    r = sdagent("plan", "--set", "vae=tiny", "--set", "backend=openvino")
    assert r.returncode == 2 and "backend openvino decodes with its export's own VAE" in r.stderr
    r = sdagent("plan", "--set", "vae=small")
    assert r.returncode == 2 and "choose one of full, tiny" in r.stderr


def test_a_fidelity_bound_out_of_range_is_exit_2_before_any_work(tmp_path):
    r = sdagent("tune", "--model", str(tmp_path), "--fidelity-bound", "min_ssim=1.5", "--budget", "1")
    assert r.returncode == 2 and "min_ssim=1.5 is outside its range [-1, 1]" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_tune_cli_reports_a_lossy_candidate_failing_the_gate_and_never_ships_it(tmp_path, tae_model):
    """The plan in force is stock (so no noise floor is needed: the first candidate is stock itself), the VAE
    axis alone: the tiny VAE's images face an impossible bound and fail, with their figures, never measured."""
    from sdagent.planning.runspec import STOCK_SETTINGS

    sets = [x for k, v in STOCK_SETTINGS.items() for x in ("--set", f"{k}={str(v).lower()}")]
    start = tmp_path / "stock.json"
    r = sdagent("plan", *sets, "-o", str(start), env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "tuned.json"
    r = sdagent("--plan-file", str(start), "tune", "--model", str(tae_model), *TINY_1STEP, "--warmup-steps", "1",
                "--repeats", "1", "--no-compile", "--axis", "VAE", "--budget", "6",
                "--fidelity-bound", "relative_to=none,min_psnr_db=100", "-o", str(out), env=_env(tmp_path),
                timeout=900)
    assert r.returncode == 0, r.stderr
    assert "fails the fidelity gate" in r.stdout  # the table shows the gate's verdict
    plan = json.loads(out.read_text())
    failed = next(c for c in plan["tuning"]["comparisons"] if c["candidate"] == "vae=tiny")
    assert failed["verdict"] == "failed" and "fails the fidelity gate (PSNR" in failed["reason"]
    assert "< 100 dB" in failed["reason"]
    gate = plan["tuning"]["fidelity"]["vae=tiny"]
    assert gate["passed"] is False and math.isfinite(gate["fidelity"]["psnr_db"])
    assert gate["bound"]["min_psnr_db"] == 100 and plan["settings"]["vae"] == "full"
    assert "vae=tiny" not in plan["tuning"]["processes"]  # never measured, never shipped


# ---------------------------------------------------------------------------
# verify: a lossy plan's fidelity is measured and judged (fake measurer), the target's bound first
# ---------------------------------------------------------------------------


def _verify_lossy(tmp_path: Path, fidelity_yaml: dict | None, psnr: float):
    from test_verify_session import FACTS, FakeMeasurer, W, state_for

    from hosts import HOSTS, write_tree
    from sdagent.host.topology import read_topology
    from sdagent.measuring.fidelity import Fidelity, passes_gate
    from sdagent.pipeline.modeldir import ModelDir
    from sdagent.planning.plan import make_plan
    from sdagent.verifying.session import VerifyRequest, verify
    from sdagent.verifying.targets import parse_targets

    topo = read_topology(write_tree(tmp_path, HOSTS["epyc-2core-zen5"]))
    plan = make_plan(topo, FACTS, overrides={"vae": "tiny"})
    target = {"name": "t", "match": {"model": "tiny"}, "p50_s": 5, "min_runs": 5}
    if fidelity_yaml is not None:
        target["fidelity"] = fidelity_yaml
    req = VerifyRequest(ModelDir(Path("/m/tiny"), "StableDiffusionPipeline", {}, "tiny"), W, plan, 0,
                        parse_targets([target]), topo)

    class Lossy(FakeMeasurer):
        def fidelity(self, spec, bound):
            self.calls.append(("fidelity", spec, bound))
            return passes_gate(Fidelity(psnr, 0.9, 2, "the fp32 reference"), bound,
                               Fidelity(30.0, 0.95, 2, "the fp32 reference"))

    m = Lossy()
    return verify(req, m, state_for(plan, topo)), m


def test_verify_reports_a_lossy_plans_fidelity_and_holds_it_to_the_targets_bound(tmp_path):
    res, m = _verify_lossy(tmp_path / "a", {"relative_to": "none", "min_psnr_db": 20}, psnr=25.0)
    c = res.check("fidelity")
    assert c.status == "pass" and c.value["psnr_db"] == 25.0 and "PSNR 25.0 dB" in c.detail
    assert [x for x in m.calls if x[0] == "fidelity"][0][1].vae == "tiny"
    res, _ = _verify_lossy(tmp_path / "b", None, psnr=25.0)  # the default bound: at least bf16's 30 dB
    assert res.check("fidelity").status == "fail" and res.exit_code == 1
    assert "bf16's 30.0" in res.check("fidelity").detail


def test_a_targets_fidelity_bound_out_of_range_is_one_line(tmp_path):
    from sdagent.errors import BadInput
    from sdagent.verifying.targets import parse_targets

    with pytest.raises(BadInput) as e:
        parse_targets([{"name": "t", "match": {}, "p50_s": 5, "fidelity": {"min_ssim": 2}}])
    assert "fidelity" in str(e.value) and "outside its range" in str(e.value) and "\n" not in str(e.value)


def test_a_vae_tiny_plan_without_the_models_tiny_autoencoder_is_refused_before_any_work(tmp_path, tiny_model):
    from clirun import REPO

    plan = tmp_path / "p.json"
    assert sdagent("plan", "--set", "vae=tiny", "-o", str(plan), env=_env(tmp_path)).returncode == 0
    r = sdagent("--plan-file", str(plan), "verify", "--model", str(tiny_model), "--targets",
                str(REPO / "examples" / "targets.yml"), env=_env(tmp_path))
    assert r.returncode == 2 and "vae tiny:" in r.stderr and "vae_tiny/config.json is missing" in r.stderr
    assert "sdagent model create --preset taesd" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_verify_cli_measures_a_lossy_plans_fidelity(tmp_path, tae_model):
    from clirun import PY

    plan, targets = tmp_path / "p.json", tmp_path / "t.yml"
    targets.write_text("- name: tiny\n  match: {model: tiny}\n  p50_s: 600\n"
                       "  fidelity: {relative_to: none, min_psnr_db: 1}\n")
    assert sdagent("plan", "--set", "vae=tiny", "--set", "compile=false", "-o", str(plan),
                   env=_env(tmp_path)).returncode == 0
    r = sdagent("--plan-file", str(plan), "exec", "--", PY, "-m", "sdagent", "verify", "--model", str(tae_model),
                "--targets", str(targets), "--steps", "1", "--json", env=_env(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    fid = next(c for c in rec["checks"] if c["name"] == "fidelity")
    assert fid["status"] == "pass" and "passes the fidelity gate: PSNR" in fid["detail"]
    assert fid["limit"]["min_psnr_db"] == 1 and math.isfinite(fid["value"]["psnr_db"])


def test_a_compiled_tiny_decoder_has_a_package_key_of_its_own(tae_model):
    """The decoder package of the tiny VAE is keyed on its weights too: never the full VAE's package loaded."""
    from sdagent.pipeline.backends import artifact_keys
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.runspec import RunSpec

    spec = RunSpec("native", "fp32", True, True, False)
    w = Workload(steps=1, height=64, width=64)
    full, tiny = artifact_keys(tae_model, spec, w), artifact_keys(tae_model, replace(spec, vae="tiny"), w)
    assert full["unet"] == tiny["unet"] and full["text_encoder"] == tiny["text_encoder"]
    assert full["vae_decoder"].digest != tiny["vae_decoder"].digest and "+tae" in tiny["vae_decoder"].model
