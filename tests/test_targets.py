"""Targets file: strict validation and first-match selection."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from sdagent.errors import BadInput
from sdagent.resources import example_targets
from sdagent.verifying.targets import (
    DEFAULT_CONFIDENCE, DEFAULT_MIN_RUNS, HostKey, load_targets, mismatches, parse_targets, select_target,
)

VM = HostKey(flags=("avx2", "fma"), cpu_model="AMD EPYC 7B13", physical_cores=2, model="tiny",
             height=64, width=64, steps=2, precision="fp32", backend="native")
SPR = HostKey(flags=("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"),
              cpu_model="Intel(R) Xeon(R) Platinum 8480+", physical_cores=56, model="sd15",
              height=512, width=512, steps=20, precision="bf16", backend="ipex")


def entry(**kw):
    base = {"name": "e", "match": {}, "p50_s": 1.0}
    base.update(kw)
    return base


def test_defaults_and_fields():
    (t,) = parse_targets([entry(p90_s=2.0)], "f.yml")
    assert t.name == "e" and t.p50_s == 1.0 and t.p90_s == 2.0
    assert t.min_runs == DEFAULT_MIN_RUNS and t.max_spread is None and t.confidence == DEFAULT_CONFIDENCE
    assert t.stock_check is False and t.source == "f.yml#1"
    assert t.to_dict()["match"] == {}


def test_mapping_with_targets_key_is_accepted():
    ts = parse_targets({"targets": [entry(name="a"), entry(name="b")]}, "f.yml")
    assert [t.name for t in ts] == ["a", "b"]


@pytest.mark.parametrize("data, needle", [
    ([entry(p50_s=0)], "key 'p50_s': must be a number > 0, got 0"),
    ([entry(p50_s=-1.5)], "key 'p50_s': must be a number > 0, got -1.5"),
    ([entry(p50_s="fast")], "key 'p50_s'"),
    ([entry(p90_s=-2)], "key 'p90_s'"),
    ([entry(p50_s=2.0, p90_s=1.0)], "below p50_s"),
    ([entry(min_runs=4)], "key 'min_runs': must be an integer >= 5"),
    ([entry(confidence=1.0)], "key 'confidence': must be a number in (0.5, 1)"),
    ([entry(confidence=float("nan"))], "key 'confidence'"),
    ([entry(min_runs=True)], "key 'min_runs'"),
    ([entry(min_runs=2.5)], "key 'min_runs'"),
    ([entry(max_spread=0)], "key 'max_spread'"),
    ([entry(bf16_max_diff=3)], "key 'bf16_max_diff'"),
    ([entry(stock_check="yes")], "key 'stock_check'"),
    ([entry(latency=3)], "entry #1 'e': key 'latency': unknown key"),
    ([entry(match={"cores": 4})], "key 'match.cores': unknown key"),
    ([entry(match={"isa": []})], "key 'match.isa'"),
    ([entry(match={"isa": [1]})], "key 'match.isa'"),
    ([entry(match={"height": "512"})], "key 'match.height'"),
    ([entry(match={"precision": "fp16"})], "key 'match.precision'"),
    ([entry(match={"min_physical_cores": 8, "max_physical_cores": 4})], "can never match"),
    ([entry(match=[])], "key 'match': must be a mapping"),
    ([{"name": "e", "p50_s": 1.0}], "key 'match': required"),
    ([{"name": "e", "match": {}}], "key 'p50_s': required"),
    ([{"match": {}, "p50_s": 1.0}], "entry #1: key 'name'"),
    ([entry(name="a"), entry(name="a")], "entry #2 'a': key 'name': duplicate"),
    ([], "non-empty list"),
    (None, "non-empty list"),
    ({"entries": []}, "key 'entries': unknown top-level key"),
    (["just a string"], "entry #1: must be a mapping"),
])
def test_bad_entries_name_file_entry_and_key(data, needle):
    with pytest.raises(BadInput) as exc:
        parse_targets(data, "t.yml")
    msg = str(exc.value)
    assert msg.startswith("targets file t.yml")
    assert needle in msg
    assert "\n" not in msg


def test_load_targets_file_errors(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_targets(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("- name: [unclosed\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_targets(bad)
    ok = tmp_path / "ok.yml"
    ok.write_text(yaml.safe_dump([entry(name="x")]))
    assert load_targets(ok)[0].source == f"{ok}#1"


def test_matching_conditions():
    (t,) = parse_targets([entry(match={
        "isa": ["AMX_BF16"], "cpu_model": "xeon", "min_physical_cores": 32, "max_physical_cores": 64,
        "model": ["sd15", "*stable-diffusion-v1-5*"], "height": 512, "width": 512, "steps": 20,
        "precision": "bf16", "backend": "ipex"})])
    assert mismatches(t.match, SPR) == []
    why = mismatches(t.match, VM)
    joined = "; ".join(why)
    for part in ("lacks ISA amx_bf16", "CPU model", "2 cores < 32", "model 'tiny'", "height 64 != 512",
                 "steps 2 != 20", "precision fp32 != bf16", "backend native != ipex"):
        assert part in joined
    from dataclasses import replace

    assert mismatches(t.match, replace(SPR, model="runwayml-stable-diffusion-v1-5-local")) == []
    assert "56" not in joined and mismatches(t.match, replace(SPR, physical_cores=65)) == ["65 cores > 64"]


def test_first_matching_entry_wins_and_none_explains():
    ts = parse_targets([
        entry(name="xeon", match={"isa": ["amx_bf16"]}),
        entry(name="any-tiny", match={"model": "tiny"}),
        entry(name="tiny-again", match={"model": "tiny"}),
    ])
    assert select_target(ts, SPR).target.name == "xeon"
    sel = select_target(ts, VM)
    assert sel.target.name == "any-tiny"
    assert sel.skipped == (("xeon", ("lacks ISA amx_bf16",)),)
    from dataclasses import replace

    none = select_target(ts, replace(VM, model="sd15"))
    assert none.target is None
    assert "xeon: lacks ISA amx_bf16" in none.explain() and "tiny-again" in none.explain()


def test_shipped_examples_parse_and_select():
    ts = load_targets(example_targets())
    names = [t.name for t in ts]
    assert names[0].startswith("sd15") and "tiny-smoke" in names
    assert all(t.match.to_dict() for t in ts), "no catch-all entry: it would hide exit 4"
    assert select_target(ts, SPR).target.name == names[0]
    assert select_target(ts, VM).target.name == "tiny-smoke"
    from dataclasses import replace

    # sd15 on a 2-core AVX2 VM: nothing shipped matches -> exit 4, not a pass against Xeon ceilings.
    vm_sd15 = replace(VM, model="sd15", height=512, width=512, steps=20)
    assert select_target(ts, vm_sd15).target is None
    sd = ts[0]
    assert sd.p50_s < sd.p90_s and sd.min_runs >= 10, "p90 must be a real nearest-rank p90"


def test_yaml_text_with_comments(tmp_path):
    p = tmp_path / "t.yml"
    p.write_text(textwrap.dedent("""\
        # a comment
        targets:
          - name: only
            match: {model: tiny}
            p50_s: 2
            stock_check: true
    """))
    (t,) = load_targets(p)
    assert t.p50_s == 2.0 and t.stock_check is True and t.match.model == ("tiny",)


def test_family_matches_one_name_or_a_list():
    from dataclasses import replace

    (one, many) = parse_targets([entry(name="one", match={"family": "sd-turbo"}),
                                 entry(name="many", match={"family": ["sdxl-turbo", "lcm"]})])
    assert one.match.family == ("sd-turbo",) and one.match.to_dict() == {"family": ["sd-turbo"]}
    turbo = replace(VM, family="sd-turbo")
    assert mismatches(one.match, turbo) == []
    assert mismatches(one.match, VM) == ["family sd1 is not sd-turbo"]
    assert mismatches(many.match, replace(VM, family="lcm")) == []
    assert select_target((one, many), replace(VM, family="sdxl-turbo")).target.name == "many"
    assert select_target((one, many), VM).target is None
    assert VM.family == "sd1" and VM.to_dict()["family"] == "sd1"  # the default: the seed's family


@pytest.mark.parametrize("family", ["sdxl_turbo", ["sd1", "SD2"], [], 3])
def test_unknown_family_is_one_line_naming_it_and_the_known(family):
    with pytest.raises(BadInput) as exc:
        parse_targets([entry(match={"family": family})], "t.yml")
    msg = str(exc.value)
    assert msg.startswith("targets file t.yml: entry #1 'e': key 'match.family': ") and "\n" not in msg
    if isinstance(family, str) or family == ["sd1", "SD2"]:
        bad = family if isinstance(family, str) else "SD2"
        assert f"unknown family {bad!r}" in msg
        assert "known: sd1, sd2, sd2-v, sd-turbo, sdxl, sdxl-turbo, lcm, lcm-sdxl" in msg


def test_shipped_examples_match_the_tiny_families_by_family():
    from dataclasses import replace

    ts = load_targets(example_targets())
    assert select_target(ts, replace(VM, model="tiny-sdxl", family="sdxl")).target.name == "tiny-families-smoke"
    assert select_target(ts, replace(VM, model="tiny-lcm", family="lcm")).target.name == "tiny-families-smoke"
    assert select_target(ts, replace(VM, model="tiny-other", family="sd1")).target is None
