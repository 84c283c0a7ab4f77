"""What the UNet actually ran with, seen from a hook on its first call (not what was asked).

Why a hook: a plan says bf16 and IPEX; only the UNet's own call shows whether
autocast was on, which dtype its weights had and whether IPEX touched it.
verify's backend and precision checks compare these with the run record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Observed:
    """What the UNet actually ran with, seen from a hook on its first call (not what was asked)."""

    autocast_dtype: str | None  # e.g. "bfloat16" when CPU autocast was on, else None
    param_dtype: str | None  # dtype of the UNet's first parameter
    ipex_modules: int  # UNet submodules whose class comes from intel_extension_for_pytorch
    ipex_imported: bool
    compiled: bool  # the UNet is a torch.compile wrapper

    @property
    def precision(self) -> str:
        """bf16 when the UNet computed in bf16 (autocast or bf16 weights), else fp32."""
        if self.autocast_dtype == "bfloat16" or self.param_dtype == "bfloat16":
            return "bf16"
        return "fp32"

    @property
    def backend(self) -> str:
        """ipex when IPEX is loaded and touched the UNet (optimized modules or a bf16 cast), else native."""
        return "ipex" if self.ipex_imported and (self.ipex_modules > 0 or self.param_dtype == "bfloat16") \
            else "native"

    def to_dict(self) -> dict[str, Any]:
        return {"autocast_dtype": self.autocast_dtype, "param_dtype": self.param_dtype,
                "ipex_modules": self.ipex_modules, "ipex_imported": self.ipex_imported,
                "compiled": self.compiled, "precision": self.precision, "backend": self.backend}


def observe_unet(pipe) -> tuple[Callable[[], Observed | None], Callable[[], None]]:
    """Hook the UNet's next call; returns (result getter, remover)."""
    import torch

    seen: list[Observed] = []
    unet = pipe.unet

    def pre(module, _args):
        if seen:
            return
        autocast = None
        if torch.is_autocast_enabled("cpu"):
            autocast = str(torch.get_autocast_dtype("cpu")).replace("torch.", "")
        inner = getattr(module, "_orig_mod", module)
        p = next(iter(inner.parameters()), None)
        ipex_mods = sum(1 for m in inner.modules() if type(m).__module__.startswith("intel_extension_for_pytorch"))
        seen.append(Observed(autocast, str(p.dtype).replace("torch.", "") if p is not None else None,
                             ipex_mods, "intel_extension_for_pytorch" in sys.modules,
                             inner is not module))

    handle = unet.register_forward_pre_hook(pre)
    return (lambda: seen[0] if seen else None), handle.remove


