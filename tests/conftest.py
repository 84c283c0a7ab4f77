"""Shared fixtures: the tiny random-weights pipeline, created once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` pipeline directory written by sdagent.modelgen (64x64, seconds to run)."""
    pytest.importorskip("torch", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    pytest.importorskip("diffusers", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    from sdagent.pipeline.modelgen import create_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_model("tiny", path)
    return path
