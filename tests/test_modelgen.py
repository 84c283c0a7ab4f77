"""sdagent.modelgen: the generated tokenizer, the presets' architectures, the written directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sdagent.errors import BadInput, SdagentError
from sdagent.pipeline import modelgen

# ---------------------------------------------------------------------------
# The tokenizer files (pure)
# ---------------------------------------------------------------------------


def test_vocab_has_clip_layout():
    vocab, merges = modelgen.clip_tokenizer_files()
    ids = sorted(vocab.values())
    assert ids == list(range(len(vocab)))  # dense ids
    byte_chars = list(modelgen.bytes_to_unicode().values())
    assert len(set(byte_chars)) == 256
    assert [vocab[c] for c in byte_chars] == list(range(256))  # every byte, then every byte + </w>
    assert [vocab[c + "</w>"] for c in byte_chars] == list(range(256, 512))
    assert (vocab[modelgen.BOS], vocab[modelgen.EOS]) == (len(vocab) - 2, len(vocab) - 1)


def test_every_merge_joins_known_tokens_into_a_known_token():
    vocab, merges = modelgen.clip_tokenizer_files()
    assert len(merges) == len(set(merges)) > 50
    for m in merges:
        a, b = m.split(" ")
        assert a in vocab and b in vocab and a + b in vocab, m


def test_bpe_merges_best_ranked_pair_first():
    ranks = {("a", "n"): 0, ("r", "a"): 1, ("an", "d</w>"): 2}
    assert modelgen.bpe(["r", "a", "n", "d</w>"], ranks) == ["r", "and</w>"]
    assert modelgen.bpe(["a", "n", "a", "n"], ranks) == ["an", "an"]
    assert modelgen.bpe(["x"], ranks) == ["x"]


def _tokenizer_from_vocab_and_merges_only(tmp_path: Path):
    """What transformers 4 reads: vocab.json + merges.txt (no tokenizer.json)."""
    from transformers import CLIPTokenizer

    vocab, merges = modelgen.clip_tokenizer_files()
    modelgen.write_tokenizer_files(tmp_path, vocab, merges)
    assert not (tmp_path / "tokenizer.json").exists()
    return CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True), vocab


def test_tokenizer_loads_from_vocab_and_merges_and_merges_whole_words(tmp_path):
    pytest.importorskip("transformers")
    tok, vocab = _tokenizer_from_vocab_and_merges_only(tmp_path)
    ids = tok("Sailing ship in storm by Rembrandt").input_ids
    words = ["sailing", "ship", "in", "storm", "by", "rembrandt"]
    assert ids == [vocab[modelgen.BOS]] + [vocab[w + "</w>"] for w in words] + [vocab[modelgen.EOS]]
    # A word outside the list is spelled with byte tokens, not dropped or <unk>.
    odd = tok("qzx").input_ids[1:-1]
    assert [tok.convert_ids_to_tokens(i) for i in odd] == ["q", "z", "x</w>"]
    # Every listed word is one token, in transformers' tokenizer as in our BPE.
    for w in modelgen.TOKENIZER_WORDS:
        assert tok(w).input_ids[1:-1] == [vocab[w + "</w>"]], w
    padded = tok("ship", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == vocab[modelgen.EOS]


# ---------------------------------------------------------------------------
# Architecture (on the meta device: no memory, no compute)
# ---------------------------------------------------------------------------


def test_sd15_has_sd15_architecture_and_cost():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    preset = modelgen.get_preset("sd15")
    unet = modelgen.build_unet(preset, device="meta")
    # SD-1.5's published parameter counts: UNet 859.52M, VAE 83.65M, CLIP ViT-L/14 text 123.06M.
    assert modelgen.param_count(unet) == 859_520_964
    with torch.device("meta"):
        vae = AutoencoderKL(**preset.vae)
        text = CLIPTextModel(CLIPTextConfig(**modelgen.text_config_kwargs(preset, {"<|startoftext|>": 49406,
                                                                                    "<|endoftext|>": 49407})))
    assert modelgen.param_count(vae) == 83_653_863
    assert modelgen.param_count(text) == 123_060_480
    from sdagent.measuring.flops import unet_call_flops

    flops = unet_call_flops(unet, 64, 64, batch=2)
    assert 1.55e12 < flops < 1.65e12  # ~1.6 TFLOP per guided UNet step at 512x512
    assert unet_call_flops(unet, 64, 64, batch=1) == pytest.approx(flops / 2, rel=0.01)


def test_unknown_preset_is_bad_input():
    with pytest.raises(BadInput, match="unknown preset 'sd3': choose one of tiny, sd15, sd21"):
        modelgen.get_preset("sd3")


# ---------------------------------------------------------------------------
# The written directory
# ---------------------------------------------------------------------------


def test_tiny_directory_is_complete_and_loadable_by_both_transformers(tiny_model, tmp_path):
    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    sched = json.loads((tiny_model / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["steps_offset"]) == \
        ("scaled_linear", 0.00085, 0.012, 1)
    for f in ("tokenizer/vocab.json", "tokenizer/merges.txt", "unet/diffusion_pytorch_model.safetensors",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", modelgen.MARKER):
        assert (tiny_model / f).is_file(), f
        assert os.stat(tiny_model / f).st_mode & 0o044 == 0o044, f"{f} not readable by group/other"
    marker = json.loads((tiny_model / modelgen.MARKER).read_text())
    assert marker["preset"] == "tiny" and marker["random_weights"] is True
    # The text encoder pools at the tokenizer's EOS id, so they must agree.
    te = json.loads((tiny_model / "text_encoder" / "config.json").read_text())
    vocab = json.loads((tiny_model / "tokenizer" / "vocab.json").read_text())
    assert te["eos_token_id"] == vocab[modelgen.EOS] and te["vocab_size"] == len(vocab)
    # Text encoder tensors in SD-1.5's 'text_model.*' layout: transformers 4.57 loads only that one.
    from safetensors import safe_open

    with safe_open(str(tiny_model / "text_encoder" / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("text_model.") for k in keys)
    # Without tokenizer.json (as transformers 4 sees the directory) the tokenizer still loads.
    from transformers import CLIPTokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tok_dir / f).write_bytes((tiny_model / "tokenizer" / f).read_bytes())
    tok = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
    assert tok("ship").input_ids == [vocab[modelgen.BOS], vocab["ship</w>"], vocab[modelgen.EOS]]


def test_create_refuses_nonempty_dir_and_missing_parent(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    with pytest.raises(BadInput, match="not empty.*--force"):
        modelgen.create_model("tiny", d)
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt"]
    with pytest.raises(BadInput, match="parent directory does not exist"):
        modelgen.create_model("tiny", tmp_path / "no" / "m")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BadInput, match="not a directory"):
        modelgen.create_model("tiny", f)


def test_force_replaces_and_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    d = tmp_path / "m"
    d.mkdir()
    (d / "old.txt").write_text("old")
    (d / modelgen.MARKER).write_text('{"format": "sdagent-model/1"}')  # --force replaces only sdagent's own
    made = modelgen.create_model("tiny", d, force=True, seed=3)
    assert not (d / "old.txt").exists() and (d / "model_index.json").is_file()
    assert made.seed == 3 and made.params["unet"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or old sibling left

    from diffusers import StableDiffusionPipeline

    def boom(self, *a, **k):
        Path(a[0], "model_index.json").write_text("{}")  # a partial write, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(StableDiffusionPipeline, "save_pretrained", boom)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(SdagentError, match=f"cannot write the model to {d}: disk full") as ei:
        modelgen.create_model("tiny", d, force=True)
    assert ei.value.exit_code == 7
    assert sorted(p.name for p in d.iterdir()) == before  # the old model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
