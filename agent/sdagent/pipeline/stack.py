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
    return torch


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
