"""The few-step ladder (issue 23 item 5): the workload list, the runs, the argument check and the table (pure;
no model is created or run here)."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from sdagent.errors import BadInput
from sdagent.measuring import ladder_fewstep as F


def test_the_workloads_are_fastsd_cpus():
    got = {w.name: (w.preset, w.family, w.tae_preset, w.vae, w.height, w.width, w.steps) for w in F.FEW_STEP}
    assert got == {
        "sd-turbo-taesd": ("sd-turbo", "sd-turbo", "taesd", "tiny", 512, 512, 1),
        "sd-turbo-full-vae": ("sd-turbo", "sd-turbo", None, "full", 512, 512, 1),
        "sdxl-turbo-taesdxl": ("sdxl-turbo", "sdxl-turbo", "taesdxl", "tiny", 512, 512, 1),
        "lcm-sd15": ("lcm", "lcm", None, "full", 512, 512, 4),
    }
    assert all(w.peer for w in F.FEW_STEP)  # OpenVINO GenAI runs SD 2.x, SDXL and LCM
    assert [w.published for w in F.FEW_STEP] == ["SD-Turbo 1 step 1.7 s", None, None, "SDXL-Turbo 1 step 2.5 s"]
    assert F.FEW_STEP[-1].family == "sdxl-turbo"  # the heaviest last: the others finish first


def test_each_workload_names_a_registered_preset_of_its_family():
    """The presets exist (model create would refuse otherwise) and are the family the workload says (registry only,
    no weights built)."""
    pytest.importorskip("diffusers")
    from sdagent.pipeline import modelgen
    from sdagent.pipeline.modelgen_tae import TAE_PRESETS  # importing it registers the tiny autoencoders
    from sdagent.pipeline.family import FAMILIES

    for w in F.FEW_STEP:
        p = modelgen.get_preset(w.preset)
        assert p.family == w.family and w.family in FAMILIES and p.default_size == 512
        if w.tae_preset:
            assert w.tae_preset in modelgen.WRITERS and w.tae_preset in TAE_PRESETS
    lcm = modelgen.get_preset("lcm")
    assert lcm.unet["time_cond_proj_dim"] == 256 and lcm.scheduler["_class_name"] == "LCMScheduler"
    sd15 = modelgen.get_preset("sd15")
    assert {k: v for k, v in lcm.unet.items() if k != "time_cond_proj_dim"} == sd15.unet
    # SD-1.5's UNet plus the guidance embedding's projection (Linear 256 -> 320, no bias), on the meta device
    extra = modelgen.param_count(modelgen.build_unet(lcm, device="meta")) - \
        modelgen.param_count(modelgen.build_unet(sd15, device="meta"))
    assert extra == 256 * 320


def test_runs_put_the_tiny_autoencoder_in_the_models_vae_tiny(tmp_path):
    runs = F.few_step_runs(tmp_path / "m", tmp_path / "o")
    assert [r.workload.name for r in runs] == [w.name for w in F.FEW_STEP]
    r = runs[0]
    assert r.model_dir == tmp_path / "m" / "sd-turbo" and r.tae_dir == tmp_path / "m" / "sd-turbo" / "vae_tiny"
    assert r.out_dir == tmp_path / "o" / "sd-turbo-taesd" and runs[1].tae_dir is None
    assert runs[1].model_dir == r.model_dir  # one SD-Turbo directory, two plans (vae tiny | full)
    fields = shlex.split(r.shell_line())
    assert fields == ["sd-turbo-taesd", "sd-turbo", str(r.model_dir), "taesd", str(r.tae_dir), str(r.out_dir),
                      "tiny", "1", "512", "512", "openvino"]
    assert shlex.split(runs[2].shell_line())[3:5] == ["-", "-"]  # lcm: its own VAE
    only = F.few_step_runs("m", "o", only=["lcm-sd15"])
    assert [x.workload.name for x in only] == ["lcm-sd15"]
    with pytest.raises(BadInput, match="unknown few-step workload 'sdxs'"):
        F.few_step_runs("m", "o", only=["sdxs"])


def test_a_family_the_peer_does_not_run_goes_without_it():
    w = replace(F.FEW_STEP[2], name="x", family="lcm-sdxl")
    assert not w.peer
    (r,) = F.few_step_runs("m", "o", workloads=[w])
    assert shlex.split(r.shell_line())[-1] == "no-openvino"


@pytest.mark.parametrize("extra", [["--steps", "2"], ["--model=/x"], ["--rounds", "1", "--height", "256"],
                                   ["--quick"], ["--out-dir", "d"]])
def test_options_the_workloads_fix_are_refused_in_one_line(extra, capsys):
    with pytest.raises(BadInput) as exc:
        F.check_extra_args(extra)
    assert "with --few-step" in str(exc.value) and "\n" not in str(exc.value)
    assert F.main(["runs", "m", "o", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdagent: error: invalid --") and err.count("\n") == 1


def test_main_prints_one_line_per_run_with_the_users_options_allowed(capsys):
    assert F.main(["runs", "m", "o", "--rounds", "1", "--no-compile", "--step-size", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [shlex.split(x)[0] for x in lines] == [w.name for w in F.FEW_STEP]
    assert F.main(["nonsense"]) == 2


def _ladder_json(s: float, first: float, peer_s: float) -> dict:
    return {"shipped_rung": "tuned+backend", "machine": {"cpu_model": "Test CPU"},
            "rungs": [{"rung": "tuned+backend", "latency_s": {"median": s}, "first_image_s": {"median": first},
                       "speedup_vs_openvino": {"median": peer_s / s}, "failed": None},
                      {"rung": "openvino", "latency_s": {"median": peer_s}, "first_image_s": {"median": 9.0},
                       "failed": None}]}


def test_the_table_puts_images_per_min_and_start_up_beside_latency(tmp_path, capsys):
    d = tmp_path / "sd-turbo-taesd"
    d.mkdir()
    (d / "ladder.json").write_text(json.dumps(_ladder_json(2.0, 6.5, 3.0)))
    assert F.main(["table", str(tmp_path)]) == 0
    md = (tmp_path / "few-step.md").read_text()
    assert md == capsys.readouterr().out
    row = next(x for x in md.splitlines() if x.startswith("| sd-turbo-taesd"))
    assert row == ("| sd-turbo-taesd | tuned+backend | 2.00 | 30.0 | 6.50 | 3.00 | 20.0 | 9.00 | 1.50 "
                   "| SD-Turbo 1 step 1.7 s |")
    assert "| lcm-sd15 | not run |" in md and "Measured on: Test CPU." in md
    assert "Core i7-12700" in md and "not measured here" in md
    rows = json.loads((tmp_path / "few-step.json").read_text())["rows"]
    assert rows[0]["images_per_min"] == 30.0 and rows[1]["missing"] == "not run"


def test_ladder_sh_knows_the_mode():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "ladder.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "--few-step" in text and "sdagent.measuring.ladder_fewstep runs" in text
    assert "ladder_fewstep table" in text


def test_the_default_rungs_are_valid_names_and_printed_for_the_script(capsys):
    from sdagent.measuring.ladder_run import parse_rungs

    assert set(parse_rungs(F.DEFAULT_RUNGS)) >= {"vanilla", "shipped", "openvino"}  # what few_step_row reads
    assert F.main(["rungs"]) == 0 and capsys.readouterr().out.strip() == F.DEFAULT_RUNGS
