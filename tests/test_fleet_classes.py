"""The fleet report groups hosts by class, with each host's speed against stock and against its class.

The Markdown template is rendered here with Jinja as Ansible's template lookup renders it (trim_blocks),
from rows shaped as fleet-row.j2 writes them; the Molecule fleet scenario runs the real playbook.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[1]


def render(hosts: list[dict]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "playbooks" / "templates")),
                             trim_blocks=True, undefined=jinja2.Undefined)
    fleet = {"hosts": hosts, "passed": [h["host"] for h in hosts if h.get("verdict") == "pass"],
             "failed": [h["host"] for h in hosts if h.get("verdict") != "pass"], "images_per_min_total": None}
    return env.get_template("fleet-report.md.j2").render(__fleet=fleet)


def row(host: str, cls: str | None, x_stock=None, x_class=None, status="pass", tuned_on=None) -> dict:
    r = {"host": host, "verdict": "pass", "exit_code": 0, "plan": {}, "plan_source": "tuned",
         "plan_summary": "default, omp=default, threads=2, bind=none, native bf16, channels_last, compiled"}
    if cls:
        r["host_class"] = {"id": cls, "description": f"amx, 1x2 cores (no SMT) [{cls}]", "plan_tuned_on": tuned_on,
                           "ratio_to_stock": x_stock, "ratio_to_class": x_class, "class_status": status}
    return r


def test_hosts_are_grouped_by_class_with_their_ratios():
    md = render([row("b", "aaaaaaaaaaaa", 3.1, 0.98, tuned_on="aaaaaaaaaaaa"),
                 row("a", "aaaaaaaaaaaa", 2.2, 0.71, "warn", tuned_on="aaaaaaaaaaaa"),
                 row("c", "bbbbbbbbbbbb", 1.5, None, "skip"),
                 {"host": "d", "verdict": "error", "exit_code": None}])
    section = md[md.index("## Hosts by class"):]
    first, second = section.index("### class aaaaaaaaaaaa"), section.index("### class bbbbbbbbbbbb")
    assert first < second
    a_rows = section[first:second].splitlines()
    table = [x for x in a_rows if x.startswith("| a ") or x.startswith("| b ")]
    assert [x.split("|")[1].strip() for x in table] == ["a", "b"]  # sorted by host within the class
    assert table[0].endswith("| aaaaaaaaaaaa | 2.20 | 0.71 | warn |")
    assert table[1].endswith("| aaaaaaaaaaaa | 3.10 | 0.98 | pass |")
    assert "| c | pass |" in section[second:] and "| - | 1.50 | - | skip |" in section[second:]
    assert "No class known (no verify report): d." in section


def test_a_fleet_without_classes_still_renders():
    md = render([{"host": "x", "verdict": "error", "exit_code": None}])
    assert "### class" not in md and "No class known (no verify report): x." in md
