"""A small on-disk cache for host probes that cost a subprocess (a compiler's test build, an import).

Why: `sdagent plan` gathers host facts on every command; building a test
program or importing IPEX (~8 s) each time would make every command slow.
A probe's answer depends only on what it probed (a compiler's path, version
and mtime; an install's path, version and mtime), so it is stored under a
digest of that key and recomputed when the key changes. A cache that cannot
be written (read-only home) only costs the probe again; it never fails a command.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from sdagent import atomicio

#: Bump when a probe's program or the meaning of its answer changes: older entries are ignored.
PROBE_FORMAT = 1


def cache_base(environ: Mapping[str, str] | None = None) -> Path:
    """sdagent's cache directory, as scripts/lib.sh computes it (SDAGENT_CACHE, XDG_CACHE_HOME, ~/.cache)."""
    env = os.environ if environ is None else environ
    if env.get("SDAGENT_CACHE"):
        return Path(env["SDAGENT_CACHE"])
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(xdg) / "sdagent"


def probe_path(kind: str, key: Mapping[str, Any], root: Path | None = None) -> Path:
    """Where the answer of probe `kind` for `key` is kept: <cache>/probes/<kind>-<digest>.json."""
    digest = hashlib.sha256(json.dumps({"format": PROBE_FORMAT, **key}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:20]
    return (root or cache_base()) / "probes" / f"{kind}-{digest}.json"


def cached(kind: str, key: Mapping[str, Any], compute: Callable[[], dict[str, Any]],
           root: Path | None = None) -> dict[str, Any]:
    """The stored answer for (kind, key), else `compute()` stored and returned.

    An answer with ``"cache": False`` (a probe that timed out: the host may only be busy) is returned
    but not stored. The stored record holds the key beside the answer, so a reader can see what it
    was computed for.
    """
    path = probe_path(kind, key, root)
    try:
        rec = json.loads(path.read_text())
        if isinstance(rec, dict) and rec.get("key") == json.loads(json.dumps(dict(key), default=str)):
            return dict(rec["answer"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    answer = compute()
    if answer.get("cache", True):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomicio.write_json(path, {"kind": kind, "key": dict(key), "answer": answer})
        except OSError:
            pass  # a read-only cache costs the probe next time, nothing else
    return answer
