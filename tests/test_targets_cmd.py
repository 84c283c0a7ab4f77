"""`sdagent targets check`: the loader verify uses, at provision time (issue 17, item 5).

The Ansible role pipes the targets it is about to write into `sdagent targets
check -`; a file the agent would refuse at verify time (min_runs below 5) must
fail there, exit 2, one line naming the key, nothing on stdout.
"""

from __future__ import annotations

import json

from clirun import sdagent

GOOD = """targets:
  - name: amx-tiny
    match: {isa: [amx_bf16], model: tiny}
    p50_s: 120
    p90_s: 180
    min_runs: 5
"""
LOW_RUNS = GOOD.replace("min_runs: 5", "min_runs: 3")


def test_valid_file_exit_0_names_entries(tmp_path):
    f = tmp_path / "targets.yml"
    f.write_text(GOOD)
    r = sdagent("targets", "check", str(f))
    assert r.returncode == 0, r.stderr
    assert "1 valid target(s): amx-tiny" in r.stdout


def test_min_runs_below_minimum_is_exit_2_one_line(tmp_path):
    f = tmp_path / "targets.yml"
    f.write_text(LOW_RUNS)
    r = sdagent("targets", "check", str(f))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "min_runs" in lines[0] and str(f) in lines[0]


def test_stdin_reads_like_a_file_and_names_stdin():
    ok = sdagent("targets", "check", "--json", "-", input=GOOD)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["file"] == "<stdin>" and [t["name"] for t in data["targets"]] == ["amx-tiny"]
    assert data["targets"][0]["min_runs"] == 5
    bad = sdagent("targets", "check", "-", input=LOW_RUNS)
    assert bad.returncode == 2
    line = bad.stderr.strip()
    assert line.startswith("sdagent: error: targets file <stdin>: entry #1 'amx-tiny': key 'min_runs'"), line
    assert "sdagent-targets-" not in line  # the private temporary copy is never named


def test_missing_file_and_empty_stdin_are_exit_2(tmp_path):
    missing = sdagent("targets", "check", str(tmp_path / "nope.yml"))
    assert missing.returncode == 2 and "nope.yml" in missing.stderr
    empty = sdagent("targets", "check", "-", input="")
    assert empty.returncode == 2 and "<stdin>" in empty.stderr


def test_stdin_that_is_not_utf8_is_exit_2_one_line_like_the_file():
    import subprocess

    from clirun import PY, REPO, clean_env

    r = subprocess.run([PY, "-m", "sdagent", "targets", "check", "-"], input=b"\xff\xfe", capture_output=True,
                       env=clean_env(), cwd=str(REPO), timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "targets file <stdin> cannot be read" in err and "sdagent-targets-" not in err
