"""The evidence table: the shipped data is what its results files say, and the rule reads it right."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from sdagent.errors import BadInput
from sdagent.planning.evidence import (FASTER, LEVERS, NOISE, SLOWER, Evidence, Measurement, Ratio,
                                       default_evidence, lever_finding, parse_evidence, positive_everywhere)

REPO = Path(__file__).resolve().parents[1]


def _paired_ratios(m: Measurement) -> list[float]:
    """Speed with / without per round, recomputed from the results file the measurement names."""
    data = json.loads((REPO / m.results).read_text())
    p = m.paired
    assert p is not None
    if p["kind"] == "ladder":
        def by_round(rung: str) -> dict[int, float]:
            return {s["round"]: s["latency_s"] for s in data["samples"][rung] if s.get("latency_s")}
        w, wo = by_round(p["with"]), by_round(p["without"])
        return [wo[r] / w[r] for r in w if r in wo]
    assert p["kind"] == "tune"
    data = data.get("tuning", data)  # a tuned plan file carries tune's record under "tuning"
    c = next(c for c in data["comparisons"] if {c["best"], c["candidate"]} == {p["with"], p["without"]})
    w, wo = (c["best_s"], c["candidate_s"]) if c["best"] == p["with"] else (c["candidate_s"], c["best_s"])
    return [b / a for a, b in zip(w, wo)]


def test_the_shipped_evidence_is_what_its_results_files_say():
    """Every figure that comes from a committed file is recomputed from that file; the rest name their source."""
    ev = default_evidence()
    assert len(ev.measurements) >= 10
    for m in ev.measurements:
        if m.results.startswith("docs/"):
            assert (REPO / m.results).is_file(), m.id
            r = _paired_ratios(m)
            assert len(r) == m.ratio.rounds, m.id
            assert (round(statistics.median(r), 3), round(min(r), 3), round(max(r), 3)) == \
                (m.ratio.median, m.ratio.min, m.ratio.max), m.id
            assert m.torch and m.command, m.id
            data = json.loads((REPO / m.results).read_text())
            assert data.get("tuning", data)["machine"]["versions"]["torch"] == m.torch, m.id
        else:
            assert m.results == "issue 21" and m.paired is None and "issue 21" in m.command, m.id


@pytest.mark.parametrize("cls", ["amx", "avx512_bf16", "avx2"])
@pytest.mark.parametrize("lever", ["jemalloc", "libiomp5"])
def test_the_preloads_measured_slower_on_every_class_measured(cls, lever):
    f = lever_finding(default_evidence(), lever, cls)
    assert not f.keep and f.on_class and all(m.verdict == SLOWER for m in f.on_class if m.precision == "fp32")
    assert f.evidence_text().startswith("measured ") and f" on {cls} hosts" in f.evidence_text()


def test_the_issue_example_reason():
    """'measured 0.63-0.92x the speed without it on amx hosts (2, 16 cores; torch 2.11.0, 2.13.0+cpu; evidence ...)'"""
    text = lever_finding(default_evidence(), "jemalloc", "amx").evidence_text()
    assert text.startswith("measured 0.63-0.92x the speed without it on amx hosts (2, 16 cores; "
                           "torch 2.11.0, 2.13.0+cpu; evidence ")
    assert "amx-16c-ladder-preloads-fp32" in text


def test_a_range_only_measurement_contributes_its_ends():
    text = lever_finding(default_evidence(), "jemalloc", "avx2").evidence_text()
    assert text.startswith("measured 0.33-0.85x the speed without it on avx2 hosts (2 cores; torch not recorded;")


def test_a_class_without_evidence_gets_the_conservative_answer():
    f = lever_finding(default_evidence(), "jemalloc", "avx512")
    assert not f.keep and not f.on_class and f.elsewhere
    assert f.evidence_text().startswith("not measured on avx512 hosts, so the conservative plan: 0.")
    t = lever_finding(default_evidence(), "tcmalloc", "amx")
    assert not t.keep and t.evidence_text() == "never measured, so the conservative plan"


@pytest.mark.parametrize("lever", ["native_bf16", "compile"])
def test_bf16_and_compile_measured_faster_wherever_measured(lever):
    ev = default_evidence()
    assert positive_everywhere(ev, lever)
    for cls in ("amx", "avx512_bf16"):
        assert lever_finding(ev, lever, cls).keep
    assert not positive_everywhere(ev, "jemalloc") and not positive_everywhere(ev, "tcmalloc")
    # a class nobody measured keeps what measured faster everywhere (the conservative plan)
    other = lever_finding(ev, lever, "avx512")
    assert other.keep and not other.on_class
    assert other.evidence_text().startswith("not measured on avx512 hosts, kept, as it measured faster on every class")


@pytest.mark.parametrize("ratio, verdict", [
    (Ratio(1.2, 1.05, 1.4, 3), FASTER),
    (Ratio(0.88, 0.83, 1.05, 3), SLOWER),  # median below 1, one round above: slower (the plan must not lose)
    (Ratio(None, 0.84, 0.85), SLOWER),
    (Ratio(1.02, 0.95, 1.1, 3), NOISE),
    (Ratio(None, 0.9, 1.1), NOISE),
])
def test_verdict_of_one_measurement(ratio, verdict):
    assert ratio.verdict == verdict


def _m(id_: str, cls: str, ratio: Ratio, levers=("jemalloc",)) -> Measurement:
    return Measurement(id_, "h", cls, 8, "2.13.0", tuple(levers), "fp32", "stock", ratio, "w", "c", "docs/x")


def test_keep_needs_a_faster_measurement_and_no_slower_one():
    fast, slow, noise = Ratio(1.2, 1.1, 1.3, 3), Ratio(0.8, 0.7, 0.9, 3), Ratio(1.0, 0.9, 1.1, 3)
    ev = Evidence((_m("a", "amx", fast), _m("b", "avx2", fast), _m("c", "avx2", slow), _m("d", "avx512", noise)))
    assert lever_finding(ev, "jemalloc", "amx").keep
    assert not lever_finding(ev, "jemalloc", "avx2").keep
    assert not lever_finding(ev, "jemalloc", "avx512").keep
    assert lever_finding(ev, "jemalloc", "amx").evidence_text().startswith("measured 1.20x the speed without it on amx hosts")
    assert not lever_finding(ev, "jemalloc", "baseline").keep  # faster on amx, slower on avx2: not everywhere
    only_fast = Evidence((_m("a", "amx", fast), _m("b", "avx2", fast)))
    assert lever_finding(only_fast, "jemalloc", "baseline").keep
    with pytest.raises(KeyError):
        lever_finding(ev, "hugepages", "amx")


GOOD = {"id": "x", "host": "h", "isa_class": "amx", "cores": 2, "torch": "2.13", "levers": ["jemalloc"],
        "precision": "fp32", "against": "stock", "ratio": {"median": 0.9, "min": 0.8, "max": 1.0, "rounds": 3},
        "workload": "w", "command": "c", "results": "docs/results/ladder.json"}


@pytest.mark.parametrize("change, words", [
    ({"levers": ["hugepages"]}, "levers ['hugepages']"),
    ({"isa_class": "sse"}, "isa_class 'sse'"),
    ({"ratio": {"median": 2.0, "min": 0.8, "max": 1.0}}, "need 0 < min <= median <= max"),
    ({"ratio": {"median": None, "min": 0, "max": 1.0}}, "need 0 < min"),
])
def test_a_bad_entry_is_named(change, words):
    text = json.dumps({"format": "sdagent-evidence/1", "measurements": [{**GOOD, **change}]})
    with pytest.raises(BadInput, match="measurement x") as e:
        parse_evidence(text, "e.json")
    assert words in str(e.value)


def test_bad_files_are_refused():
    with pytest.raises(BadInput, match="duplicate key"):
        parse_evidence('{"format": "sdagent-evidence/1", "format": "x"}')
    with pytest.raises(BadInput, match="format is not"):
        parse_evidence('{"format": "sdagent-evidence/0", "measurements": []}')
    two = json.dumps({"format": "sdagent-evidence/1", "measurements": [GOOD, GOOD]})
    with pytest.raises(BadInput, match="duplicate measurement ids"):
        parse_evidence(two)
    assert set(LEVERS) >= {lv for m in default_evidence().measurements for lv in m.levers}
