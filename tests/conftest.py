"""Shared fixtures: the tiny random-weights pipeline, created once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_bench_lock(tmp_path_factory: pytest.TempPathFactory):
    """The suite's benchmarks take a lock of their own (SDAGENT_LOCK_FILE, unless the caller set one):
    they still wait for each other, but never for a benchmark another process runs on this host (a
    developer's tune, another checkout's suite), which would time a test out for reasons outside it.
    Tests of the lock itself name their own files."""
    import os

    if "SDAGENT_LOCK_FILE" in os.environ:
        yield
        return
    os.environ["SDAGENT_LOCK_FILE"] = str(tmp_path_factory.mktemp("lock") / "bench.lock")
    try:
        yield
    finally:
        os.environ.pop("SDAGENT_LOCK_FILE", None)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` pipeline directory written by sdagent.modelgen (64x64, seconds to run)."""
    pytest.importorskip("torch", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    pytest.importorskip("diffusers", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    from sdagent.pipeline.modelgen import create_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_model("tiny", path)
    return path


def _created(tmp_path_factory: pytest.TempPathFactory, preset: str) -> Path:
    pytest.importorskip("torch", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    pytest.importorskip("diffusers", reason="the ML stack (sdagent[native] or sdagent[ipex]) is not installed")
    from sdagent.pipeline.modelgen import create_model

    path = tmp_path_factory.mktemp("models") / preset
    create_model(preset, path)
    return path


@pytest.fixture(scope="session")
def tiny_sd21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny-sd21` directory (SD 2.x structure, v-prediction; 64x64, seconds to run)."""
    return _created(tmp_path_factory, "tiny-sd21")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny-sdxl` directory (two text encoders, added conditioning; 64x64, seconds to run)."""
    return _created(tmp_path_factory, "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_lcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny-lcm` directory (guidance embedding, LCMScheduler; 64x64, seconds to run)."""
    return _created(tmp_path_factory, "tiny-lcm")


@pytest.fixture(scope="session")
def aot_store(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny model's ahead-of-time packages (unet, vae_decoder, text_encoder at 64x64, bf16), built once
    per session by the CLI as a user would (`sdagent plan --set compile=true --set precision=bf16`, then
    `sdagent --plan-file PLAN model compile`): {"plan": Path, "store": Path, "compile": its --json output}.

    A build costs a minute or more on 2 cores; tests that need packages copy `store` (copy_store) rather
    than build their own. The tests of the build itself build in their own store."""
    import json

    from clirun import clean_env, sdagent

    where = tmp_path_factory.mktemp("aot")
    env = clean_env(SDAGENT_LOCK_FILE=str(where / "bench.lock"))
    plan, store = where / "plan.json", where / "artifacts"
    r = sdagent("plan", "--set", "compile=true", "--set", "precision=bf16", "-o", str(plan), env=env)
    assert r.returncode == 0, r.stderr
    r = sdagent("--plan-file", str(plan), "model", "compile", "--model", str(tiny_model), "--height", "64",
                "--width", "64", "--artifacts", str(store), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return {"plan": plan, "store": store, "compile": json.loads(r.stdout)}


def copy_store(aot: dict, dest: Path) -> Path:
    """A private copy of the session's package store (aot_store), for a test that changes it."""
    import shutil

    shutil.copytree(aot["store"], dest)
    return dest


@pytest.fixture(scope="session")
def ov_python() -> str:
    """The OpenVINO venv's python (SDAGENT_OPENVINO_PYTHON, else the cache's venv-openvino); the test is
    skipped, saying so, where neither exists."""
    import os

    from sdagent.peers import ovexport

    py = os.environ.get(ovexport.PYTHON_ENV) or ovexport.openvino_python()
    if py is None or not os.access(py, os.X_OK):
        pytest.skip(f"no OpenVINO venv: {ovexport.PYTHON_ENV} is unset and {ovexport.cache_base()}/venv-openvino "
                    "does not exist (scripts/lib.sh venv_openvino creates it)")
    return py


@pytest.fixture(scope="session")
def ov_setup(ov_python, tiny_model, tmp_path_factory) -> dict:
    """A plan file with backend openvino (fp32: the same on every CPU) and the tiny model's export for the
    64x64 guided workload (batch 2), built once a session by `sdagent model compile` (the export-build
    test's subject, test_ov_backend.py) into a private artifact store, in the OpenVINO venv:
    {"plan", "art" (the store), "first" (compile's --json output), "py", "model"}. A test that changes the
    store works on a copy."""
    import json
    import subprocess

    from clirun import REPO, clean_env

    def ov(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ov_python, "-m", "sdagent", *args], env=clean_env(), capture_output=True, text=True,
                              timeout=900, cwd=str(REPO))

    d = tmp_path_factory.mktemp("ovb")
    plan, art = d / "plan.json", d / "artifacts"
    p = ov("plan", "--set", "backend=openvino", "--set", "precision=fp32", "-o", str(plan))
    assert p.returncode == 0, p.stderr
    first = ov("--plan-file", str(plan), "model", "compile", "--model", str(tiny_model), "--steps", "2",
               "--height", "64", "--width", "64", "--artifacts", str(art), "--json")
    assert first.returncode == 0, first.stderr
    return {"plan": str(plan), "art": str(art), "first": json.loads(first.stdout), "py": ov_python,
            "model": str(tiny_model)}


@pytest.fixture
def sdagent_in_process(capsys):
    """Run `sdagent ARGS...` in this process (sdagent.cli.main): (exit code, stdout, stderr)."""
    from sdagent.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as ei:
            main(list(args))
        out, err = capsys.readouterr()
        return int(ei.value.code or 0), out, err

    return run
