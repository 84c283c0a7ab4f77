"""The OpenVINO int8 exports (plan setting ov_weights): what the exporter is told, and that the weights are part of
every key (the peer's export cache, the backend's artifact store) while a full export's key stays as it was.
No OpenVINO needed: the exporter is a fake runner, the store's builder is injected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdagent.errors import BadInput
from sdagent.pipeline import ov_artifacts as A
from sdagent.pipeline import ov_export as E
from sdagent.planning.runspec import RunSpec
from sdagent.planning.settings import OV_WEIGHTS, parse_setting

VERSIONS = {"openvino": "2026.4.1", "openvino-tokenizers": "2026.4.1.0", "optimum-intel": "2.2.0", "nncf": "3.4.0"}


def test_the_exporter_is_told_the_weights():
    full = E.export_argv("py", Path("/m"), Path("/o"))
    assert full[1:3] == ["-m", "optimum.commands.optimum_cli"] and "--weight-format" not in full  # the peer's
    int8 = E.export_argv("py", Path("/m"), Path("/o"), weights="int8")
    assert int8[-3:] == ["--weight-format", "int8", "/o"] and int8[:-3] == full[:-1]
    hyb = E.export_argv("py", Path("/m"), Path("/o"), weights="int8-hybrid")
    assert hyb[0] == "py" and hyb[3] == str(E.HYBRID_SCRIPT) and hyb[-4:] == ["--model", "/m", "--out", "/o"]
    assert "del sys.path[0]" in hyb[2]  # nothing of sdagent/pipeline shadows a library module
    with pytest.raises(BadInput, match="invalid OpenVINO export weights 'int4'"):
        E.export_argv("py", Path("/m"), Path("/o"), weights="int4")


def test_the_weights_are_in_the_export_cache_key_and_a_full_key_is_unchanged():
    stamps = (E.FileStamp("unet/x.bin", 10, 1),)
    full = E.export_key(stamps, VERSIONS)
    assert E.export_key(stamps, VERSIONS, weights="full") == full  # the peer's cache stays valid
    keys = {full, E.export_key(stamps, VERSIONS, weights="int8"), E.export_key(stamps, VERSIONS, weights="int8-hybrid")}
    assert len(keys) == 3


def make_model(path: Path) -> Path:
    for f in ("model_index.json", *E.TOKENIZER_FILES, "unet/config.json"):
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        (path / f).write_text("{}")
    return path


class FakeExporter:
    """Stands for the OpenVINO venv: answers the versions query, 'exports' the required files."""

    def __init__(self):
        self.argvs = []

    def __call__(self, argv, **kw):
        import subprocess

        if "-c" in argv and "importlib.metadata" in argv[argv.index("-c") + 1]:
            return subprocess.CompletedProcess(argv, 0, json.dumps(VERSIONS) + "\n", "")
        self.argvs.append(argv)
        out = Path(argv[-1])
        for f in E.REQUIRED_FILES:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_text("x")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_int8_and_full_exports_of_one_model_live_side_by_side_in_the_cache(tmp_path):
    model = make_model(tmp_path / "tiny")
    run = FakeExporter()
    full = E.export_model(model, python="py", root=tmp_path / "cache", run=run)
    int8 = E.export_model(model, python="py", root=tmp_path / "cache", run=run, weights="int8")
    assert full.path != int8.path and Path(int8.path).name.startswith("tiny-int8-") and int8.weights == "int8"
    assert "--weight-format" in run.argvs[1] and "--weight-format" not in run.argvs[0]
    assert Path(full.path).is_dir() and Path(int8.path).is_dir()  # another weights' export is not superseded
    assert json.loads((Path(int8.path) / E.MARKER).read_text())["weights"] == "int8"
    again = E.export_model(model, python="py", root=tmp_path / "cache", run=run, weights="int8")
    assert again.reused and len(run.argvs) == 2


def _key(**kw) -> A.OvKey:
    base = dict(model="fp", height=64, width=64, batch=2, precision="fp32", versions=VERSIONS, cpu=("vendor=X",))
    return A.OvKey(**{**base, **kw})


def test_the_artifact_key_has_the_weights_and_a_full_digest_is_unchanged():
    assert "weights" not in _key().to_dict()  # exports built before ov_weights keep their digest
    assert _key(weights="full").digest == _key().digest
    assert len({_key().digest, _key(weights="int8").digest, _key(weights="int8-hybrid/1").digest}) == 3
    assert _key(weights="int8").label().endswith("fp32 int8 weights")
    assert "weights 'int8' (here 'full')" in A.key_difference(_key(weights="int8").to_dict(), _key())


def _fake_builder(model_dir, tmp, key):
    (tmp / "ir").mkdir()
    (tmp / "ir" / "unet.xml").write_text(f"<net weights='{key.weights}'/>")
    (tmp / "blobs").mkdir()
    return "f32", {}


def test_a_full_and_an_int8_artifact_are_not_each_others_stale_export(tmp_path):
    store = A.OvStore(tmp_path)
    int8 = store.build(_key(weights="int8"), tmp_path, _fake_builder)
    assert store.lookup(_key()).stale == []  # the int8 export is another artifact, not a stale full one
    old = store.build(_key(weights="int8", versions={**VERSIONS, "nncf": "2.0"}), tmp_path, _fake_builder)
    found = store.lookup(_key(weights="int8"))
    assert found.artifact is not None and found.artifact.path == int8.path
    assert store.stale_for(_key(weights="int8")) == [f"{old.path.name}: built for nncf 2.0 (here 3.4.0)"]


def test_ov_weights_is_a_plan_setting_the_run_record_and_the_backend_key_carry():
    from sdagent.pipeline.ov_backend import _weights_key

    assert OV_WEIGHTS == ("full", "int8", "int8-hybrid")
    assert parse_setting("ov_weights", "INT8") == "int8"
    with pytest.raises(BadInput, match="invalid value 'int4' for plan setting 'ov_weights'"):
        parse_setting("ov_weights", "int4")
    spec = RunSpec("openvino", "fp32", False, False, True, ov_weights="int8-hybrid")
    assert RunSpec.from_dict(spec.to_dict()) == spec and "int8-hybrid weights" in spec.describe()
    assert RunSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "ov_weights"}).ov_weights == "full"
    with pytest.raises(BadInput, match="unknown ov_weights 'int4'"):
        RunSpec("openvino", "fp32", False, False, True, ov_weights="int4")
    assert _weights_key("int8-hybrid") == f"int8-hybrid/{E.HYBRID_RECIPE}" and _weights_key("int8") == "int8"


def test_the_exporters_time_limit_follows_the_weights():
    """The hybrid export calibrates (200 UNet calls): it ran past the 1-h limit of the data-free exports on the
    2-core VM, so its own limit is longer; every weights the plan can ask for has one."""
    assert set(E.EXPORT_TIMEOUT_S) == set(OV_WEIGHTS)
    assert E.export_timeout_s("full") == E.export_timeout_s("int8") == 3600.0 < E.export_timeout_s("int8-hybrid")


def test_a_plan_keeps_full_weights_unless_asked(tmp_path):
    from hosts import HOSTS, write_tree
    from sdagent.host.software import HostFacts, IpexStatus
    from sdagent.host.topology import read_topology
    from sdagent.planning.plan import make_plan

    topo = read_topology(write_tree(tmp_path, HOSTS["epyc-2core-avx2"]))
    facts = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None},
                      ipex=IpexStatus(False, None, "2.13.0", "not installed"))
    p = make_plan(topo, facts, overrides={"backend": "openvino"})
    assert p.ov_weights == "full" and "lossy" in {d.key: d.reason for d in p.decisions}["ov_weights"]
    asked = make_plan(topo, facts, overrides={"backend": "openvino", "ov_weights": "int8"})
    assert asked.run_spec.ov_weights == "int8"


# ---------------------------------------------------------------------------
# A real int8-hybrid export (NNCF's hybrid quantization through optimum-intel), in the OpenVINO venv
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.openvino
def test_model_compile_builds_a_real_int8_hybrid_export_and_the_backend_runs_it(ov_python, tiny_model, tmp_path):
    """`ov_weights=int8-hybrid`: pipeline/ov_hybrid.py exports the tiny model, calibrates on its prompts and
    quantizes it; the UNet's IR then holds FakeQuantize nodes (int8 activations: the hybrid part) and int8
    weight constants, the key records the recipe, and the backend generates an image on it."""
    import subprocess

    from clirun import REPO, clean_env

    def ov(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ov_python, "-m", "sdagent", *args], env=clean_env(), capture_output=True, text=True,
                              timeout=1200, cwd=str(REPO))

    plan, store = tmp_path / "plan.json", tmp_path / "artifacts"
    p = ov("plan", "--set", "backend=openvino", "--set", "precision=fp32", "--set", "ov_weights=int8-hybrid",
           "-o", str(plan))
    assert p.returncode == 0, p.stderr
    wl = ("--steps", "2", "--height", "64", "--width", "64")
    c = ov("--plan-file", str(plan), "model", "compile", "--model", str(tiny_model), *wl, "--artifacts", str(store),
           "--json")
    assert c.returncode == 0, c.stderr[-3000:]
    digest = json.loads(c.stdout)["artifacts"]["openvino"]
    d = store / "openvino" / digest
    m = json.loads((d / "manifest.json").read_text())
    assert m["key"]["weights"] == f"int8-hybrid/{E.HYBRID_RECIPE}"  # the recipe is part of the key
    assert m["export"]["weights"].startswith("int8-hybrid")
    unet = (d / "ir" / "unet" / "openvino_model.xml").read_text()
    assert unet.count('type="FakeQuantize"') > 0  # activations quantized: what int8 weights alone never add
    assert unet.count('element_type="i8"') + unet.count('element_type="u8"') > 0
    text = (d / "ir" / "text_encoder" / "openvino_model.xml").read_text()
    assert 'type="FakeQuantize"' not in text  # the other models: weights only (data-free)
    r = ov("--plan-file", str(plan), "run", "--model", str(tiny_model), "--prompt", "a red ship", *wl,
           "--artifacts", str(store), "-o", str(tmp_path / "a.png"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["artifacts"]["openvino"] == digest
