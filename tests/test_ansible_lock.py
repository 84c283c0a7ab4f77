"""The lock files the Ansible roles install from cover pyproject.toml's extras.

requirements/<extra>.lock is written by scripts/lock-requirements.sh; the
sdagent and intel_openmp roles install it with --require-hashes and the
agent's own wheel with --no-deps, so a lock that misses a dependency (or a
stale one) breaks every host. Pure Python, no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKS = {"native": True, "ipex": True, "openvino": True, "iomp": False}  # extra -> includes the base dependencies
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _expected(extra: str, with_base: bool) -> list[str]:
    project = _project()
    return (list(project.get("dependencies", [])) if with_base else []) + list(project["optional-dependencies"][extra])


def _lock(extra: str) -> tuple[dict[str, str], str]:
    text = (REPO / "requirements" / f"{extra}.lock").read_text()
    pins: dict[str, str] = {}
    for line in text.splitlines():
        m = PIN.match(line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins, text


@pytest.mark.parametrize("extra", sorted(LOCKS))
def test_lock_covers_the_extra(extra: str) -> None:
    pins, _ = _lock(extra)
    missing = sorted({_req_name(r) for r in _expected(extra, LOCKS[extra])} - set(pins))
    assert not missing, f"requirements/{extra}.lock lacks {missing}: run scripts/lock-requirements.sh {extra}"


@pytest.mark.parametrize("extra", sorted(LOCKS))
def test_lock_was_made_from_the_current_pyproject(extra: str) -> None:
    _, text = _lock(extra)
    m = re.search(r"^# Requirements: (.*)$", text, re.M)
    assert m, f"requirements/{extra}.lock has no '# Requirements:' header line"
    recorded = m.group(1).split(" ")
    for req in _expected(extra, LOCKS[extra]):
        assert req.replace(" ", "") in recorded, (
            f"requirements/{extra}.lock was made for other requirements than pyproject.toml's {req!r}: "
            f"run scripts/lock-requirements.sh {extra}")


@pytest.mark.parametrize("extra", sorted(LOCKS))
def test_every_pin_has_a_hash_and_only_wheels(extra: str) -> None:
    _, text = _lock(extra)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    for block in blocks:
        m = PIN.match(block)
        if m:
            assert "--hash=sha256:" in block, f"{extra}.lock: {m.group(1)} has no hash"
    assert "--only-binary :all:" in text


@pytest.mark.parametrize("extra", ["native", "ipex", "openvino"])
def test_lock_pins_satisfy_pyproject(extra: str) -> None:
    specifiers = pytest.importorskip("packaging.requirements")
    from packaging.version import Version

    pins, _ = _lock(extra)
    for req in _expected(extra, True):
        r = specifiers.Requirement(req)
        version = Version(pins[_norm(r.name)])
        assert r.specifier.contains(version, prereleases=True), f"{extra}.lock pins {r.name}=={version}, pyproject wants {req}"


@pytest.mark.parametrize("extra", ["native", "openvino"])
def test_native_lock_is_the_cpu_torch_build(extra: str) -> None:
    pins, _ = _lock(extra)
    assert pins["torch"].endswith("+cpu"), f"{extra}.lock pins torch {pins['torch']}, not a +cpu build"
    assert not any(name.startswith("nvidia-") for name in pins), f"{extra}.lock pulls CUDA packages"
    assert "torchvision" not in pins, f"{extra}.lock pins torchvision (PyPI's is a CUDA build; breaks transformers)"
