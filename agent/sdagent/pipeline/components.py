"""The pipeline's parts as the run record says: precision applied inside each part, eager or compiled.

Why inside: a user who calls the returned diffusers pipeline directly
(`pipe(prompt)`, in their own server) must get the verified configuration,
not the half of it that lives in an autocast context around our own calls. So
the UNet, the VAE decoder and the text encoder are each replaced by a
*runner*: a module that keeps the original's config, dtype and device (what
diffusers reads), and whose call runs the planned path: eager under bf16
autocast, IPEX's optimized module, torch.compile, or a loaded AOTInductor
package (pipeline.artifacts). Calls the compiled graph was not built for
(another shape, an extra argument) go to the eager path, never to an error.

Each runner records what its first call really ran with (`seen`), which is
what verify's backend, precision and artifact checks read.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from sdagent.pipeline.stack import import_torch

torch = import_torch()


def autocast_for(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


# ---------------------------------------------------------------------------
# What is exported / compiled: each part as a function of tensors only
# ---------------------------------------------------------------------------


def unet_call_kwargs(names: tuple[str, ...], extra: tuple) -> dict[str, Any]:
    """The UNet's keyword inputs from its extra tensors in unet_extra_shapes' order: SDXL's
    added_cond_kwargs (text_embeds, time_ids), LCM's timestep_cond."""
    named = dict(zip(names, extra))
    kw: dict[str, Any] = {}
    if "text_embeds" in named:
        kw["added_cond_kwargs"] = {"text_embeds": named["text_embeds"], "time_ids": named["time_ids"]}
    if "timestep_cond" in named:
        kw["timestep_cond"] = named["timestep_cond"]
    return kw


class UNetCall(torch.nn.Module):
    """(latents, timestep, text embeddings, *extra) -> noise prediction, in the run's precision. `extra`: the
    family's further inputs as tensors (pipeline.family.unet_extra_shapes: SDXL's text_embeds and time_ids,
    LCM's timestep_cond), so the exported graph takes tensors only."""

    def __init__(self, unet: Any, precision: str, extra_names: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.unet, self.precision, self.extra_names = unet, precision, extra_names

    def forward(self, sample, timestep, hidden, *extra):
        with autocast_for(self.precision):
            return self.unet(sample, timestep, encoder_hidden_states=hidden, return_dict=False,
                             **unet_call_kwargs(self.extra_names, extra))[0]


class DecodeCall(torch.nn.Module):
    """Scaled latents -> image tensor (the VAE's decoder), in the run's precision."""

    def __init__(self, vae: Any, precision: str) -> None:
        super().__init__()
        self.vae, self.precision = vae, precision
        self.decode_fn = type(vae).decode  # the class's own, not an override installed on the instance

    def forward(self, z):
        with autocast_for(self.precision):
            return self.decode_fn(self.vae, z, return_dict=False)[0]


class TextCall(torch.nn.Module):
    """Token ids -> (last hidden state, pooled output), in the run's precision."""

    def __init__(self, text_encoder: Any, precision: str) -> None:
        super().__init__()
        self.te, self.precision = text_encoder, precision

    def forward(self, ids):
        with autocast_for(self.precision):
            out = self.te(ids, return_dict=False)
            return out[0], out[1]


# ---------------------------------------------------------------------------
# Runners: what the diffusers pipeline calls
# ---------------------------------------------------------------------------


class Runner(torch.nn.Module):
    """Common to the three runners: the original (config, dtype, device), the fast path, what was seen."""

    def __init__(self, original: Any, fast: Callable[..., Any], eager: Callable[..., Any], mode: str,
                 precision: str, shapes: tuple | None, artifact: str | None) -> None:
        super().__init__()
        self.original = original  # a registered submodule: parameters, config, device
        self.eager = eager
        self.fast = fast
        self.mode = mode  # eager | ipex | jit | aot
        self.precision = precision
        self.shapes = shapes  # the input shapes the fast path was built for (None: any)
        self.artifact = artifact  # the package's key digest (aot)
        self.seen: dict[str, Any] | None = None
        self.fallbacks = 0  # calls the fast path could not take
        self.channels_last = False  # the fast path wants 4-d inputs in channels_last

    def __getattr__(self, name: str) -> Any:
        """Anything else (config, dtype, device, its submodules) is the original's: diffusers and users read
        the part as if it were the original module."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_modules", {}).get("original")
            if original is None:
                raise
            return getattr(original, name)

    def _fits(self, *tensors: Any) -> bool:
        return self.shapes is None or tuple(tuple(t.shape) for t in tensors) == self.shapes

    def _record(self, path: str, out: Any) -> None:
        """What the first call really ran: which path, and the dtype it computed in (bf16 compute under
        autocast, in IPEX's modules or compiled into a package returns bf16; fp32 compute returns fp32)."""
        if self.seen is None:
            inner = getattr(self.original, "_orig_mod", self.original)
            p = next(iter(inner.parameters()), None)
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.seen = {"path": path, "mode": self.mode if path == "fast" else "eager",
                         "artifact": self.artifact if path == "fast" else None,
                         "out_dtype": str(first.dtype).replace("torch.", ""),
                         "param_dtype": str(p.dtype).replace("torch.", "") if p is not None else None,
                         "ipex_modules": sum(1 for m in inner.modules()
                                             if type(m).__module__.startswith("intel_extension_for_pytorch"))}


class UNetRunner(Runner):
    extra_names: tuple[str, ...] = ()  # the family's further inputs the fast path takes (UNetCall's)

    def _extras(self, kw: dict[str, Any]) -> tuple | None:
        """The fast path's extra tensors from the call's keywords (SDXL's added_cond_kwargs, LCM's
        timestep_cond), or None when the call carries anything else (it goes to the eager path)."""
        rest = dict(kw)
        added = rest.pop("added_cond_kwargs", None) or {}
        cond = rest.pop("timestep_cond", None)
        if any(v is not None for v in rest.values()) or set(added) - {"text_embeds", "time_ids"}:
            return None
        have = {**added, **({"timestep_cond": cond} if cond is not None else {})}
        if set(have) != set(self.extra_names):
            return None
        return tuple(have[n] for n in self.extra_names)

    def forward(self, sample, timestep, encoder_hidden_states=None, *args, return_dict: bool = True, **kw):
        extras = None if args else self._extras(kw)
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(())
        if extras is not None and self._fits(sample, encoder_hidden_states, *extras):
            x = sample.contiguous(memory_format=torch.channels_last) if self.channels_last else sample
            out = self.fast(x, t, encoder_hidden_states, *extras)
            self._record("fast", out)
        else:
            self.fallbacks += 1
            with autocast_for(self.precision):
                out = self.eager(sample, timestep, encoder_hidden_states, *args, return_dict=False, **kw)[0]
            self._record("eager", out)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


class TextEncoderRunner(Runner):
    def forward(self, input_ids, attention_mask=None, *args, return_dict: bool | None = None,
                output_hidden_states: bool | None = None, **kw):
        if self.fast is not None and attention_mask is None and not args and not kw and not output_hidden_states \
                and self._fits(input_ids):
            out = self.fast(input_ids)
            self._record("fast", out)
        else:
            self.fallbacks += 1
            with autocast_for(self.precision):
                res = self.eager(input_ids, attention_mask=attention_mask, *args, return_dict=return_dict,
                                 output_hidden_states=output_hidden_states, **kw)
            self._record("eager", res[0] if not hasattr(res, "last_hidden_state") else res.last_hidden_state)
            return res
        if return_dict is False:
            return out
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=out[0], pooler_output=out[1])


class DecoderRunner(Runner):
    """Installed as the VAE's `decode` (the VAE itself stays: diffusers reads its config)."""

    def forward(self, z, return_dict: bool = True, generator: Any = None):
        if self._fits(z):
            out = self.fast(z.contiguous(memory_format=torch.channels_last) if self.channels_last else z)
            self._record("fast", out)
        else:
            self.fallbacks += 1
            out = self.eager(z)
            self._record("eager", out)
        if return_dict:
            from diffusers.models.autoencoders.vae import DecoderOutput

            return DecoderOutput(sample=out)
        return (out,)
