"""Load a Stable Diffusion pipeline from a local diffusers directory, with one-line failures.

Only `from_pretrained` on a local directory, with the class of the directory's family
(pipeline.family): a real SD-1.5, SD 2.x, SDXL, Turbo or LCM directory and one written by
`sdagent model create` load the same way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from sdagent.errors import BadInput, one_line
from sdagent.pipeline.family import SDXL, Family
from sdagent.pipeline.modeldir import ModelDir, check_model_dir, text_encoder_weight_files
from sdagent.pipeline.stack import import_torch, quiet_libraries
from sdagent.pipeline.workload import SCHEDULERS, check_scheduler


def scheduler_class(name: str):
    """The diffusers scheduler class for a CLI name (None for "default": keep the model's)."""
    check_scheduler(name)
    cls_name = SCHEDULERS[name]
    if cls_name is None:
        return None
    import diffusers

    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise BadInput(f"scheduler {name!r} ({cls_name}) is not in this diffusers version")
    return cls


def set_scheduler(pipe, name: str) -> str:
    """Swap the scheduler, keeping the model's noise schedule (the demo's DPM-Solver swap)."""
    cls = scheduler_class(name)
    if cls is not None:
        try:
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        except ImportError as exc:  # diffusers' stand-in classes raise this when a dependency is absent
            why = " ".join(str(exc).split())  # diffusers wraps its message over several lines
            raise BadInput(f"scheduler {name!r} is not usable here: {why}") from None
    return type(pipe.scheduler).__name__


def pipeline_kwargs(family: Family) -> dict:
    """from_pretrained's extra arguments per family: SD 1.x/2.x and LCM load without the safety checker
    (not part of the latency being tuned); SDXL without the invisible watermark (an optional package)."""
    if family.pipeline_class == SDXL:
        return {"add_watermarker": False}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def load_diffusers_pipeline(model_dir: "str | os.PathLike[str] | ModelDir", scheduler: str = "default"):
    """<family's class>.from_pretrained(dir, local_files_only=True, torch_dtype=float32), with one-line
    failures.

    The class is the directory's family's (pipeline.family: StableDiffusionPipeline,
    StableDiffusionXLPipeline or LatentConsistencyModelPipeline). Weights load as fp32 whatever the files
    hold (the fp16 presets): the plan's precision (bf16 autocast, IPEX's cast) starts from fp32. A
    ModelDir was checked by whoever made it and is not checked again; a path is.
    """
    check_scheduler(scheduler)
    md = check_model_dir(model_dir)
    torch = import_torch()
    quiet_libraries()  # before diffusers' import, which logs about optional packages
    try:
        import diffusers

        pipeline_cls = getattr(diffusers, md.family.pipeline_class)
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"diffusers is not importable ({exc.__class__.__name__}: {exc}): "
                       "pip install 'sdagent[native]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = pipeline_cls.from_pretrained(str(md.path), local_files_only=True, torch_dtype=torch.float32,
                                                **pipeline_kwargs(md.family))
    except Exception as exc:  # noqa: BLE001 - whatever diffusers raised, the directory is the cause
        raise BadInput(f"cannot load the pipeline in {md.path}: {one_line(exc)}") from None
    check_text_encoder_loaded(pipe, md.path)
    pipe.set_progress_bar_config(disable=True)
    set_scheduler(pipe, scheduler)
    return pipe


def check_text_encoder_loaded(pipe, model_dir: Path) -> None:
    """transformers keeps random weights, with only a log line, when the file's key names do not
    match its layout (e.g. a directory saved by transformers 5 read by 4.x): refuse that."""
    torch = import_torch()
    want = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
    try:
        from safetensors import safe_open
    except ImportError:
        return
    for f in text_encoder_weight_files(model_dir / "text_encoder"):
        if not f.is_file():
            return  # .bin weights: nothing cheap to compare against
        with safe_open(str(f), "pt") as fh:
            key = next((k for k in want if k in fh.keys()), None)
            if key is None:
                continue
            stored = fh.get_tensor(key)
        loaded = pipe.text_encoder.get_input_embeddings().weight.detach()
        if loaded.shape != stored.shape or not torch.equal(loaded.to(stored.dtype), stored):
            import transformers

            raise BadInput(f"the text encoder weights in {f} were not loaded by transformers "
                           f"{transformers.__version__} (their key names use another layout); "
                           f"re-create the directory with `sdagent model create`")
        return
