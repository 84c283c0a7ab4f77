"""Which Stable Diffusion family a model directory holds, from what the directory says (pure).

Why: the loader's class, the workload's defaults (steps, guidance), the UNet's inputs (SDXL's added
conditioning, LCM's guidance embedding) and the FLOP counts all depend on the family, and a diffusers
directory says which it is: `model_index.json`'s `_class_name`, the UNet's config (cross-attention
width, `addition_embed_type`, `time_cond_proj_dim`) and the scheduler's (`prediction_type`,
`timestep_spacing`). `detect_family` reads those facts, already parsed, and decides; `read_family`
is the one function here that touches the disk.

The families (names as `sdagent` prints them; sources of each figure beside its record):

  sd1         SD 1.x: CLIP ViT-L text encoder, 768-d cross-attention, epsilon prediction
  sd2         SD 2.x base (512): OpenCLIP ViT-H text encoder, 1024-d cross-attention, epsilon
  sd2-v       SD 2.x 768-v: as sd2, v-prediction
  sd-turbo    SD-Turbo (SD 2.1 architecture, adversarially distilled): 1 step, no guidance
  sdxl        SDXL base: two text encoders (CLIP-L + OpenCLIP bigG), 2048-d cross-attention,
              added conditioning (pooled text embeddings + 6 size/crop ids -> 2816-d)
  sdxl-turbo  SDXL-Turbo (SDXL architecture, distilled): 1 step, no guidance
  lcm         Latent Consistency Model (SD 1.x/2.x UNet with a guidance embedding): 4 steps,
              guidance read by the UNet (batch 1), never classifier-free
  lcm-sdxl    an LCM-distilled SDXL UNet: as lcm, with SDXL's inputs

Errors: BadInput (exit 2), one line naming the unknown class or the missing component.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from sdagent.errors import BadInput

#: Components every family loads; SDXL adds the second text encoder and its tokenizer.
BASE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SDXL_COMPONENTS = BASE_COMPONENTS + ("text_encoder_2", "tokenizer_2")


@dataclass(frozen=True)
class Family:
    """One pipeline family: how it is loaded and what its workload defaults are.

    default_steps None: the command's own default (20 for run/bench/verify, SD's published workload);
    max_steps None: no distilled range. guidance_ignored: the model was trained without
    classifier-free guidance (Turbo) or reads guidance as an embedding (LCM), so a scale the user
    gives is worth a warning. cfg: whether a guidance scale above 1 runs the UNet on a batch of 2.
    """

    name: str
    pipeline_class: str  # the diffusers class the loader uses
    default_steps: int | None
    default_guidance: float
    max_steps: int | None
    guidance_ignored: bool
    cfg: bool
    text_encoders: int  # 1, or 2 (SDXL)
    added_cond: bool  # SDXL's text_time added conditioning (text_embeds, time_ids)
    prediction: str  # epsilon | v_prediction (the scheduler's)
    description: str

    @property
    def components(self) -> tuple[str, ...]:
        return SDXL_COMPONENTS if self.text_encoders == 2 else BASE_COMPONENTS

    @property
    def distilled(self) -> bool:
        return self.max_steps is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fam(name: str, cls: str, steps: int | None, guidance: float, max_steps: int | None, ignored: bool,
         cfg: bool, encoders: int, prediction: str, description: str) -> Family:
    return Family(name, cls, steps, guidance, max_steps, ignored, cfg, encoders, encoders == 2, prediction,
                  description)


SD = "StableDiffusionPipeline"
SDXL = "StableDiffusionXLPipeline"
LCM = "LatentConsistencyModelPipeline"

#: Guidance 7.5 and the command's steps: diffusers' StableDiffusionPipeline defaults (SD 1.x/2.x), and
#: SDXL's 5.0 (StableDiffusionXLPipeline.__call__'s default). Turbo: 1 step, guidance 0.0 and "up to
#: 4 steps" (stabilityai/sd-turbo and sdxl-turbo model cards). LCM: 4 steps, guidance 8.5
#: (LatentConsistencyModelPipeline.__call__'s defaults), "1-8 steps" (latent-consistency model cards).
FAMILIES: dict[str, Family] = {f.name: f for f in (
    _fam("sd1", SD, None, 7.5, None, False, True, 1, "epsilon", "SD 1.x (CLIP ViT-L, 768-d cross-attention)"),
    _fam("sd2", SD, None, 7.5, None, False, True, 1, "epsilon", "SD 2.x base (OpenCLIP ViT-H, 1024-d)"),
    _fam("sd2-v", SD, None, 7.5, None, False, True, 1, "v_prediction",
         "SD 2.x 768-v (OpenCLIP ViT-H, 1024-d, v-prediction)"),
    _fam("sd-turbo", SD, 1, 0.0, 4, True, True, 1, "epsilon", "SD-Turbo (SD 2.1 architecture, distilled)"),
    _fam("sdxl", SDXL, None, 5.0, None, False, True, 2, "epsilon",
         "SDXL (CLIP-L + OpenCLIP bigG, 2048-d, added conditioning)"),
    _fam("sdxl-turbo", SDXL, 1, 0.0, 4, True, True, 2, "epsilon", "SDXL-Turbo (SDXL architecture, distilled)"),
    _fam("lcm", LCM, 4, 8.5, 8, True, False, 1, "epsilon", "Latent Consistency Model (guidance embedding)"),
    _fam("lcm-sdxl", SDXL, 4, 8.5, 8, True, False, 2, "epsilon", "LCM-distilled SDXL (guidance embedding)"),
)}

#: `_class_name`s this agent runs (AutoPipelineForText2Image resolves to one of these).
KNOWN_CLASSES = (SD, SDXL, LCM)

#: Cross-attention width -> SD generation (unet/config.json cross_attention_dim; 768 CLIP ViT-L in SD 1.x,
#: 1024 OpenCLIP ViT-H in SD 2.x).
SD2_CROSS_ATTENTION = 1024


def _is_turbo(scheduler: Mapping[str, Any]) -> bool:
    """Turbo directories ship an Euler scheduler with 'trailing' timestep spacing (sd-turbo's and
    sdxl-turbo's scheduler_config.json), which sampling at 1-4 steps needs; base models ship 'leading'."""
    return scheduler.get("timestep_spacing") == "trailing" and "Euler" in str(scheduler.get("_class_name", ""))


def check_class(index: Mapping[str, Any], where: str = "model_index.json") -> str:
    """The pipeline's `_class_name`, or BadInput naming the unknown one."""
    cls = str(index.get("_class_name") or "")
    if cls not in KNOWN_CLASSES:
        raise BadInput(f"unsupported pipeline class {cls or '(none)'!r} in {where}: sdagent runs "
                       f"{', '.join(KNOWN_CLASSES)}")
    return cls


def detect_family(index: Mapping[str, Any], unet: Mapping[str, Any], scheduler: Mapping[str, Any],
                  where: str = "model_index.json", declared: str | None = None) -> Family:
    """The family of a directory from its parsed model_index.json, unet/config.json and
    scheduler/scheduler_config.json. `declared`: the family `sdagent model create` wrote in its marker
    (trusted only when it agrees with the pipeline class). BadInput for an unknown class."""
    cls = check_class(index, where)
    lcm_unet = unet.get("time_cond_proj_dim") is not None
    if declared in FAMILIES and FAMILIES[declared].pipeline_class == cls \
            and FAMILIES[declared].name.startswith("lcm") == lcm_unet:
        return FAMILIES[declared]
    if cls == LCM:
        return FAMILIES["lcm"]
    if cls == SDXL or unet.get("addition_embed_type") == "text_time":
        if lcm_unet:
            return FAMILIES["lcm-sdxl"]
        return FAMILIES["sdxl-turbo" if _is_turbo(scheduler) else "sdxl"]
    if lcm_unet:
        return FAMILIES["lcm"]
    if scheduler.get("prediction_type") == "v_prediction":  # SD 2.x 768-v (SD 1.x was trained on epsilon)
        return FAMILIES["sd2-v"]
    if int(unet.get("cross_attention_dim") or 768) >= SD2_CROSS_ATTENTION:
        return FAMILIES["sd-turbo" if _is_turbo(scheduler) else "sd2"]
    return FAMILIES["sd1"]


def steps_help() -> str:
    """--steps' default, from FAMILIES itself: the distilled families' own steps and range."""
    return ", ".join(f"{f.name} {f.default_steps} (1-{f.max_steps})" for f in FAMILIES.values()
                     if f.default_steps is not None)


def guidance_help() -> str:
    """--guidance's default, from FAMILIES itself (an embedding where the family has no guided batch)."""
    return ", ".join(f"{f.name} {f.default_guidance:g}" + ("" if f.cfg else " as an embedding")
                     for f in FAMILIES.values())


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise BadInput(f"unknown model family {name!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def unet_extra_shapes(unet: Mapping[str, Any], batch: int) -> dict[str, tuple[int, ...]]:
    """The UNet's inputs beyond (latents, timestep, text embeddings), by name, with their shapes, from its
    config: SDXL's added conditioning ("text_time": the pooled text embeddings, projection_class_embeddings_
    input_dim - 6 x addition_time_embed_dim = 2816 - 1536 = 1280 wide, and the 6 size/crop ids) and LCM's
    guidance embedding (timestep_cond, time_cond_proj_dim wide). Empty for SD 1.x/2.x. The order is the
    compiled UNet's positional order (pipeline.components.UNetCall)."""
    out: dict[str, tuple[int, ...]] = {}
    if unet.get("addition_embed_type") == "text_time":
        pooled = int(unet["projection_class_embeddings_input_dim"]) - 6 * int(unet["addition_time_embed_dim"])
        out["text_embeds"] = (batch, pooled)
        out["time_ids"] = (batch, 6)
    if unet.get("time_cond_proj_dim") is not None:
        out["timestep_cond"] = (batch, int(unet["time_cond_proj_dim"]))
    return out


# ---------------------------------------------------------------------------
# Workload rules: one function per rule, each with its reason
# ---------------------------------------------------------------------------


def default_steps(family: Family, command_default: int) -> int:
    """Steps when --steps is not given: a distilled model's own (Turbo 1, LCM 4), else the command's."""
    return command_default if family.default_steps is None else family.default_steps


def guidance_warning(family: Family, guidance: float, given: bool) -> str | None:
    """A guidance scale the user gave to a model that ignores it (Turbo: trained without classifier-free
    guidance; LCM: reads it as an embedding, never runs the unconditional branch): one line, or None."""
    if not given or not family.guidance_ignored or guidance == family.default_guidance:
        return None
    if family.cfg:
        if guidance <= 1.0:  # no classifier-free pass at all: the scale has no effect
            return None
        return (f"--guidance {guidance:g}: {family.name} was distilled to run without classifier-free guidance "
                f"(its default is {family.default_guidance:g}); a scale above 1 doubles the UNet's batch and "
                f"changes the image the model was trained to make")
    return (f"--guidance {guidance:g}: {family.name} reads guidance as an embedding in its UNet (batch 1, no "
            f"unconditional pass); the scale is passed as it is, not as classifier-free guidance")


def steps_warning(family: Family, steps: int) -> str | None:
    """Steps above a distilled model's range (Turbo 1-4, LCM 1-8): it runs, but costs more for no better
    image than the model was distilled for. One line, or None."""
    if family.max_steps is None or steps <= family.max_steps:
        return None
    return (f"--steps {steps}: {family.name} is distilled for 1-{family.max_steps} steps (default "
            f"{family.default_steps}); more steps cost time without the quality a base model would gain")


def negative_prompt_warning(family: Family, guidance: float, given: bool) -> str | None:
    """A negative prompt that cannot act: it is the unconditional branch of classifier-free guidance, which
    runs only above guidance 1, and never in a guidance-embedding model (LCM, whose pipeline has no
    negative prompt: it is dropped). One line, or None."""
    if not given:
        return None
    if not family.cfg:
        return f"--negative-prompt: {family.name} has no unconditional pass (guidance embedding): it is not used"
    if guidance <= 1.0:
        return f"--negative-prompt: at guidance {guidance:g} there is no classifier-free pass, so it has no effect"
    return None
