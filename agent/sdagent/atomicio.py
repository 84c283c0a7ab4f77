"""Atomic file writes: the old file stays whole until the new one is complete."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sdagent.errors import BadInput


def check_parent(path: str | os.PathLike[str]) -> Path:
    """Fail early, with one line, when the output's directory does not exist."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"output directory does not exist: {parent} (for {p})")
    return p


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write via a temp file in the same directory, fsync, then rename over the target."""
    p = check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", mode)
