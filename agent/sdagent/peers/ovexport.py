"""The OpenVINO export, cached per model and toolchain: moved to sdagent.pipeline.ov_export (backend openvino
builds on it, and pipeline sits below peers); its names stay importable from here."""

from sdagent.pipeline.ov_export import *  # noqa: F401,F403
from sdagent.pipeline.ov_export import _tail  # noqa: F401
