"""The tuned_env role's character sets for free-form settings equal the agent's (issue 18, item 5).

The role checks `tuned_env_overrides` before the agent sees them; two copies of
a character set drift (the role refused jemalloc's legal `dirty_decay_ms:-1` and
accepted `[ ]` in kmp_affinity, which the agent then refused mid-provisioning).
The agent publishes its sets (`sdagent plan --list-settings --json`); this test
pins the role's copies to them. Pure Python, no Ansible needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from clirun import sdagent
from sdagent.planning.settings import KNOBS, SETTING_PATTERNS, parse_setting

REPO = Path(__file__).resolve().parents[1]


def _role_patterns() -> dict[str, str]:
    data = yaml.safe_load((REPO / "roles" / "tuned_env" / "vars" / "main.yml").read_text())
    return data["__tuned_env_setting_patterns"]


def test_role_patterns_equal_the_agents():
    role = _role_patterns()
    for name, pattern in SETTING_PATTERNS.items():
        assert role[name] == "^" + pattern + "\\Z", f"{name}: role {role[name]!r} != agent {pattern!r}"


def test_the_values_the_issue_names():
    role = {k: re.compile(v) for k, v in _role_patterns().items() if k in SETTING_PATTERNS}
    assert role["malloc_conf"].match("dirty_decay_ms:-1,muzzy_decay_ms:-1")
    assert parse_setting("malloc_conf", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
    assert not role["kmp_affinity"].match("granularity=fine,[0,1]")
    assert not role["malloc_conf"].match("x\nExecStartPre=+/bin/true")


def test_every_choice_passes_the_roles_set_for_its_setting():
    role = _role_patterns()
    other = yaml.safe_load((REPO / "roles" / "tuned_env" / "vars" / "main.yml").read_text())[
        "__tuned_env_setting_default_pattern"]
    for knob in KNOBS.values():
        for choice in knob.choices:
            assert re.match(role.get(knob.name, other), choice), (knob.name, choice)


def test_list_settings_json_publishes_each_pattern():
    r = sdagent("plan", "--list-settings", "--json")
    assert r.returncode == 0, r.stderr
    table = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(table) == set(KNOBS)
    for name, pattern in SETTING_PATTERNS.items():
        assert table[name]["pattern"] == pattern
    assert table["allocator"]["pattern"] is None and table["allocator"]["choices"]
