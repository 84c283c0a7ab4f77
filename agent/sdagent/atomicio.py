"""Atomic file writes: the old file stays whole until the new one is complete."""

from __future__ import annotations

import json
import os
import shutil
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


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename a finished temp directory over `target`; an old one is removed only afterwards, and put
    back if the rename fails, so `target` is always whole: the old tree or the new one."""
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A user-named file's text, or one line saying why not (`what` names it: "plan file", ...)."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {p} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {p} cannot be read: {exc}") from None


def read_json(path: str | os.PathLike[str], what: str) -> object:
    try:
        return json.loads(read_text(path, what))
    except ValueError as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}") from None
