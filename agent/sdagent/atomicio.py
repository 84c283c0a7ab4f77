"""Atomic file writes: the old file stays whole until the new one is complete.

Two checks, two exit codes (errors.EXIT_CODES): an output whose directory cannot take a file
(missing, read-only, not writable by this user, no space left) is refused *before* any work
with :func:`check_output` (exit 2, naming the path); a write that still fails later is one
:class:`OutputError` line with the path and the OS error (exit 7), never a traceback.

Directories are built the same way (a temp directory renamed into place, :func:`replace_dir`), one
builder per name at a time (:func:`building`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from sdagent.errors import BadInput, Exit, SdagentError


class OutputError(SdagentError):
    """A write that failed after the checks (a disk filled meanwhile, an I/O error): exit 7."""

    exit_code = Exit.ERROR


def _kind(mode: int) -> str:
    """What a non-regular file is, in words (for the refusal)."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def target_of(path: str | os.PathLike[str]) -> Path:
    """The output path, checked: a FIFO, device or socket there is BadInput (the rename would replace the
    node itself with a plain file: as root, `-o /dev/null` would destroy /dev/null). A symbolic link is
    never written through (lstat): the rename replaces the link itself, so a link planted where the agent
    writes cannot send a root-owned write elsewhere (/etc/shadow)."""
    p = Path(path)
    try:
        mode = p.lstat().st_mode
    except OSError:
        return p
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise BadInput(f"output {path} is {_kind(mode)}, not a regular file: give a file name "
                       f"(--json prints to standard output)")
    return p


def check_parent(path: str | os.PathLike[str]) -> Path:
    """Fail early, with one line, when the output's directory does not exist; the path to write
    (target_of: a FIFO or device refused; a link replaced, never written through)."""
    if not str(path):
        raise BadInput("empty output path (an unset variable?): give a file name")
    p = target_of(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"output directory does not exist: {parent} (for {p})")
    return p


def dir_problem(directory: Path, statvfs=os.statvfs, access=os.access) -> str | None:
    """Why no file can be created in `directory` now, or None: not writable by this user, on a
    read-only filesystem (access(2) reports EROFS as not writable), or no block left for it."""
    if not access(directory, os.W_OK | os.X_OK):
        try:
            ro = bool(statvfs(directory).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        return "on a read-only filesystem" if ro else "not writable by this user"
    try:
        st = statvfs(directory)
    except OSError as exc:
        return f"cannot be inspected ({exc.strerror})"
    if st.f_blocks == 0:
        return "on a filesystem without storage (such as /proc or /sys)"
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    if free <= 0:
        return "on a full filesystem (no space left)"
    return None


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse (exit 2, one line naming the path) an output that cannot be written, before the work:
    an empty path, a missing directory, a directory, an unwritable, read-only or full filesystem."""
    p = check_parent(path)
    if p.is_dir():
        raise BadInput(f"{what} {p} is a directory: give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    why = dir_problem(parent)
    if why:
        raise BadInput(f"cannot write {what} {p}: its directory {parent} is {why}")
    return p


def check_output_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """The same for a directory of outputs: created (with its parents) when missing, then checked."""
    if not str(path):
        raise BadInput(f"empty {what} (an unset variable?): give a directory")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BadInput(f"{what} {p} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {what} {p}: {exc.strerror}") from None
    why = dir_problem(p)
    if why:
        raise BadInput(f"cannot write to {what} {p}: it is {why}")
    return p


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write via a temp file in the same directory, fsync, then rename over the target.

    Raises OutputError (exit 7) naming the path and the OS error when the write fails; the old
    file, if any, is left whole and no temp file is left behind.
    """
    p = check_parent(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from None
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


@contextlib.contextmanager
def building(root: str | os.PathLike[str], name: str) -> Iterator[None]:
    """Hold the build of `root/name` for this process, across processes: an exclusive flock on
    ``root/.name.lock`` (a second builder waits for the first, then finds its result), and, once held, the
    ``root/.name.*`` directories removed: the temp and old directories of builders killed midway (a tune's
    worker stopped at its budget's ceiling mid-export leaves several GB for SD-1.5), none of which can be in
    progress while the lock is held. The lock file stays (an empty file); without write access to it the lock
    is taken on a read-only descriptor."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = root / f".{name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"sdagent: waiting for another process's build of {name} in {root}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for p in root.glob(f".{name}.*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
        yield
    finally:
        os.close(fd)


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


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook refusing a key given twice in one object (RFC 8259 leaves duplicates'
    meaning open; json keeps the last silently, so a doubled "precision" would quietly change a plan)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_json(path: str | os.PathLike[str], what: str) -> object:
    """A user-named JSON file, keys unique in each object, or BadInput naming it and why."""
    try:
        return json.loads(read_text(path, what), object_pairs_hook=unique_keys)
    except ValueError as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}") from None


def _strict_loader():
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (YAML 1.2 requires unique keys;
    PyYAML keeps the last value silently, so a duplicated `p50_s:` would quietly change a target)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # type: ignore[override]
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def parse_yaml(text: str, origin: str) -> Any:
    """YAML (or JSON) text with unique keys, or BadInput naming `origin`, the line and the key."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BadInput(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from None


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """A user-named YAML file, keys unique (see parse_yaml)."""
    return parse_yaml(read_text(path, what), f"{what} {path}")
