"""Ansible content: no package host named, no exit-code table outside the agent.

Issue 12 (9): the repository names no package host; the Debian mirror and the
CPU-only torch index come from the machine's own configuration or a variable.
Issue 9: the fleet report takes verdicts from the agent's JSON; no Jinja
template carries its own table of exit-code meanings. Pure Python, no network.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_TREES = ["roles", "playbooks", "molecule", ".ci"]
URL = re.compile(r"https?://[^\s'\"`)<>]+")


def _files() -> list[Path]:
    out = []
    for tree in ANSIBLE_TREES:
        for p in sorted((REPO / tree).rglob("*")):
            if p.is_file() and p.suffix not in {".json", ".png"}:
                out.append(p)
    return out


def test_no_package_host_is_named() -> None:
    hits = []
    for p in _files():
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for url in URL.findall(line):
                hits.append(f"{p.relative_to(REPO)}:{n}: {url}")
    assert not hits, "URLs in the Ansible content (say 'your CPU-only torch index' etc.):\n" + "\n".join(hits)


def test_no_exit_code_table_in_templates() -> None:
    table = re.compile(r"\b[0-6]\s*:\s*['\"](pass|target missed|usage|tuning not in effect|no target|inconclusive|slower)")
    for p in sorted((REPO / "playbooks" / "templates").glob("*.j2")):
        assert not table.search(p.read_text()), f"{p.name} spells exit-code meanings; take `verdict` from the agent's JSON"
