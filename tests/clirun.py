"""Run the installed-from-source `sdagent` CLI in a fresh process, as a user would (one helper for every test).

The environment is this one minus any tuning variable (preloads, OpenMP/KMP, a plan file), with the
agent's source first on PYTHONPATH, so a test measures what it sets and nothing it inherited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    from sdagent.envvars import stock_env

    env = stock_env(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO / "agent"), env.get("PYTHONPATH")) if x)
    env.update(extra)
    return env


def sdagent(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            **kw) -> subprocess.CompletedProcess:
    """`sdagent ARGS` to completion: returncode, stdout, stderr."""
    return subprocess.run([PY, "-m", "sdagent", *args], env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), **kw)


def sdagent_popen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`sdagent ARGS` started in its own session (signals go to it alone), SIGINT at its default as a
    terminal's Ctrl-C would find it (a shell's background job inherits it ignored)."""
    return subprocess.Popen([PY, "-m", "sdagent", *args], env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(REPO), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
