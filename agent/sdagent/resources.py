"""Where the shipped data lives: in the wheel (sdagent/templates) or the source tree (templates/)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_REPO = _PKG.parent.parent  # agent/sdagent -> repo root (editable installs, PYTHONPATH=agent)


def data_dir(name: str) -> Path:
    """`templates` or `examples`: packaged copy first, then the repo's top-level folder."""
    for candidate in (_PKG / name, _REPO / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"sdagent data folder {name!r} is missing from this install")


def example_targets() -> Path:
    return data_dir("examples") / "targets.yml"
