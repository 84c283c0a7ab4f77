"""A non-finite image is an error in every command (issue 19 item 11): one line naming the part that
produced the first NaN/Inf, exit 7, no image written. Fixture: the tiny model with one tensor poisoned.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from clirun import PY, clean_env, sdagent

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

SMALL = ("--steps", "2", "--height", "64", "--width", "64")

#: part -> (weights file, tensor set to NaN): the last layer of each, so nothing before it is touched.
POISON = {
    "unet": ("unet/diffusion_pytorch_model.safetensors", "conv_out.bias"),
    "vae_decoder": ("vae/diffusion_pytorch_model.safetensors", "decoder.conv_out.bias"),
    "text_encoder": ("text_encoder/model.safetensors", "text_model.final_layer_norm.weight"),
}


def poisoned(tiny_model: Path, dest: Path, part: str) -> Path:
    """A copy of the tiny model whose `part` outputs NaN (a bad checkpoint)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_model, dest)
    rel, name = POISON[part]
    tensors = load_file(dest / rel)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, dest / rel, metadata={"format": "pt"})
    return dest


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("sdagent:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def env_for(tmp_path: Path) -> dict[str, str]:
    return clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "bench.lock"), SDAGENT_CACHE=str(tmp_path / "cache"))


def test_check_finite_names_the_part():
    from sdagent.pipeline.generate import NonFiniteOutput, check_finite

    check_finite("the UNet", torch.zeros(2, 4))
    check_finite("the UNet", (torch.zeros(2), None))
    bad = torch.zeros(2, 4)
    bad[1, 2] = float("inf")
    with pytest.raises(NonFiniteOutput, match=r"^the image is not finite: the VAE decoder produced NaN/Inf "
                                              r"first \(1 of 8 values\)") as ei:
        check_finite("the VAE decoder", (bad,))
    assert ei.value.exit_code == 7


def test_run_with_a_nan_unet_is_exit_7_naming_the_unet_and_writes_nothing(tiny_model, tmp_path):
    model = poisoned(tiny_model, tmp_path / "nan-unet", "unet")
    out = tmp_path / "out.png"
    r = sdagent("run", "--model", str(model), "--prompt", "p", *SMALL, "--backend", "native", "-o", str(out),
                env=env_for(tmp_path))
    assert r.returncode == 7, r.stderr[-3000:]
    line = one_line(r.stderr)
    assert "the image is not finite: the UNet at step 1 of 2 produced NaN/Inf" in line, line
    assert not out.exists()


def test_bench_with_a_nan_vae_decoder_is_exit_7_naming_the_decoder(tiny_model, tmp_path):
    model = poisoned(tiny_model, tmp_path / "nan-vae", "vae_decoder")
    r = sdagent("bench", "--model", str(model), *SMALL, "--runs", "2", "--warmup", "0", "--json",
                env=env_for(tmp_path))
    assert r.returncode == 7, r.stderr[-3000:]
    assert "the VAE decoder produced NaN/Inf" in one_line(r.stderr)
    assert r.stdout == ""  # no figures of a black image


def test_verify_with_a_nan_text_encoder_is_exit_7_with_the_error_recorded(tiny_model, tmp_path):
    model = poisoned(tiny_model, tmp_path / "nan-te", "text_encoder")
    targets = tmp_path / "targets.yml"
    targets.write_text(yaml.safe_dump([{"name": "smoke", "match": {"model": "tiny"}, "p50_s": 120,
                                        "min_runs": 5}]))
    report = tmp_path / "verify.json"
    r = sdagent("exec", "--", PY, "-m", "sdagent", "verify", "--model", str(model), "--targets", str(targets),
                *SMALL, "--report", str(report), env=env_for(tmp_path))
    assert r.returncode == 7, r.stdout[-2000:] + r.stderr[-3000:]
    assert "the text encoder produced NaN/Inf" in one_line(r.stderr)
    rec = json.loads(report.read_text())
    assert rec["exit_code"] == 7 and "the text encoder produced NaN/Inf" in rec["error"]["reason"]
