"""Tune once per host class (issue 21 item 3): roles/tuned_env/tasks/class_plan.yml run by ansible-playbook.

Three hosts on this machine (local connection, each its own configuration directory and injected
topology): two of one class, one of another. `sdagent topology` is the real agent; `sdagent tune` is
a stand-in that records each call and prints a tuned plan carrying the class it ran on (tune itself
is tested in test_tune.py). Needs ansible-playbook (the CI's Ansible venv, or one on PATH); skipped
without it. The Molecule fleet scenario runs site.yml on containers.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hosts import HOSTS, write_tree
from sdagent.host.topology import read_topology

REPO = Path(__file__).resolve().parents[1]


def _ansible_playbook() -> str | None:
    found = shutil.which("ansible-playbook")
    if found:
        return found
    cached = sorted(glob.glob(os.path.expanduser("~/.cache/sdagent-ci/venv-*/bin/ansible-playbook")))
    return cached[-1] if cached else None


PLAYBOOK = """
- name: Tune once per host class
  hosts: sdagent
  gather_facts: false
  roles:
    - sdagent_defaults
  tasks:
    - name: Write each host's injected topology (the tuned_env role's plan tasks do this in site.yml)
      ansible.builtin.copy:
        dest: "{{ sdagent_config_dir }}/topology.json"
        content: "{{ tuned_env_topology | to_nice_json }}\\n"
        mode: "0644"

    - name: Tune once per host class
      ansible.builtin.include_role:
        name: tuned_env
        tasks_from: class_plan.yml
      vars:
        __tuned_env_runuser: /usr/sbin/runuser

    - name: Report
      ansible.builtin.copy:
        dest: "{{ sdagent_config_dir }}/result.json"
        content: "{{ {'class': tuned_env_class.id, 'changed': tuned_env_class_plan_changed | bool,
                      'reason': tuned_env_class_plan_reason} | to_json }}\\n"
        mode: "0644"
"""

STUB = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
real = [{python!r}, "-m", "sdagent"]
env = dict(os.environ, PYTHONPATH={agent!r})
if "tune" not in args:
    os.execve(real[0], real + args, env)
topo = subprocess.run(real + args[:args.index("tune")] + ["topology", "--json"], env=env, capture_output=True,
                      text=True, check=True)
hc = json.loads(topo.stdout)["host_class"]
with open({log!r}, "a") as f:
    f.write(hc["id"] + "\\n")
if os.path.exists({fail!r} + hc["id"]):
    print("tune: the stock process failed: killed", file=sys.stderr)
    sys.exit(7)
print(json.dumps({{"plan": {{"format": "sdagent-plan/1", "source": "tuned", "settings": {{"precision": "bf16"}},
                             "tuning": {{"chosen": "topology plan", "host_class": hc}}}}}}))
"""


@pytest.fixture()
def fleet(tmp_path):
    playbook = _ansible_playbook()
    if playbook is None or not Path("/usr/sbin/runuser").exists() or os.geteuid() != 0:
        pytest.skip("needs ansible-playbook (the CI's Ansible venv), runuser and root (the role runs tune via runuser)")
    stub = tmp_path / "sdagent"
    stub.write_text(STUB.format(python=sys.executable, agent=str(REPO / "agent"), log=str(tmp_path / "tunes.log"),
                                fail=str(tmp_path / "fail-")))
    stub.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    amx = read_topology(write_tree(tmp_path / "t-amx", HOSTS["xeon-vm-2core-amx"])).to_dict()
    zen = read_topology(write_tree(tmp_path / "t-zen", HOSTS["epyc-2core-zen5"])).to_dict()
    hosts = {"h1": amx, "h2": amx, "h3": zen}
    inv = {"all": {"children": {"sdagent": {"hosts": {
        h: {"ansible_connection": "local", "ansible_python_interpreter": str(Path(playbook).parent / "python"),
            "sdagent_config_dir": str(tmp_path / h / "etc"), "sdagent_home": str(tmp_path / h / "home"),
            "sdagent_user": "root", "sdagent_group": "root", "sdagent_bin": str(stub),
            "tuned_env_verify_model": str(model), "tuned_env_topology": topo}
        for h, topo in hosts.items()}}}}}
    for h in hosts:
        (tmp_path / h / "etc").mkdir(parents=True)
        (tmp_path / h / "home").mkdir(parents=True)
    (tmp_path / "inventory.json").write_text(json.dumps(inv))
    (tmp_path / "play.yml").write_text(PLAYBOOK)

    def run(*extra: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
        return subprocess.run([playbook, "-i", str(tmp_path / "inventory.json"), str(tmp_path / "play.yml"),
                               "-e", f"tuned_env_class_store={tmp_path / 'store'}", *extra],
                              env=env, capture_output=True, text=True, timeout=600)

    def tunes() -> list[str]:
        log = tmp_path / "tunes.log"
        return log.read_text().split() if log.exists() else []

    def result(h: str) -> dict:
        return json.loads((tmp_path / h / "etc" / "result.json").read_text())

    def installed(h: str) -> dict | None:
        p = tmp_path / h / "etc" / "tuned-plan.json"
        return json.loads(p.read_text()) if p.exists() else None

    return run, tunes, result, installed, tmp_path


def test_one_tune_per_class_then_none(fleet):
    run, tunes, result, installed, tmp = fleet
    r = run()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    a, z = result("h1")["class"], result("h3")["class"]
    assert result("h2")["class"] == a != z
    assert sorted(tunes()) == sorted([a, z])  # one tune per class, not per host
    for h, cls in (("h1", a), ("h2", a), ("h3", z)):
        assert installed(h)["tuning"]["host_class"]["id"] == cls and result(h)["changed"]
    assert json.loads((tmp / "store" / a / "class.json").read_text())["id"] == a
    # a second run finds each class's plan on the controller: no tune, nothing changed
    r2 = run()
    assert r2.returncode == 0, r2.stdout[-3000:]
    assert len(tunes()) == 2 and not any(result(h)["changed"] for h in ("h1", "h2", "h3"))
    # asked to re-tune: once per class again
    assert run("-e", "tuned_env_retune=true").returncode == 0
    assert len(tunes()) == 4


def test_a_failing_class_keeps_the_derived_plan_and_the_others_go_on(fleet):
    run, tunes, result, installed, tmp = fleet
    r = run()
    assert r.returncode == 0
    z = result("h3")["class"]
    a = result("h1")["class"]
    (tmp / f"fail-{z}").write_text("")
    # a corrupt stored plan for the AVX512-BF16 class: re-tuned, and the tune fails
    (tmp / "store" / z / "plan.json").write_text("{not json")
    r = run()
    assert r.returncode == 0, r.stdout[-3000:]
    assert tunes().count(z) == 2 and tunes().count(a) == 1
    assert installed("h3") is None and "sdagent tune failed on h3 (exit 7)" in result("h3")["reason"]
    assert "keeps the derived plan" in r.stdout
    assert installed("h1")["tuning"]["host_class"]["id"] == a and result("h1")["reason"] == ""
    # a stored plan measured on another class is never installed
    (tmp / f"fail-{z}").unlink()
    (tmp / "store" / z / "plan.json").write_text(json.dumps({"tuning": {"host_class": {"id": a}}}))
    assert run().returncode == 0
    assert tunes().count(z) == 3 and installed("h3")["tuning"]["host_class"]["id"] == z
