"""The ML stack as the agent imports it: torch with a one-line failure, quiet loaders.

Why a module of its own: the loader, the backends, model creation and FLOP
counting all need these, and none of them should import another for it.
"""

from __future__ import annotations

from sdagent.errors import BadInput


def import_torch():
    """torch, or BadInput naming the failure and the extra to install."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means the same thing to the user
        raise BadInput(f"torch is not importable ({exc.__class__.__name__}: {exc}): "
                       "pip install 'sdagent[native]'") from None
    _quiet_torchao()
    return torch


#: Loggers that warn, on a CPU-only torch with torchao installed (the native extra's, for the int8 UNet:
#: pipeline.quantize), about what this agent does not use: torchao's CUDA extensions it cannot load,
#: diffusers' torchao checkpoint types, torch's note on torchao's enums in pytree. Silenced below ERROR.
QUIET_LOGGERS: tuple[str, ...] = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


def _quiet_torchao() -> None:
    import logging
    import warnings

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # inductor's int8 lowering copies a zero-point tensor with torch.tensor(tensor): its own, harmless
    warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning,
                            module=r"torch\._inductor\.mkldnn_lowerings")


def quiet_libraries() -> None:
    """Loading bars and 'you should TRAIN this model' notices are noise on a CLI's stderr."""
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
