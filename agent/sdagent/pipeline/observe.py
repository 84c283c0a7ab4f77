"""What the UNet actually ran with, seen on its first call (not what was asked).

Why: a plan says bf16, IPEX or a compiled artifact; only the call shows which
path ran (the fast one or the eager fallback), which dtype it computed in and
which package was loaded. The UNet's runner (pipeline.components) records that
on its first call; verify's backend, precision and artifact checks read it here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Observed:
    """The UNet's first call."""

    out_dtype: str | None  # the dtype it computed in: bfloat16 under bf16 autocast, IPEX bf16 or a bf16 package
    param_dtype: str | None  # dtype of the UNet's first parameter
    ipex_modules: int  # UNet submodules whose class comes from intel_extension_for_pytorch
    ipex_imported: bool
    mode: str  # the path that ran: eager | ipex | jit | aot | openvino
    artifact: str | None = None  # the loaded package's key digest (aot)

    @property
    def compiled(self) -> bool:
        return self.mode in ("jit", "aot")

    @property
    def precision(self) -> str:
        return "bf16" if "bfloat16" in (self.out_dtype, self.param_dtype) else "fp32"

    @property
    def backend(self) -> str:
        """openvino when the UNet ran in OpenVINO; ipex when IPEX is loaded and touched the UNet (optimized
        modules or a bf16 cast); else native."""
        if self.mode == "openvino":
            return "openvino"
        return "ipex" if self.ipex_imported and (self.ipex_modules > 0 or self.param_dtype == "bfloat16") \
            else "native"

    def to_dict(self) -> dict[str, Any]:
        return {"out_dtype": self.out_dtype, "param_dtype": self.param_dtype, "ipex_modules": self.ipex_modules,
                "ipex_imported": self.ipex_imported, "mode": self.mode, "artifact": self.artifact,
                "compiled": self.compiled, "precision": self.precision, "backend": self.backend}


def observe_unet(pipe) -> tuple[Callable[[], Observed | None], Callable[[], None]]:
    """Watch the UNet runner's next call; returns (result getter, remover). A pipeline that is not a
    torch module tree (backend openvino) observes itself: its own observe_unet()."""
    own = getattr(pipe, "observe_unet", None)
    if callable(own):
        return own()
    got: list[Observed] = []
    runner = pipe.unet

    def post(module, _args, _out):
        if got or getattr(module, "seen", None) is None:
            return
        s = module.seen
        got.append(Observed(s["out_dtype"], s["param_dtype"], s["ipex_modules"],
                            "intel_extension_for_pytorch" in sys.modules, s["mode"], s["artifact"]))

    module = runner
    module.seen = None  # observe this call, not an earlier one
    handle = module.register_forward_hook(post)
    return (lambda: got[0] if got else None), handle.remove
