"""`sdagent model create` and `sdagent run` through the real entry point (exit codes, one-line errors)."""

from __future__ import annotations

import json

import pytest

from hosts import HOSTS, write_tree
from sdagent.host.software import ipex_status

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SMALL = ["--steps", "2", "--height", "64", "--width", "64"]




def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdagent: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_run_writes_png_and_reports_json(sdagent_in_process, tiny_model, tmp_path):
    out = tmp_path / "ship.png"
    code, stdout, err = sdagent_in_process("run", "--model", str(tiny_model), "--prompt", "sailing ship in storm",
                                *SMALL, "--scheduler", "dpm", "--backend", "native", "--precision", "fp32",
                                "--seed", "7", "-o", str(out), "--json")
    assert code == 0, err
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"
        import numpy as np

        assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 10  # not a blank image
    r = json.loads(stdout)
    assert r["output"] == str(out) and r["preset"] == "tiny"
    assert r["run"]["backend"] == "native" and r["run"]["precision"] == "fp32"
    assert r["scheduler"] == "DPMSolverMultistepScheduler"
    assert r["workload"]["seed"] == 7 and r["workload"]["steps"] == 2
    t = r["timings"]
    assert len(t["unet_steps_s"]) == 2 and t["total_s"] >= t["unet_s"] > 0
    assert t["text_encode_s"] > 0 and t["vae_decode_s"] > 0
    assert any("channels_last" in n for n in r["notes"])
    assert r["versions"]["torch"] and r["versions"]["diffusers"]
    assert [p.name for p in tmp_path.iterdir()] == ["ship.png"]  # no temp file left beside it


def test_run_human_output_and_same_seed_same_png(sdagent_in_process, tiny_model, tmp_path):
    args = ["run", "--model", str(tiny_model), "--prompt", "a red car", *SMALL, "--backend", "native",
            "--precision", "fp32", "--negative-prompt", "blurry"]
    code, stdout, err = sdagent_in_process(*args, "-o", str(tmp_path / "a.png"))
    assert code == 0, err
    assert stdout.startswith(f"wrote {tmp_path / 'a.png'} (64x64) in ")
    assert "UNet 3 x" in stdout  # PNDM (the model's default): steps + 1 UNet calls
    assert "native fp32, channels_last, eager, scheduler PNDMScheduler" in stdout
    assert sdagent_in_process(*args, "-o", str(tmp_path / "b.png"))[0] == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_bf16_on_a_cpu_without_native_bf16_warns(sdagent_in_process, tiny_model, tmp_path):
    root = write_tree(tmp_path / "epyc", HOSTS["epyc-2core-avx2"])
    code, stdout, err = sdagent_in_process("--sysroot", str(root), "run", "--model", str(tiny_model),
                                "--prompt", "ship",
                                *SMALL, "--backend", "native", "--precision", "bf16",
                                "-o", str(tmp_path / "x.png"), "--json")
    assert code == 0, err
    assert "sdagent: warning: precision=bf16 on a CPU without AMX-BF16/AVX512-BF16: bf16 is emulated" in err
    r = json.loads(stdout)
    assert r["run"]["precision"] == "bf16" and any("emulated" in n for n in r["notes"])


def test_auto_follows_the_plan(sdagent_in_process, tiny_model, tmp_path):
    """--backend/--precision auto take the plan's values for the topology given."""
    root = write_tree(tmp_path / "epyc", HOSTS["epyc-2core-avx2"])
    code, stdout, err = sdagent_in_process("--sysroot", str(root), "run", "--model", str(tiny_model),
                                "--prompt", "ship",
                                *SMALL, "-o", str(tmp_path / "x.png"), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["run"]["precision"] == "fp32"  # AVX2 only: the plan says fp32
    assert r["run"]["backend"] == ("ipex" if ipex_status().usable else "native")
    assert r["run"]["weights_prepack"] is False  # no AVX512-BW/VL/DQ in that fixture


@pytest.mark.parametrize("extra, needles", [
    (["--scheduler", "karras"], ["unknown scheduler 'karras'", "dpm", "euler_a"]),
    (["--height", "100"], ["invalid height 100"]),
    (["--steps", "0"], ["invalid steps 0"]),
])
def test_bad_workload_is_exit_2_one_line(sdagent_in_process, tiny_model, tmp_path, extra, needles):
    out = tmp_path / "x.png"
    code, stdout, err = sdagent_in_process("run", "--model", str(tiny_model), "--prompt", "ship", *SMALL, *extra,
                                "-o", str(out))
    assert code == 2
    one_line_error(err, *needles)
    assert not out.exists()


def test_output_in_missing_directory_fails_before_any_work(sdagent_in_process, tmp_path):
    # The model directory does not exist either: the output is checked first, before any loading.
    code, _, err = sdagent_in_process("run", "--model", str(tmp_path / "nomodel"), "--prompt", "ship",
                           "-o", str(tmp_path / "missing" / "x.png"))
    assert code == 2
    one_line_error(err, "output directory does not exist", str(tmp_path / "missing"))


def test_bad_model_dirs_are_exit_2_one_line(sdagent_in_process, tiny_model, tmp_path):
    import shutil

    base = ["run", "--prompt", "ship", *SMALL, "-o", str(tmp_path / "x.png")]
    code, _, err = sdagent_in_process(*base, "--model", str(tmp_path / "nomodel"))
    assert code == 2
    one_line_error(err, f"model directory not found: {tmp_path / 'nomodel'}")
    (tmp_path / "empty").mkdir()
    code, _, err = sdagent_in_process(*base, "--model", str(tmp_path / "empty"))
    assert code == 2
    one_line_error(err, "not a diffusers pipeline directory", str(tmp_path / "empty"))
    bad = tmp_path / "trunc"
    shutil.copytree(tiny_model, bad)
    f = bad / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:5000])
    code, _, err = sdagent_in_process(*base, "--model", str(bad))
    assert code == 2
    one_line_error(err, f"corrupt weights file {f}: truncated")
    assert not (tmp_path / "x.png").exists()


def test_backend_ipex_without_ipex_says_how_to_install(sdagent_in_process, tiny_model, tmp_path):
    if ipex_status().usable:
        pytest.skip("IPEX is usable here (tests/test_ipex.py runs it)")
    code, _, err = sdagent_in_process("run", "--model", str(tiny_model), "--prompt", "ship", "--backend", "ipex",
                           "-o", str(tmp_path / "x.png"))
    assert code == 2
    one_line_error(err, "backend ipex is not usable here", "pip install 'sdagent[ipex]'", "separate venv",
                   "torch 2.8")


def test_model_create_cli(sdagent_in_process, tmp_path):
    d = tmp_path / "tiny"
    code, stdout, err = sdagent_in_process("model", "create", "--preset", "tiny", str(d), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["path"] == str(d) and r["preset"] == "tiny" and "tokenizer/vocab.json" in r["files"]
    assert (d / "model_index.json").is_file()
    code, _, err = sdagent_in_process("model", "create", "--preset", "tiny", str(d))
    assert code == 2
    one_line_error(err, f"model directory is not empty: {d}", "--force")
    code, stdout, err = sdagent_in_process("model", "create", "--preset", "tiny", "--force", "--seed", "1", str(d))
    assert code == 0 and stdout.startswith(f"wrote tiny pipeline to {d} in "), err
    assert json.loads((d / "sdagent-model.json").read_text())["seed"] == 1
    code, _, err = sdagent_in_process("model", "create", "--preset", "tiny", str(tmp_path / "no" / "m"))
    assert code == 2
    one_line_error(err, "parent directory does not exist")
    code, _, err = sdagent_in_process("model", "create", "--preset", "huge", str(tmp_path / "m"))
    assert code == 2 and "huge" in err and not (tmp_path / "m").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # nothing else written
