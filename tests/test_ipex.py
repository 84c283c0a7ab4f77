"""The IPEX backend really run: fp32, bf16 with weight prepack, and the no-prepack fallback.

Runs in the `ipex` venv (torch 2.8 + intel-extension-for-pytorch 2.8); skipped elsewhere.
"""

from __future__ import annotations

import json

import pytest

from sdagent.host.software import ipex_status

pytestmark = pytest.mark.ipex

_st = ipex_status()
if not _st.usable:
    pytest.skip(f"IPEX not usable here: {_st.reason}", allow_module_level=True)
try:
    import intel_extension_for_pytorch  # noqa: F401  (slow: ~8 s)
except Exception as exc:  # noqa: BLE001 - on a wrong torch it raises AttributeError
    pytest.skip(f"intel_extension_for_pytorch does not import: {exc.__class__.__name__}: {exc}",
                allow_module_level=True)

import torch  # noqa: E402

from sdagent.cli import main  # noqa: E402
from sdagent.pipeline.backends import prepare  # noqa: E402
from sdagent.pipeline.loader import load_diffusers_pipeline as load_pipeline  # noqa: E402
from sdagent.planning.runspec import RunSpec  # noqa: E402
from sdagent.pipeline.workload import Workload  # noqa: E402

W = Workload(prompt="sailing ship in storm by Rembrandt", steps=2, height=64, width=64, seed=0,
             scheduler="dpm")


def ipex_modules(module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if type(m).__module__.startswith("intel_extension")}


@pytest.fixture(scope="module")
def reference(tiny_model):
    """The native fp32 image for W: what every IPEX variant must stay close to."""
    pp = prepare(load_pipeline(tiny_model, "dpm"), RunSpec("native", "fp32", True, False, True), W)
    return pp.generate(W).array


def run_ipex(tiny_model, precision: str, weights_prepack: bool, isa_flags: tuple[str, ...] = ()):
    spec = RunSpec("ipex", precision, True, False, weights_prepack, isa_flags)
    pp = prepare(load_pipeline(tiny_model, "dpm"), spec, W)
    return pp, pp.generate(W)


def test_ipex_fp32(tiny_model, reference):
    pp, g = run_ipex(tiny_model, precision="fp32", weights_prepack=True)
    assert ipex_modules(pp.pipe.unet)  # ipex.optimize swapped in its own (prepacked) modules
    assert next(pp.pipe.unet.parameters()).dtype == torch.float32
    assert any("ipex.optimize(dtype=float32" in n and "2x4x8x8" in n for n in pp.notes), pp.notes
    assert any("channels_last on unet, vae and text encoder" in n for n in pp.notes)
    assert not any("autocast" in n for n in pp.notes)
    assert float(abs(g.array - reference).max()) < 1e-3  # fp32 IPEX computes the same image
    assert len(g.step_s) == 2 and g.vae_decode_s > 0 and g.text_encode_s > 0


def _prepack_cpu() -> bool:
    from sdagent.host.topology import current_topology
    from sdagent.planning.rules import ipex_prepack_supported

    return ipex_prepack_supported(current_topology())


@pytest.mark.skipif(not _prepack_cpu(), reason="this CPU lacks AVX512-BW/VL/DQ and AVX-NE-CONVERT: IPEX 2.8's bf16 "
                    "weight prepack asserts here (the plan turns it off; the next test covers that path)")
def test_ipex_bf16_prepacked(tiny_model, reference):
    pp, g = run_ipex(tiny_model, precision="bf16", weights_prepack=True, isa_flags=("amx_bf16",))
    assert ipex_modules(pp.pipe.unet)
    assert any("ipex.optimize(dtype=bfloat16" in n and "weights prepacked" in n for n in pp.notes), pp.notes
    assert any("autocast" in n for n in pp.notes)
    diff = float(abs(g.array - reference).mean())
    assert 0 < diff < 0.02, diff  # bf16 ran (not bit-identical to fp32) and draws the same image


def test_ipex_bf16_without_prepack_casts_modules(tiny_model, reference):
    """The fallback for CPUs where IPEX 2.8's bf16 prepack asserts (no AVX512-BW/VL/DQ, no AVX-NE-CONVERT)."""
    pp, g = run_ipex(tiny_model, precision="bf16", weights_prepack=False, isa_flags=("avx2",))
    for name in ("unet", "vae", "text_encoder"):
        assert next(getattr(pp.pipe, name).parameters()).dtype == torch.bfloat16, name
    assert any("prepack off" in n and "cast to bf16" in n for n in pp.notes), pp.notes
    assert any("emulated" in n for n in pp.notes)
    assert bool(torch.isfinite(torch.from_numpy(g.array)).all())
    diff = float(abs(g.array - reference).mean())
    assert 0 < diff < 0.02, diff


#: Each family's own workload at 64x64: SDXL guided (its added conditioning at batch 2), LCM at batch 1 (its
#: guidance embedding, timestep_cond). pipeline.family's defaults.
FAMILY_W = {"tiny_sdxl": Workload(prompt=W.prompt, steps=2, height=64, width=64, guidance=5.0, seed=0),
            "tiny_lcm": Workload(prompt=W.prompt, steps=2, height=64, width=64, guidance=8.5, seed=0, cfg=False)}


@pytest.mark.parametrize("fixture", sorted(FAMILY_W))
def test_ipex_runs_sdxl_and_lcm_with_their_unet_inputs(request, fixture):
    """ipex.optimize runs the UNet once on its sample input: SDXL's needs added_cond_kwargs (text_embeds,
    time_ids) and LCM's timestep_cond, or its forward raises there. fp32 draws the native image; bf16
    without prepack casts every part, SDXL's second text encoder too."""
    model = request.getfixturevalue(fixture)
    w = FAMILY_W[fixture]
    ref = prepare(load_pipeline(model, "default"), RunSpec("native", "fp32", True, False, True), w).generate(w).array
    pp = prepare(load_pipeline(model, "default"), RunSpec("ipex", "fp32", True, False, True), w)
    extra = "text_embeds, time_ids" if fixture == "tiny_sdxl" else "timestep_cond"
    assert any(f"+ {extra})" in n for n in pp.notes), pp.notes
    assert ipex_modules(pp.pipe.unet)
    assert float(abs(pp.generate(w).array - ref).max()) < 1e-3
    bf = prepare(load_pipeline(model, "default"), RunSpec("ipex", "bf16", True, False, False, ("avx2",)), w)
    parts = ("unet", "vae", "text_encoder", *(("text_encoder_2",) if fixture == "tiny_sdxl" else ()))
    for name in parts:
        assert next(getattr(bf.pipe, name).parameters()).dtype == torch.bfloat16, name
    g = bf.generate(w)
    assert bool(torch.isfinite(torch.from_numpy(g.array)).all()) and float(abs(g.array - ref).mean()) < 0.05


def cli(capsys, *args):
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ei.value.code or 0), out, err


def test_run_cli_ipex_bf16(tiny_model, tmp_path, capsys):
    out = tmp_path / "i.png"
    code, stdout, err = cli(capsys, "run", "--model", str(tiny_model), "--prompt", "ship", "--steps", "2",
                            "--height", "64", "--width", "64", "--backend", "ipex", "--precision", "bf16",
                            "-o", str(out), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["run"]["backend"] == "ipex" and r["run"]["precision"] == "bf16"
    assert r["versions"]["intel-extension-for-pytorch"].startswith("2.8")
    assert any("ipex.optimize(dtype=bfloat16" in n for n in r["notes"])
    assert out.stat().st_size > 0


def test_compile_with_ipex_backend_is_bad_input(tiny_model, tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--model", str(tiny_model), "--prompt", "ship", "--backend", "ipex",
                       "--compile", "-o", str(tmp_path / "x.png"))
    assert code == 2 and err.startswith("sdagent: error: compile=True but backend ipex optimizes the graph itself")
    assert "compile is the native backend's (--backend native)" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
