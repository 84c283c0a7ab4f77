"""Process inspection parsers and the verify/bench renderers (text in, text out)."""

from __future__ import annotations

import json
import os
import re

import pytest

from sdagent.errors import Exit
from sdagent.host import process as procstate
from sdagent.verifying.report import prometheus_text, verify_table, write_json_report, write_prometheus
from sdagent.measuring.stats import summarize
from sdagent.verifying.targets import HostKey, parse_targets
from sdagent.verifying.checks import FAIL, PASS, SKIP, Check, VerifyResult, decide_exit

MAPS = """\
55d0c6a00000-55d0c6a01000 r--p 00000000 08:01 123 /usr/bin/python3.11
7f0000000000-7f0000100000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
7f0000100000-7f0000200000 r--p 00100000 08:01 456 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
7f0000200000-7f0000300000 r-xp 00000000 08:01 789 /opt/venv/lib/libiomp5.so
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
7f0000400000-7f0000500000 r-xp 00000000 08:01 790 /opt/venv/torch/lib/libtorch_cpu.so (deleted)
7f0000500000-7f0000600000 r--p 00000000 08:01 791 /usr/lib/locale/locale-archive
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
"""


def test_parse_maps_keeps_shared_objects_once_in_order():
    libs = procstate.parse_maps(MAPS)
    assert libs == ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/opt/venv/lib/libiomp5.so",
                    "/opt/venv/torch/lib/libtorch_cpu.so")
    assert procstate.notable(libs + ("/usr/lib/libz.so.1",)) == libs


def test_status_and_cpuinfo_parsers():
    assert procstate.parse_status_threads("Name:\tpython\nThreads:\t17\nCpus_allowed:\tff\n") == 17
    assert procstate.parse_status_threads("Name: x\n") is None
    assert procstate.parse_cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n") \
        == "Intel(R) Xeon(R) Platinum 8480+"
    assert procstate.parse_cpu_model("") == "unknown"


def test_is_mapped_resolves_links(tmp_path):
    real = tmp_path / "libiomp5.so"
    real.write_bytes(b"")
    (tmp_path / "link.so").symlink_to(real)
    assert procstate.is_mapped(str(tmp_path / "link.so"), [str(real)])
    assert not procstate.is_mapped(str(tmp_path / "link.so"), ["/usr/lib/libiomp5.so"])


def test_live_process_state_matches_the_kernel():
    st = procstate.process_state()
    assert st.affinity == tuple(sorted(os.sched_getaffinity(0)))
    assert any(os.path.basename(p).startswith("libc") for p in st.mapped)
    ms = procstate.machine_state()
    d = ms.to_dict()
    assert "plan" not in d and d["process_threads"] >= 1  # the host layer knows no plan
    assert d["versions"]["python"] and len(d["load_average"]) == 3
    json.dumps(d)


def test_process_affinity_is_the_union_over_threads():
    """Intel OpenMP's KMP_AFFINITY pins the main thread to one CPU: the process still owns all of them."""
    import threading

    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs 2 CPUs")
    release = threading.Event()
    helper = threading.Thread(target=release.wait)  # created with the full mask, keeps it
    helper.start()
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert procstate.read_affinity() == (min(allowed),)
        assert procstate.read_process_affinity() == tuple(sorted(allowed))
    finally:
        os.sched_setaffinity(0, allowed)
        release.set()
        helper.join()


def _result(code_checks, bench=None):
    t = parse_targets([{"name": 'quote"and\\slash', "match": {}, "p50_s": 2.0, "p90_s": 3.0}], "t.yml")[0]
    key = HostKey(("avx2",), "cpu", 2, "tiny", 64, 64, 2, "fp32", "native")
    return VerifyResult(exit_code=decide_exit(code_checks), checks=tuple(code_checks), target=t, host_key=key,
                        selection="", plan={"source": "derived", "settings": {"backend": "native",
                                                                               "precision": "fp32"}},
                        instance=1, model="tiny", bench=bench, started_at=1700000000.0, duration_s=3.5,
                        version="0.1.0")


class FakeBench:
    """What report.py reads of a bench.BenchResult."""

    def __init__(self, xs):
        self.latency = summarize(xs)
        self.latencies = list(xs)
        self.images_per_s = 1 / self.latency.median
        self.step = summarize([0.1, 0.2])
        self.warmup = 1
        self.startup_s = 4.5

        class W:
            def to_dict(self_inner):
                return {"width": 64, "height": 64, "steps": 2, "guidance": 7.5, "scheduler": "default", "seed": 0}

        self.workload = W()

    def to_dict(self):
        return {"latency_s": self.latency.to_dict()}


PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
                       r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')


def test_prometheus_textfile_format():
    checks = [Check("allocator", "tuning", PASS, "ok"), Check("latency_p50", "latency", FAIL, "slow", 2.5, 2.0),
              Check("bf16_vs_fp32", "quality", SKIP, "fp32")]
    text = prometheus_text(_result(checks, FakeBench([2.4, 2.5, 2.6])))
    assert text.endswith("\n")
    seen_type: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "summary") and name not in seen_type
            seen_type[name] = kind
            continue
        assert PROM_LINE.match(line), line
        metric = re.split(r"[{ ]", line)[0]
        base = re.sub(r"_(sum|count)$", "", metric) if seen_type.get(re.sub(r"_(sum|count)$", "", metric)) \
            == "summary" else metric
        assert base in seen_type, f"sample before its TYPE: {line}"
    assert 'sdagent_verify_exit_code{sdagent_instance="1"} 1' in text
    assert 'sdagent_check_ok{sdagent_instance="1",check="latency_p50",category="latency"} 0' in text
    assert 'check="bf16_vs_fp32"' not in text  # skipped checks are absent
    assert 'sdagent_latency_seconds{sdagent_instance="1",quantile="0.5"} 2.5' in text
    assert 'sdagent_latency_seconds_count{sdagent_instance="1"} 3' in text
    assert 'quantile="0.9"} 3.0' in text  # the target's p90 ceiling
    assert 'target="quote\\"and\\\\slash"' in text  # label escaping


def test_verify_table_and_json_files(tmp_path):
    checks = [Check("allocator", "tuning", FAIL, "planned jemalloc is not mapped", "not mapped", "jemalloc")]
    res = _result(checks)
    assert res.exit_code == Exit.TUNING_NOT_IN_EFFECT
    table = verify_table(res)
    assert table.splitlines()[0].startswith("sdagent verify: FAIL (exit 3: tuning not in effect)")
    assert "allocator" in table and "planned jemalloc is not mapped" in table
    write_json_report(tmp_path / "r.json", res)
    write_prometheus(tmp_path / "v.prom", res)
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["exit_code"] == 3 and d["verdict"] == "tuning not in effect"
    assert d["checks"][0]["exit_code"] == 3 and d["priority"] == [2, 7, 3, 4, 1, 6, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "v.prom"]  # no temp files left


def test_reports_refuse_a_missing_directory(tmp_path):
    from sdagent.errors import BadInput

    with pytest.raises(BadInput, match="output directory does not exist"):
        write_prometheus(tmp_path / "nope" / "v.prom", _result([]))
