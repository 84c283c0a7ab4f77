"""Is this directory a loadable Stable Diffusion pipeline? Checked without importing torch.

Why: diffusers' own failures on a missing, foreign or truncated directory are
multi-page tracebacks, and some only appear after seconds of loading. These
checks name the bad path in one line before any of that starts.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from sdagent.errors import BadInput
from sdagent.pipeline.family import (BASE_COMPONENTS, FAMILIES, KNOWN_CLASSES, SDXL, SDXL_COMPONENTS, Family,
                                     check_class, detect_family)

SUPPORTED_PIPELINES = KNOWN_CLASSES
REQUIRED_COMPONENTS = BASE_COMPONENTS  # SDXL's: family.SDXL_COMPONENTS

#: The files each component is loaded from (diffusers' and transformers' from_pretrained), as
#: alternatives: every file of one alternative must be there. Without them the load fails only
#: after the other components have loaded (seconds to minutes), with a multi-page traceback.
COMPONENT_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (("config.json",),),
    "vae": (("config.json",),),
    "text_encoder": (("config.json",),),
    "text_encoder_2": (("config.json",),),
    "scheduler": (("scheduler_config.json",),),
    # CLIPTokenizer: its config, plus the fast tokenizer's tokenizer.json or the BPE's vocab and merges
    "tokenizer": (("tokenizer_config.json", "tokenizer.json"), ("tokenizer_config.json", "vocab.json",
                                                                  "merges.txt")),
}
COMPONENT_FILES["tokenizer_2"] = COMPONENT_FILES["tokenizer"]

#: What each component is, for the one line that says it is missing.
COMPONENT_ROLES = {"text_encoder_2": "the second text encoder (OpenCLIP bigG)",
                   "tokenizer_2": "the second text encoder's tokenizer"}


def component_problem(p: Path, component: str) -> str | None:
    """Which file the component's loader needs is missing, or None."""
    alternatives = COMPONENT_FILES.get(component, ())
    if not alternatives or any(all((p / component / f).is_file() for f in alt) for alt in alternatives):
        return None
    gaps = [[f for f in alt if not (p / component / f).is_file()] for alt in alternatives]
    missing = min(gaps, key=len)  # the alternative closest to whole names what is missing
    return " and ".join(f"{component}/{f}" for f in missing)


@dataclass(frozen=True)
class ModelDir:
    """A directory that passed the checks, with what its model_index.json says."""

    path: Path
    pipeline_class: str
    components: dict[str, list]
    sdagent_preset: str | None  # set when `sdagent model create` wrote it
    family: Family = FAMILIES["sd1"]  # pipeline.family.detect_family's decision

    @property
    def name(self) -> str:
        """The name targets match on: the `sdagent model create` preset, else the directory's name."""
        return self.sdagent_preset or self.path.resolve().name

    def default_size(self) -> int:
        """The resolution the model was built for (diffusers' default): UNet sample size x VAE scale."""
        try:
            unet = json.loads((self.path / "unet" / "config.json").read_text())
            vae = json.loads((self.path / "vae" / "config.json").read_text())
            return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"cannot read the default resolution from {self.path}/unet and vae config.json "
                           f"({exc.__class__.__name__}): give --height and --width") from None


def safetensors_problem(path: Path) -> str | None:
    """Why this .safetensors file cannot be whole, or None.

    The format is an 8-byte little-endian header length, a JSON header whose
    tensors' data_offsets end at the data size, then the data: a truncated file
    is shorter than the header promises.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"truncated: {size} bytes, shorter than the 8-byte header length"
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                return f"truncated: a {n}-byte header does not fit in the {size}-byte file"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"unreadable header ({exc.__class__.__name__})"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return f"tensor {name!r} has no valid data_offsets"
    have = size - 8 - n
    if have < end:
        return f"truncated: the header promises {end} data bytes, the file has {have}"
    return None


def text_encoder_weight_files(text_dir: Path) -> list[Path]:
    """The text encoder's safetensors files (one file, or the shards its index names)."""
    index = text_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [text_dir / s for s in shards]
    return [text_dir / "model.safetensors"]


def check_model_dir(model_dir: "str | os.PathLike[str] | ModelDir") -> ModelDir:
    """Raise BadInput naming the problem, or return what the directory holds.

    A ModelDir was checked by whoever made it and comes back as it is: callers pass on the checked
    record (the CLI checks once, before loading anything) and every layer below may call this.
    """
    if isinstance(model_dir, ModelDir):
        return model_dir
    p = Path(model_dir)
    if not p.exists():
        raise BadInput(f"model directory not found: {p}")
    if not p.is_dir():
        raise BadInput(f"model path is not a directory: {p}")
    index = p / "model_index.json"
    if not index.is_file():
        raise BadInput(f"not a diffusers pipeline directory (no model_index.json): {p} "
                       f"(create one with `sdagent model create --preset tiny {p}`)")
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"unreadable model_index.json in {p}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"model_index.json in {p} is not a JSON object")
    cls = check_class(data, str(index))
    required = SDXL_COMPONENTS if cls == SDXL else BASE_COMPONENTS
    missing = [c for c in required
               if not isinstance(data.get(c), list) or data[c][0] is None or not (p / c).is_dir()]
    if missing:
        roles = [f"{c} ({COMPONENT_ROLES[c]})" if c in COMPONENT_ROLES else c for c in missing]
        raise BadInput(f"{cls} directory {p} lacks component(s): {', '.join(roles)}")
    gaps = [why for why in (component_problem(p, c) for c in required) if why]
    if gaps:
        raise BadInput(f"pipeline directory {p} lacks {', '.join(gaps)} (an incomplete copy?)")
    for f in sorted(p.rglob("*.safetensors")):
        why = safetensors_problem(f)
        if why:
            raise BadInput(f"corrupt weights file {f}: {why}")
    preset = declared = None
    marker = p / "sdagent-model.json"
    if marker.is_file():
        try:
            made = json.loads(marker.read_text())
            preset, declared = made.get("preset"), made.get("family")
        except (OSError, ValueError, AttributeError):
            preset = None
    family = detect_family(data, read_config(p / "unet" / "config.json"),
                           read_config(p / "scheduler" / "scheduler_config.json"), str(index), declared)
    return ModelDir(p, cls, {k: v for k, v in data.items() if isinstance(v, list)}, preset, family)


def read_config(path: Path, what: str = "config") -> dict:
    """A component's JSON config (`what` names it in the message), or BadInput naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path} is not a JSON object")
    return data
