"""The fidelity gate (measuring/fidelity.py): PSNR/SSIM on synthetic images, the bound's range checks, the rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sdagent.errors import BadInput, Exit
from sdagent.measuring.fidelity import (BOUND_RANGES, DEFAULT_BOUND, Fidelity, FidelityBound, measure,
                                        pair_fidelity, parse_bound, passes_gate)


def _image(seed: int = 0, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=(side, side, 3))


def test_identical_images_give_inf_psnr_and_ssim_one() -> None:
    img = _image()
    psnr, ssim = pair_fidelity(img, img.copy())
    assert math.isinf(psnr) and ssim == 1.0
    fid = measure([img, _image(1)], [img, _image(1)], "fp32 eager")
    assert math.isinf(fid.psnr_db) and fid.ssim == 1.0 and fid.n_images == 2


def test_known_noise_gives_known_psnr() -> None:
    # +-d on every pixel (no clipping: values stay in [0.2-d, 0.8+d]): MSE = d^2, PSNR = -20 log10(d).
    img = _image()
    d = 0.01
    sign = np.where(np.random.default_rng(5).random(img.shape) < 0.5, -1.0, 1.0)
    psnr, ssim = pair_fidelity(img + d * sign, img)
    assert psnr == pytest.approx(40.0, abs=1e-6)
    assert 0.5 < ssim < 1.0
    psnr2, ssim2 = pair_fidelity(img + 0.1 * sign, img)
    assert psnr2 == pytest.approx(20.0, abs=1e-6) and ssim2 < ssim


def test_uint8_and_float_agree_and_the_worst_pair_decides() -> None:
    ref = (_image() * 255).round().astype(np.uint8)
    noisy = ref.astype(np.int16)
    noisy[::2] += 2
    noisy = noisy.astype(np.uint8)
    a = pair_fidelity(noisy, ref)
    b = pair_fidelity(noisy.astype(np.float64) / 255, ref.astype(np.float64) / 255)
    assert a == pytest.approx(b)
    fid = measure([ref, noisy], [ref, ref], "fp32")
    assert fid.psnr_db == pytest.approx(a[0]) and fid.ssim == pytest.approx(a[1])
    assert fid.per_image[0] == (math.inf, 1.0)


@pytest.mark.parametrize("cands, refs, words", [
    ([_image()], [], "against 0 reference"),
    ([], [], "at least one"),
    ([_image(side=32)], [_image(side=16)], "differ in shape"),
    ([_image(side=5)], [_image(side=5)], "window"),
    ([_image() * 3], [_image()], "[0, 1] scale"),
    ([np.full((8, 8, 3), np.nan)], [np.zeros((8, 8, 3))], "NaN"),
])
def test_bad_images_are_one_line(cands, refs, words) -> None:
    with pytest.raises(BadInput, match=None) as e:
        measure(cands, refs, "fp32")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_record_round_trips_through_json_with_inf() -> None:
    fid = measure([_image()], [_image()], "fp32 eager, full VAE")
    d = json.loads(json.dumps(fid.to_dict(), allow_nan=False))
    assert d["psnr_db"] == "inf" and d["format"] == "sdagent-fidelity/1"
    assert Fidelity.from_dict(d) == fid


BF16 = Fidelity(psnr_db=35.0, ssim=0.95, n_images=2, reference="fp32")


def _fid(psnr: float, ssim: float) -> Fidelity:
    return Fidelity(psnr_db=psnr, ssim=ssim, n_images=2, reference="fp32")


def test_default_gate_is_relative_to_bf16() -> None:
    assert DEFAULT_BOUND.relative_to == "bf16" and DEFAULT_BOUND.psnr_margin_db == 0
    assert passes_gate(_fid(35.0, 0.95), DEFAULT_BOUND, BF16).passed
    no = passes_gate(_fid(34.9, 0.96), DEFAULT_BOUND, BF16)
    assert not no.passed and "PSNR 34.9 dB < bf16's 35.0" in no.reason
    assert not passes_gate(_fid(36.0, 0.94), DEFAULT_BOUND, BF16).passed
    # fails closed without the bf16 measurement
    closed = passes_gate(_fid(99.0, 1.0), DEFAULT_BOUND, None)
    assert not closed.passed and "no bf16" in closed.reason


def test_margins_and_absolute_floors() -> None:
    loose = FidelityBound(psnr_margin_db=5, ssim_margin=0.1)
    assert passes_gate(_fid(30.0, 0.85), loose, BF16).passed
    assert not passes_gate(_fid(29.9, 0.85), loose, BF16).passed
    absolute = FidelityBound(relative_to="none", min_psnr_db=30, min_ssim=0.9)
    ok = passes_gate(_fid(30.0, 0.9), absolute, None)
    assert ok.passed and "PSNR 30.0 dB / SSIM 0.900" in ok.reason and "bound: PSNR >= 30 dB" in ok.reason
    assert not passes_gate(_fid(30.0, 0.89), absolute, None).passed
    assert passes_gate(_fid(math.inf, 1.0), absolute, None).passed


@pytest.mark.parametrize("field", sorted(BOUND_RANGES))
def test_bound_out_of_range_is_one_line_exit_2(field: str) -> None:
    lo, hi = BOUND_RANGES[field]
    for bad in (lo - 0.5, hi + 0.5):
        with pytest.raises(BadInput) as e:
            FidelityBound(**{field: bad})
        assert e.value.exit_code == Exit.USAGE and field in str(e.value) and "range" in str(e.value)
    FidelityBound(**{field: hi})  # the edges are in range


@pytest.mark.parametrize("text, words", [
    ("min_psnr_db=200", "outside its range"),
    ("min_ssim=abc", "not a number"),
    ("psnr=30", "unknown key 'psnr'"),
    ("relative_to=fp16", "must be one of"),
    ("relative_to=none", "bounds nothing"),
    ("min_ssim", "KEY=VALUE"),
    ("", "empty"),
    ("min_psnr_db=nan", "finite"),
    ("min_psnr_db=30,min_psnr_db=40", "given twice"),
])
def test_parse_bound_refuses_in_one_line(text: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        parse_bound(text)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_parse_bound_and_round_trip() -> None:
    b = parse_bound("relative_to=none, min_psnr_db=28.5,min_ssim=0.9")
    assert b == FidelityBound(relative_to="none", min_psnr_db=28.5, min_ssim=0.9)
    assert FidelityBound.from_dict(json.loads(json.dumps(b.to_dict()))) == b
