"""roles/sdagent installs backend openvino (issue 22 item 1): its argument_specs, defaults and supported
platforms agree, each backend has its hashed lock, and the backend installed is resolved once from
sdagent_backend and the plan's overrides (evaluated here with jinja2, the engine Ansible renders vars with).

Molecule does not install the openvino lock (the CI wheelhouse holds native.lock and iomp.lock only: the
OpenVINO stack would add ~300 MB of wheels and a scenario's minutes to a CI run already over its budget);
ansible-lint and these tests cover the role's path.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "sdagent"


def load(rel: str):
    return yaml.safe_load((ROLE / rel).read_text())


def test_the_backend_choices_agree_with_the_default_the_platforms_and_the_locks():
    spec = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]["sdagent_backend"]
    choices = spec["choices"]
    assert "openvino" in choices and spec["default"] == load("defaults/main.yml")["sdagent_backend"] == "native"
    supported = load("vars/main.yml")["__sdagent_supported_architectures"]
    assert set(choices) == {b for bs in supported.values() for b in bs}
    assert "openvino" in supported["x86_64"] and "openvino" not in supported["aarch64"]  # the lock is x86_64
    for b in choices:
        assert (REPO / "requirements" / f"{b}.lock").is_file(), b


def _resolve(sdagent_backend: str, overrides) -> str:
    """The role's __sdagent_backend, rendered from vars/main.yml as Ansible would (plain Jinja2 filters)."""
    v = load("vars/main.yml")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    ctx = {"sdagent_backend": sdagent_backend}
    if overrides is not None:
        ctx["tuned_env_overrides"] = overrides
    else:
        env = jinja2.Environment()  # an undefined tuned_env_overrides: Ansible's default() handles it
    ctx["__sdagent_plan_backend"] = env.from_string(v["__sdagent_plan_backend"]).render(**ctx)
    return env.from_string(v["__sdagent_backend"]).render(**ctx), ctx["__sdagent_plan_backend"]


@pytest.mark.parametrize("backend, overrides, want", [
    ("native", None, "native"),
    ("openvino", None, "openvino"),
    ("native", {}, "native"),
    ("native", {"backend": "openvino"}, "openvino"),  # the plan asks: the openvino lock is installed
    ("native", {"backend": "OpenVINO"}, "openvino"),  # the agent's settings are case-blind
    ("ipex", {"backend": "native"}, "ipex"),  # native runs in any venv: sdagent_backend stands
    ("native", {"kmp_blocktime": 1}, "native"),
])
def test_the_backend_installed_follows_the_plan_or_sdagent_backend(backend, overrides, want):
    assert _resolve(backend, overrides)[0] == want


def test_the_lock_files_and_the_agreement_check_use_the_resolved_backend():
    v = load("vars/main.yml")
    assert "[__sdagent_backend]" in v["__sdagent_lock_files"]
    tasks = load("tasks/main.yml")
    platform = next(t for t in tasks if t["name"].startswith("Check that the OS family"))
    assert any("__sdagent_backend in" in c for c in platform["ansible.builtin.assert"]["that"])
    agree = next(t for t in tasks if t["name"] == "Check that sdagent_backend and the plan's backend agree")
    env = jinja2.Environment()
    for backend, plan, ok in (("openvino", "ipex", False), ("openvino", "openvino", True), ("native", "ipex", True),
                              ("openvino", "", True), ("native", "cuda", False)):
        got = all(env.from_string("{{ " + c + " }}").render(sdagent_backend=backend, __sdagent_plan_backend=plan)
                  == "True" for c in agree["ansible.builtin.assert"]["that"])
        assert got is ok, (backend, plan)


def test_tuned_env_builds_the_openvino_export_ahead_of_time():
    plan = yaml.safe_load((REPO / "roles" / "tuned_env" / "tasks" / "plan.yml").read_text())
    task = next(t for t in plan if t["name"] == "Build the plan's compiled packages ahead of time")
    env = jinja2.Environment()
    for backend, compile_, want in (("openvino", False, True), ("native", True, True), ("native", False, False),
                                    ("ipex", False, False)):
        data = {"backend": backend, "settings": {"compile": compile_}}
        conds = [c for c in task["when"] if "__tuned_env_plan_data" in c]
        got = all(env.from_string("{{ " + c.replace("| bool", "") + " }}").render(__tuned_env_plan_data=data)
                  == "True" for c in conds)
        assert got is want, (backend, compile_)
