"""sdagent.pipeline (native backend) and sdagent.modeldir/workload: loading, preparing, timing."""

from __future__ import annotations

import json
import shutil

import pytest

from sdagent.errors import BadInput
from sdagent.pipeline.modeldir import check_model_dir, safetensors_problem
from sdagent.pipeline.workload import SCHEDULERS, Workload, validate_workload

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from sdagent.pipeline.backends import import_ipex, prepare, unet_sample_input  # noqa: E402
from sdagent.pipeline.generate import PreparedPipeline  # noqa: E402
from sdagent.pipeline.loader import load_diffusers_pipeline as load_pipeline  # noqa: E402
from sdagent.planning.runspec import RunSpec  # noqa: E402
from sdagent.host.software import ipex_status  # noqa: E402

W = Workload(prompt="sailing ship in storm by Rembrandt", steps=2, height=64, width=64, seed=0)


def native(precision: str = "fp32", channels_last: bool = True, compile: bool = False,
           isa_flags: tuple[str, ...] = ()) -> RunSpec:
    return RunSpec("native", precision, channels_last, compile, True, isa_flags)


# ---------------------------------------------------------------------------
# Workload and model-directory checks (no torch work)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "invalid steps 0"),
    ({"height": 100}, "invalid height 100: must be a positive multiple of 8"),
    ({"width": 0}, "invalid width 0"),
    ({"guidance": -1.0}, "invalid guidance -1.0"),
    ({"seed": -5}, "invalid seed -5"),
    ({"prompt": "  "}, "empty prompt"),
    ({"scheduler": "karras"}, "unknown scheduler 'karras': choose one of default, dpm, pndm, euler"),
])
def test_workload_validation_names_the_bad_value(change, message):
    with pytest.raises(BadInput, match=message):
        validate_workload(Workload(**{**W.to_dict(), **change}))


def test_guidance_decides_the_unet_batch():
    assert Workload(guidance=7.5).batch == 2
    assert Workload(guidance=1.0).batch == 1


def test_model_dir_checks(tiny_model, tmp_path):
    md = check_model_dir(tiny_model)
    assert md.pipeline_class == "StableDiffusionPipeline" and md.sdagent_preset == "tiny"
    with pytest.raises(BadInput, match=f"model directory not found: {tmp_path / 'nope'}"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(BadInput, match="not a diffusers pipeline directory \\(no model_index.json\\)"):
        check_model_dir(tmp_path)
    other = tmp_path / "sdxl"
    shutil.copytree(tiny_model, other)
    idx = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**idx, "_class_name": "StableDiffusion3Pipeline"}))
    with pytest.raises(BadInput, match="unsupported pipeline class 'StableDiffusion3Pipeline'"):
        check_model_dir(other)
    (other / "model_index.json").write_text(json.dumps({**idx, "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(BadInput, match="lacks component\\(s\\): text_encoder_2 \\(the second text encoder"):
        check_model_dir(other)
    (other / "model_index.json").write_text("{not json")
    with pytest.raises(BadInput, match="unreadable model_index.json"):
        check_model_dir(other)


def test_truncated_weights_named_before_loading(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    f = bad / "unet" / "diffusion_pytorch_model.safetensors"
    assert safetensors_problem(f) is None
    size = f.stat().st_size
    with f.open("r+b") as fh:
        fh.truncate(size // 2)
    assert "truncated" in safetensors_problem(f)
    with pytest.raises(BadInput, match=f"corrupt weights file {f}: truncated"):
        load_pipeline(bad)
    f.write_bytes(b"\x00\x01")
    with pytest.raises(BadInput, match="shorter than the 8-byte header"):
        load_pipeline(bad)


def test_weights_that_pass_the_header_check_but_do_not_load_are_one_line(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    cfg = bad / "unet" / "config.json"
    c = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**c, "block_out_channels": [48, 96]}))  # shapes no longer match the file
    with pytest.raises(BadInput, match=r"cannot load the pipeline in .*bad: \w+") as ei:
        load_pipeline(bad)
    assert "\n" not in str(ei.value)


def test_text_encoder_left_random_is_refused(tiny_model, tmp_path):
    """transformers 5 saves the CLIP text encoder without the 'text_model.' prefix; transformers 4
    then loads none of it and keeps random weights with only a log line. load_pipeline refuses that."""
    import transformers
    from safetensors.torch import load_file, save_file

    d = tmp_path / "t5layout"
    shutil.copytree(tiny_model, d)
    f = d / "text_encoder" / "model.safetensors"
    save_file({k.removeprefix("text_model."): v for k, v in load_file(str(f)).items()}, str(f),
              metadata={"format": "pt"})
    if int(transformers.__version__.split(".")[0]) >= 5:
        load_pipeline(d)  # transformers 5 reads either layout
    else:
        with pytest.raises(BadInput, match=f"text encoder weights in {f} were not loaded by transformers 4"):
            load_pipeline(d)


# ---------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------


def test_scheduler_names_map_to_diffusers_classes(tiny_model):
    pipe = load_pipeline(tiny_model)
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"  # "default" keeps the model's (SD-1.5's)
    import importlib.util

    from sdagent.pipeline.loader import set_scheduler

    for name, cls in SCHEDULERS.items():
        if cls is None:
            continue
        if name == "lms" and importlib.util.find_spec("scipy") is None:
            with pytest.raises(BadInput, match="scheduler 'lms' is not usable here: .*scipy"):
                set_scheduler(pipe, name)
            continue
        assert set_scheduler(pipe, name) == cls
        assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # the model's noise schedule kept
    with pytest.raises(BadInput, match="unknown scheduler 'fast'"):
        load_pipeline(tiny_model, "fast")


# ---------------------------------------------------------------------------
# Native backend
# ---------------------------------------------------------------------------


def test_native_fp32_generates_deterministic_images_with_timings(tiny_model):
    pipe = load_pipeline(tiny_model, "dpm")
    pp = prepare(pipe, native("fp32"), W)
    assert isinstance(pp, PreparedPipeline)
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert any("channels_last" in n for n in pp.notes)
    seen: list[tuple[int, int]] = []
    a = pp.generate(W, step_callback=lambda i, n, s: seen.append((i, n)))
    b = pp.generate(W)
    c = pp.generate(W, seed=1)
    assert a.image.size == (64, 64) and a.array.shape == (64, 64, 3)
    assert (a.array == b.array).all()  # same seed, same image
    assert abs(a.array - c.array).mean() > 1e-3  # another seed, another image
    assert c.workload.seed == 1 and a.workload.seed == 0
    assert float(a.array.std()) > 0.01 and bool(torch.isfinite(torch.from_numpy(a.array)).all())
    # DPM-Solver: one UNet call per step; one timing per call.
    assert len(a.step_s) == len(pipe.scheduler.timesteps) == 2
    assert seen == [(0, 2), (1, 2)]
    assert all(s > 0 for s in a.step_s) and a.text_encode_s > 0 and a.vae_decode_s > 0
    assert a.text_encode_s + a.unet_s + a.vae_decode_s <= a.total_s
    t = a.timings()
    assert t["unet_steps_s"] and t["unet_step_mean_s"] == pytest.approx(a.unet_s / 2, abs=1e-5)
    d = pp.describe()
    assert d["scheduler"] == "DPMSolverMultistepScheduler" and d["run"]["backend"] == "native"


def test_seed_gives_the_image_stock_diffusers_gives(tiny_model):
    """generate() draws the initial noise itself (fp32, then cast): in fp32 that is diffusers' own draw."""
    pp = prepare(load_pipeline(tiny_model, "dpm"), native("fp32", channels_last=False), W)
    ours = pp.generate(W, seed=3).array
    stock = pp.pipe(prompt=W.prompt, num_inference_steps=W.steps, height=W.height, width=W.width,
                    guidance_scale=W.guidance, generator=torch.Generator().manual_seed(3),
                    output_type="np").images[0]
    assert float(abs(ours - stock).max()) < 1e-6


def test_pndm_runs_one_more_unet_call_than_steps(tiny_model):
    pp = prepare(load_pipeline(tiny_model), native("fp32", channels_last=False), W)
    g = pp.generate(W)
    assert len(g.step_s) == W.steps + 1  # PLMS warm-up step, as SD-1.5's default scheduler does
    assert pp.pipe.unet.conv_in.weight.is_contiguous()
    assert not any("channels_last" in n for n in pp.notes)


def test_native_bf16_uses_autocast_and_stays_near_fp32(tiny_model):
    fp32 = prepare(load_pipeline(tiny_model, "dpm"), native("fp32"), W).generate(W)
    pp = prepare(load_pipeline(tiny_model, "dpm"), native("bf16", isa_flags=("avx2",)), W)
    assert any("autocast" in n for n in pp.notes)
    assert any("emulated" in n for n in pp.notes)  # no amx_bf16/avx512_bf16 in the flags given
    g = pp.generate(W)
    diff = float(abs(g.array - fp32.array).mean())
    assert 0 < diff < 0.02, diff  # bf16 really ran (not identical) and is close
    assert pp.pipe.unet.seen["out_dtype"] == "bfloat16" and pp.pipe.unet.seen["mode"] == "eager"
    # the precision is inside the parts: a user's own call of the diffusers pipeline computes in bf16 too
    pp.pipe.unet.seen = None
    pp.pipe(prompt="a ship", num_inference_steps=1, height=64, width=64)
    assert pp.pipe.unet.seen["out_dtype"] == "bfloat16" and not torch.is_autocast_enabled("cpu")


def test_run_record_from_plan_and_validation():
    s = RunSpec.from_settings({"backend": "ipex", "precision": "bf16", "channels_last": True, "compile": False,
                               "weights_prepack": False}, ("amx_bf16",))
    assert (s.backend, s.precision, s.weights_prepack, s.native_bf16) == ("ipex", "bf16", False, True)
    assert RunSpec.from_dict(s.to_dict()) == s  # the one serialization a worker reads
    with pytest.raises(BadInput, match="unknown backend 'onnx'"):
        RunSpec("onnx", "fp32", False, False, True)
    with pytest.raises(BadInput, match="unknown precision 'fp16'"):
        RunSpec("native", "fp16", False, False, True)


def test_unet_sample_input_has_the_loop_shapes(tiny_model):
    pipe = load_pipeline(tiny_model)
    lat, t, hid = unet_sample_input(pipe, Workload(height=64, width=128, guidance=7.5))
    assert tuple(lat.shape) == (2, 4, 8, 16)
    assert tuple(hid.shape) == (2, 77, pipe.text_encoder.config.hidden_size)
    assert t.numel() == 1
    lat1, _, _ = unet_sample_input(pipe, Workload(height=64, width=64, guidance=1.0))
    assert lat1.shape[0] == 1
    out = pipe.unet(lat, t, encoder_hidden_states=hid).sample  # the shapes the UNet really takes
    assert out.shape == lat.shape


def test_ipex_backend_without_ipex_is_bad_input_with_install_hint():
    if ipex_status().usable:
        pytest.skip("IPEX is installed and matches torch here (tests/test_ipex.py covers it)")
    with pytest.raises(BadInput, match=r"backend ipex is not usable here: .*pip install 'sdagent\[ipex\]'"):
        import_ipex()


@pytest.mark.slow
def test_compiled_packages_built_once_are_loaded_after_and_match_eager(tiny_model, tmp_path, aot_store):
    from conftest import copy_store

    # the session's build (conftest aot_store: `model compile` into an empty store) built the three, once
    assert set(aot_store["compile"]["built"]) == {"unet", "vae_decoder", "text_encoder"}
    store = copy_store(aot_store, tmp_path / "artifacts")
    eager = prepare(load_pipeline(tiny_model, "dpm"), native("bf16"), W).generate(W)
    pp = prepare(load_pipeline(tiny_model, "dpm"), native("bf16", compile=True), W, store_dir=str(store))
    assert pp.artifacts == aot_store["compile"]["artifacts"] and pp.compile_error is None
    assert not any("built" in n for n in pp.notes), pp.notes  # loaded after, never built again
    g = pp.generate(W)
    assert pp.pipe.unet.seen["mode"] == "aot" and pp.pipe.unet.seen["artifact"] == pp.artifacts["unet"]
    assert pp.pipe.unet.fallbacks == 0
    assert float(abs(g.array - eager.array).mean()) < 0.02  # the same computation, in bf16
    # a request of another size takes the eager path, never an error
    other = Workload(prompt=W.prompt, steps=1, height=32, width=32, scheduler="dpm")
    pp.generate(other)
    assert pp.pipe.unet.fallbacks > 0


@pytest.mark.slow
def test_a_stale_package_is_never_loaded_and_is_replaced(tiny_model, tmp_path, aot_store):
    import json
    import shutil

    from conftest import copy_store

    # the session's packages (conftest aot_store, built by `model compile`) are this workload's: found, not built
    store = copy_store(aot_store, tmp_path / "artifacts")
    pp = prepare(load_pipeline(tiny_model, "dpm"), native("bf16", compile=True), W, store_dir=str(store))
    assert not any("built" in n for n in pp.notes), pp.notes
    old = store / pp.artifacts["unet"]
    stale = store / "0000stale0000"
    shutil.copytree(old, stale)
    m = json.loads((stale / "manifest.json").read_text())
    m["key"]["torch"] = "2.0.0"  # built by an older torch
    (stale / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(old)
    again = prepare(load_pipeline(tiny_model, "dpm"), native("bf16", compile=True), W, store_dir=str(store))
    note = next(n for n in again.notes if "stale" in n)
    assert "torch '2.0.0' (here" in note and "rebuilt" in note
    assert not stale.exists() and (store / again.artifacts["unet"]).is_dir()
    assert again.pipe.unet.mode == "aot"


def test_without_a_package_and_without_building_the_part_runs_eager_and_says_why(tiny_model, tmp_path):
    pp = prepare(load_pipeline(tiny_model, "dpm"), native("bf16", compile=True), W, store_dir=str(tmp_path / "s"),
                 build=False)
    assert pp.artifacts == {} and "no package of the unet" in pp.compile_error
    assert pp.pipe.unet.mode == "eager" and any("compile fell back to eager" in n for n in pp.notes)
