"""Model families (issue 23): the family read from the directory, its workload defaults and warnings, the
presets' exact architectures (on "meta": never the full-size weights), FLOPs against hand calculations,
and `run`/`bench` through the CLI on each family's tiny version."""

from __future__ import annotations

import json
import shutil

import pytest

from sdagent.errors import BadInput
from sdagent.pipeline.family import FAMILIES, detect_family, guidance_warning, steps_warning
from sdagent.pipeline.workload import with_model_defaults, workload_warnings

SD = {"_class_name": "StableDiffusionPipeline"}
XL = {"_class_name": "StableDiffusionXLPipeline"}
LCM = {"_class_name": "LatentConsistencyModelPipeline"}
EULER_TRAILING = {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}

# ---------------------------------------------------------------------------
# The family from what the directory says (pure)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("index, unet, scheduler, family", [
    (SD, {"cross_attention_dim": 768}, {"_class_name": "PNDMScheduler"}, "sd1"),  # runwayml SD-1.5
    (SD, {"cross_attention_dim": 1024}, {"prediction_type": "epsilon"}, "sd2"),  # SD 2.1 base (512)
    (SD, {"cross_attention_dim": 1024}, {"prediction_type": "v_prediction"}, "sd2-v"),  # SD 2.1 (768)
    (SD, {"cross_attention_dim": 1024}, EULER_TRAILING, "sd-turbo"),  # stabilityai/sd-turbo
    (XL, {"addition_embed_type": "text_time"}, {"_class_name": "EulerDiscreteScheduler"}, "sdxl"),
    (XL, {"addition_embed_type": "text_time"}, {"_class_name": "EulerAncestralDiscreteScheduler",
                                                "timestep_spacing": "trailing"}, "sdxl-turbo"),
    (LCM, {"cross_attention_dim": 768, "time_cond_proj_dim": 256}, {"_class_name": "LCMScheduler"}, "lcm"),
    (SD, {"cross_attention_dim": 768, "time_cond_proj_dim": 256}, {}, "lcm"),  # an LCM UNet in an SD dir
    (XL, {"addition_embed_type": "text_time", "time_cond_proj_dim": 256}, {}, "lcm-sdxl"),
])
def test_family_from_the_directory_configs(index, unet, scheduler, family):
    assert detect_family(index, unet, scheduler).name == family


def test_family_classes_and_defaults():
    assert {f.pipeline_class for f in FAMILIES.values()} == {
        "StableDiffusionPipeline", "StableDiffusionXLPipeline", "LatentConsistencyModelPipeline"}
    assert FAMILIES["sdxl"].components[-2:] == ("text_encoder_2", "tokenizer_2")
    assert FAMILIES["sd1"].components == ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    turbo, lcm = FAMILIES["sdxl-turbo"], FAMILIES["lcm"]
    assert (turbo.default_steps, turbo.default_guidance, turbo.cfg) == (1, 0.0, True)
    assert (lcm.default_steps, lcm.default_guidance, lcm.cfg) == (4, 8.5, False)


def test_a_declared_family_is_trusted_only_where_the_class_agrees():
    assert detect_family(SD, {"cross_attention_dim": 32}, {}, declared="sd2-v").name == "sd2-v"
    assert detect_family(SD, {"cross_attention_dim": 32}, {}, declared="sdxl").name == "sd1"
    assert detect_family(SD, {"cross_attention_dim": 32}, {}, declared="nonsense").name == "sd1"


@pytest.mark.parametrize("cls", ["StableDiffusion3Pipeline", "", None])
def test_unknown_class_is_one_line_naming_it(cls):
    with pytest.raises(BadInput) as ei:
        detect_family({"_class_name": cls} if cls is not None else {}, {}, {}, "/m/model_index.json")
    msg = str(ei.value)
    assert "\n" not in msg and "unsupported pipeline class" in msg and "/m/model_index.json" in msg
    assert repr(cls or "(none)") in msg and "StableDiffusionXLPipeline" in msg


# ---------------------------------------------------------------------------
# Workload defaults and warnings per family (pure)
# ---------------------------------------------------------------------------

NOTHING_GIVEN = {"prompt": "a cat", "negative_prompt": None, "steps": None, "height": None, "width": None,
                 "guidance": None, "seed": 0, "scheduler": "default"}


@pytest.mark.parametrize("family, steps, guidance, batch", [
    ("sd1", 20, 7.5, 2), ("sd2-v", 20, 7.5, 2), ("sdxl", 20, 5.0, 2),
    ("sd-turbo", 1, 0.0, 1), ("sdxl-turbo", 1, 0.0, 1), ("lcm", 4, 8.5, 1),
])
def test_family_defaults_apply_when_not_given(family, steps, guidance, batch):
    w = with_model_defaults(NOTHING_GIVEN, lambda: 512, FAMILIES[family], command_steps=20)
    assert (w.steps, w.guidance, w.batch, w.height) == (steps, guidance, batch, 512)
    assert workload_warnings(FAMILIES[family], w, set()) == []


def test_given_values_win_over_the_family_and_the_command_default():
    given = {**NOTHING_GIVEN, "steps": 3, "guidance": 2.0, "height": 64, "width": 64}
    w = with_model_defaults(given, lambda: pytest.fail("the size was given"), FAMILIES["sdxl-turbo"], 20)
    assert (w.steps, w.guidance, w.batch) == (3, 2.0, 2)
    assert with_model_defaults(NOTHING_GIVEN, lambda: 64, FAMILIES["sd1"], command_steps=4).steps == 4  # tune's


def test_guidance_and_steps_a_distilled_model_ignores_warn():
    turbo, lcm, sd = FAMILIES["sd-turbo"], FAMILIES["lcm"], FAMILIES["sd1"]
    assert "sd-turbo was distilled to run without classifier-free guidance" in guidance_warning(turbo, 7.5, True)
    assert guidance_warning(turbo, 7.5, False) is None  # not given: no warning
    assert guidance_warning(turbo, 1.0, True) is None  # no classifier-free pass at all
    assert "reads guidance as an embedding" in guidance_warning(lcm, 2.0, True)
    assert guidance_warning(sd, 12.0, True) is None
    assert "distilled for 1-4 steps" in steps_warning(turbo, 5) and steps_warning(turbo, 4) is None
    assert "distilled for 1-8 steps" in steps_warning(lcm, 9) and steps_warning(sd, 999) is None
    w = with_model_defaults({**NOTHING_GIVEN, "guidance": 7.5, "steps": 8, "negative_prompt": "blur"},
                            lambda: 64, lcm, 20)
    notes = workload_warnings(lcm, w, {"guidance", "steps", "negative_prompt"})
    assert len(notes) == 2 and all("\n" not in n for n in notes)  # 8 steps is inside LCM's range
    assert w.negative_prompt is None and any("--negative-prompt" in n for n in notes)


# ---------------------------------------------------------------------------
# The presets' architectures, on "meta" (no weights)
# ---------------------------------------------------------------------------


def _meta_text(preset, second=False):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdagent.pipeline import modelgen

    kw = modelgen.text_config_kwargs(preset, {modelgen.BOS: 49406, modelgen.EOS: 49407}, second=second)
    with torch.device("meta"):
        return (CLIPTextModelWithProjection if second else CLIPTextModel)(CLIPTextConfig(**kw))


def test_sd21_preset_is_sd21_and_its_cross_attention_is_1024_wide():
    pytest.importorskip("diffusers")
    from sdagent.measuring.flops import flops_by_module, unet_inputs
    from sdagent.pipeline import modelgen

    p = modelgen.get_preset("sd21")
    unet = modelgen.build_unet(p, device="meta")
    # Published parameter counts (stabilityai/stable-diffusion-2-1): UNet 865.91M, OpenCLIP-H text 340.39M.
    assert modelgen.param_count(unet) == 865_910_724
    assert modelgen.param_count(_meta_text(p)) == 340_387_840
    assert (p.default_size, p.family, p.storage_dtype) == (768, "sd2-v", "fp16")
    turbo = modelgen.get_preset("sd-turbo")
    assert (turbo.default_size, turbo.family, turbo.unet["cross_attention_dim"]) == (512, "sd-turbo", 1024)
    # Hand calculation: the first cross-attention's key projection maps 77 text tokens of 1024 features to
    # the block's 320 channels, for each of the guided batch's 2 rows: 2 FLOPs per multiply-add.
    args, kw = unet_inputs(unet, 8, 8, batch=2)
    by = flops_by_module(lambda: unet(*args, **kw))
    to_k = "UNet2DConditionModel.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    assert by[to_k] == 2 * 2 * 77 * 1024 * 320


def test_sdxl_preset_is_sdxl_base():
    pytest.importorskip("diffusers")
    from sdagent.pipeline import modelgen

    p = modelgen.get_preset("sdxl")
    unet = modelgen.build_unet(p, device="meta")
    # Published counts (stabilityai/stable-diffusion-xl-base-1.0): UNet 2.567B, CLIP-L 123.06M, bigG 694.66M.
    assert modelgen.param_count(unet) == 2_567_463_684
    assert modelgen.param_count(_meta_text(p)) == 123_060_480
    assert modelgen.param_count(_meta_text(p, second=True)) == 694_659_840
    c = unet.config
    assert (tuple(c.transformer_layers_per_block), c.addition_embed_type, c.cross_attention_dim,
            c.projection_class_embeddings_input_dim) == ((1, 2, 10), "text_time", 2048, 2816)
    # 2816 = bigG's pooled 1280 + 6 size/crop ids x 256: what the UNet's added conditioning reads.
    assert 1280 + 6 * c.addition_time_embed_dim == 2816 == p.text_2["projection_dim"] + 1536
    assert p.vae["scaling_factor"] == 0.13025 and p.default_size == 1024 and p.storage_dtype == "fp16"
    assert modelgen.get_preset("sdxl-turbo").default_size == 512


def test_tiny_sdxl_added_conditioning_flops_match_a_hand_calculation():
    pytest.importorskip("diffusers")
    from sdagent.measuring.flops import flops_by_module, unet_call_flops, unet_inputs
    from sdagent.pipeline import modelgen

    unet = modelgen.build_unet(modelgen.get_preset("tiny-sdxl"), device="meta")
    args, kw = unet_inputs(unet, 8, 8, batch=2)
    assert kw["added_cond_kwargs"]["text_embeds"].shape == (2, 32)  # 80 - 6 x 8
    by = flops_by_module(lambda: unet(*args, **kw))
    temb = 4 * 32  # the time embedding's width: 4 x block_out_channels[0]
    # add_embedding: Linear(80 -> 128), SiLU, Linear(128 -> 128), per row of the guided batch of 2.
    assert by["UNet2DConditionModel.add_embedding"] == 2 * 2 * (80 * temb + temb * temb)
    assert unet_call_flops(unet, 8, 8, batch=2) == by["UNet2DConditionModel"]


# ---------------------------------------------------------------------------
# The tiny directories: detection, loading, FLOPs, storage dtype
# ---------------------------------------------------------------------------


def test_tiny_directories_are_their_families(tiny_sd21, tiny_sdxl, tiny_lcm):
    from sdagent.measuring.flops import count_model_flops
    from sdagent.pipeline.modeldir import check_model_dir

    for path, family in ((tiny_sd21, "sd2-v"), (tiny_sdxl, "sdxl"), (tiny_lcm, "lcm")):
        md = check_model_dir(path)
        assert md.family.name == family and md.pipeline_class == FAMILIES[family].pipeline_class
        marker = json.loads((path / "sdagent-model.json").read_text())
        assert marker["family"] == family
        # the configs alone say the same (a real directory has no marker)
        idx = json.loads((path / "model_index.json").read_text())
        unet = json.loads((path / "unet" / "config.json").read_text())
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        assert detect_family(idx, unet, sched).name == family
    xl = count_model_flops(tiny_sdxl, 64, 64)
    one = count_model_flops(tiny_sd21, 64, 64).text_encoder  # the same tiny CLIP width, one encoder
    assert xl.text_encoder == 2 * one + 2 * 32 * 32  # both encoders, plus bigG's 32x32 projection
    assert count_model_flops(tiny_lcm, 64, 64).unet_batch == 1  # guidance embedding: no guided batch


def test_sdxl_without_its_second_text_encoder_is_one_line(tiny_sdxl, tmp_path):
    from sdagent.pipeline.modeldir import check_model_dir

    for part in ("text_encoder_2", "tokenizer_2"):
        d = tmp_path / part
        shutil.copytree(tiny_sdxl, d)
        shutil.rmtree(d / part)
        with pytest.raises(BadInput) as ei:
            check_model_dir(d)
        assert "\n" not in str(ei.value) and f"lacks component(s): {part} (" in str(ei.value)


def test_fp16_storage_halves_the_files_and_loads_as_fp32(tiny_model, tmp_path):
    import torch

    from sdagent.pipeline.loader import load_diffusers_pipeline
    from sdagent.pipeline.modelgen import create_model
    from sdagent.pipeline.modeldir import check_model_dir
    from sdagent.pipeline.workload import Workload, held_weight_bytes, loaded_weight_bytes, memory_estimate_bytes

    made = create_model("tiny", tmp_path / "h", dtype="fp16")
    assert made.storage_dtype == "fp16"
    f16 = tmp_path / "h" / "unet" / "diffusion_pytorch_model.safetensors"
    f32 = tiny_model / "unet" / "diffusion_pytorch_model.safetensors"
    assert f16.stat().st_size < 0.55 * f32.stat().st_size
    assert loaded_weight_bytes(f16) == 2 * f16.stat().st_size and loaded_weight_bytes(f32) == f32.stat().st_size
    # at its peak a process holds the fp32 tensors plus the file's mapping: 1.5x the loaded size for a
    # 16-bit file, 2.15x for a 32-bit one (docs/results/memory.md); the same model estimates less in fp16
    assert held_weight_bytes(f16) == int(2 * f16.stat().st_size * 1.5)
    assert held_weight_bytes(f32) == int(f32.stat().st_size * 2.15)
    w = Workload(height=64, width=64)
    assert memory_estimate_bytes(check_model_dir(tmp_path / "h"), w) < memory_estimate_bytes(check_model_dir(tiny_model), w)
    pipe = load_diffusers_pipeline(tmp_path / "h")
    assert {p.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()} == {torch.float32}
    with pytest.raises(BadInput, match="unknown storage dtype 'int8'"):
        create_model("tiny", tmp_path / "q", dtype="int8")


# ---------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------

EAGER = ["--backend", "native", "--precision", "fp32", "--no-compile"]


@pytest.mark.parametrize("fixture, cls", [("tiny_sd21", "StableDiffusionPipeline"),
                                          ("tiny_sdxl", "StableDiffusionXLPipeline"),
                                          ("tiny_lcm", "LatentConsistencyModelPipeline")])
def test_run_each_family(sdagent_in_process, request, tmp_path, fixture, cls):
    model = request.getfixturevalue(fixture)
    out = tmp_path / "x.png"
    code, stdout, err = sdagent_in_process("run", "--model", str(model), "--prompt", "a red ship", "--steps", "1",
                                *EAGER, "-o", str(out), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["workload"]["height"] == 64 and r["workload"]["steps"] == 1 and out.is_file()
    expected_guidance = {"StableDiffusionXLPipeline": 5.0, "LatentConsistencyModelPipeline": 8.5}.get(cls, 7.5)
    assert r["workload"]["guidance"] == expected_guidance
    assert r["timings"]["text_encode_s"] > 0 and len(r["timings"]["unet_steps_s"]) == 1


def test_bench_sd21_sdxl_and_lcm_defaults_with_the_warning(sdagent_in_process, tiny_sd21, tiny_sdxl, tiny_lcm):
    for model, name in ((tiny_sd21, "tiny-sd21"), (tiny_sdxl, "tiny-sdxl")):
        code, stdout, err = sdagent_in_process("bench", "--model", str(model), "--steps", "1", "--runs", "2",
                                               "--warmup", "0", *EAGER, "--json")
        assert code == 0, err
        d = json.loads(stdout)
        assert d["workload"]["steps"] == 1 and d["latency_s"]["n"] == 2 and d["model"] == name
    code, stdout, err = sdagent_in_process("bench", "--model", str(tiny_lcm), "--runs", "1", "--warmup", "0",
                                "--guidance", "3", *EAGER, "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["workload"]["steps"] == 4 and d["workload"]["guidance"] == 3.0  # LCM's steps, the given scale
    assert d["unet_step_s"]["n"] == 4
    warn = [ln for ln in err.splitlines() if ln.startswith("sdagent: warning: --guidance 3")]
    assert len(warn) == 1 and "embedding" in warn[0]


# ---------------------------------------------------------------------------
# The compiled path: SDXL's added conditioning and LCM's embedding reach the package
# ---------------------------------------------------------------------------


def test_unet_runner_routes_the_family_inputs_to_the_compiled_path():
    """The package of an SDXL UNet takes (latents, t, text, text_embeds, time_ids): the runner hands the
    pipeline's added_cond_kwargs to it (a stand-in here; `sdagent model compile` builds the real one),
    and UNetCall, what is exported, computes the UNet's own output from the same tensors."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from sdagent.pipeline import modelgen
    from sdagent.pipeline.components import UNetCall, UNetRunner
    from sdagent.pipeline.family import unet_extra_shapes

    assert tuple(unet_extra_shapes(modelgen.get_preset("tiny-lcm").unet, 1)) == ("timestep_cond",)
    torch.manual_seed(0)
    unet = modelgen.build_unet(modelgen.get_preset("tiny-sdxl")).eval()
    names = tuple(unet_extra_shapes(unet.config, 2))
    assert names == ("text_embeds", "time_ids")
    seen = []

    def fast(*a):
        seen.append([tuple(x.shape) for x in a])
        return torch.zeros(2, 4, 8, 8)

    u = UNetRunner(unet, fast, unet, "aot", "fp32", ((2, 4, 8, 8), (2, 77, 64), (2, 32), (2, 6)), "id")
    u.extra_names = names
    s, h = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    u(s, 10, encoder_hidden_states=h, added_cond_kwargs=added, return_dict=False)
    assert seen == [[(2, 4, 8, 8), (), (2, 77, 64), (2, 32), (2, 6)]] and u.fallbacks == 0
    assert u.seen["path"] == "fast" and u.seen["mode"] == "aot"
    u(s[:1], 10, encoder_hidden_states=h[:1], added_cond_kwargs={k: v[:1] for k, v in added.items()})
    assert u.fallbacks == 1 and len(seen) == 1  # a shape the package was not built for runs eager
    with torch.no_grad():
        ref = unet(s, 10.0, encoder_hidden_states=h, added_cond_kwargs=added).sample
        got = UNetCall(unet, "fp32", names)(s, torch.tensor(10.0), h, added["text_embeds"], added["time_ids"])
    assert torch.equal(got, ref)


@pytest.mark.slow
def test_verify_passes_on_tiny_sdxl(tiny_sdxl, tmp_path):
    """verify under the plan, through the CLI in a fresh process (what a fleet's timer runs), on SDXL."""
    import yaml

    from clirun import PY, sdagent

    targets = tmp_path / "t.yml"
    targets.write_text(yaml.safe_dump([{"name": "xl-smoke", "match": {"model": "tiny-sdxl"}, "p50_s": 120,
                                        "p90_s": 240, "min_runs": 5, "bf16_max_diff": 0.05}]))
    r = sdagent("exec", "--", PY, "-m", "sdagent", "verify", "--model", str(tiny_sdxl), "--targets",
                str(targets), "--steps", "1", "--warmup", "1", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["verdict"] == "pass" and d["target"]["name"] == "xl-smoke" and d["host_key"]["model"] == "tiny-sdxl"
    checks = {c["name"]: c["status"] for c in d["checks"]}
    assert checks["image_finite"] == checks["image_not_blank"] == checks["latency_p50"] == "pass"


def test_sdxl_second_text_encoder_runs_in_the_plans_precision(tiny_sdxl):
    """Both SDXL encoders compute in the plan's bf16 (autocast inside each part), not only the first."""
    from dataclasses import replace

    from sdagent.pipeline.backends import ready
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.runspec import STOCK_RUN

    w = Workload(steps=1, height=64, width=64, guidance=5.0)
    p = ready(tiny_sdxl, replace(STOCK_RUN, precision="bf16"), w)
    computed = {}
    for name in ("text_encoder", "text_encoder_2"):  # a Linear's output: bf16 only under the autocast
        fc1 = next(m for n, m in getattr(p.pipe, name).original.named_modules() if n.endswith("mlp.fc1"))
        fc1.register_forward_hook(lambda _m, _a, out, name=name: computed.setdefault(name, str(out.dtype)) and None)
    g = p.generate(w)
    assert g.array.shape == (64, 64, 3) and g.text_encode_s > 0
    assert computed == {"text_encoder": "torch.bfloat16", "text_encoder_2": "torch.bfloat16"}
    assert p.pipe.text_encoder_2.seen["param_dtype"] == "float32" and p.pipe.unet.seen["out_dtype"] == "bfloat16"


def test_help_states_the_family_defaults_from_the_same_table():
    from click.testing import CliRunner

    from sdagent.cli import cli
    from sdagent.pipeline.family import guidance_help, steps_help

    out = " ".join(CliRunner().invoke(cli, ["bench", "--help"]).output.split())
    assert "sd-turbo 1 (1-4)" in steps_help() and "lcm 8.5 as an embedding" in guidance_help()
    for text in (steps_help(), guidance_help()):
        assert " ".join(text.split()) in out.replace("- ", "-")
