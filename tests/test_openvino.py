"""The OpenVINO peer: job parsing, the export's cache key and atomicity (no OpenVINO needed), and end
to end on the tiny preset (export + one worker) when the OpenVINO venv exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdagent.errors import BadInput, SdagentError
from sdagent.peers import openvino as ovworker
from sdagent.peers import ovexport, ovrun
from sdagent.peers.ovexport import MARKER, REQUIRED_FILES, TOKENIZER_FILES, FileStamp, export_key
from sdagent.peers.ovjob import JOB_FORMAT, OvJob, compile_config, genai_scheduler
from sdagent.pipeline.workload import Workload

JOB = {"format": JOB_FORMAT, "ov_model": "/ov/sd15",
       "workload": {"prompt": "a cat", "steps": 20, "height": 512, "width": 512, "guidance": 7.5, "seed": 0,
                    "scheduler": "default", "negative_prompt": None},
       "precision": "bf16", "threads": None, "warmup": 1, "warmup_steps": 2, "repeats": 3, "static_shapes": True}


def job(**over) -> dict:
    d = json.loads(json.dumps(JOB))
    for k, v in over.items():
        if k in d["workload"] and k not in d:
            d["workload"][k] = v
        else:
            d[k] = v
    return d


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------


def test_a_job_crosses_as_json_and_back_unchanged():
    j = OvJob.from_dict(job(threads=2, precision="fp32", cache_dir="/c", probe_precision=True))
    assert j.threads == 2 and j.precision == "fp32" and j.workload == Workload(prompt="a cat")
    assert OvJob.from_dict(json.loads(json.dumps(j.to_dict()))) == j
    assert j.warmup_workload.steps == 2 and j.warmup_workload.height == 512


def test_the_documented_minimal_job_parses_with_defaults():
    d = {"format": JOB_FORMAT, "ov_model": "/ov", "workload": {"steps": 2, "height": 64, "width": 64}}
    j = OvJob.from_dict(d)
    assert (j.precision, j.threads, j.warmup, j.repeats, j.static_shapes, j.cache_dir) == ("bf16", None, 1, 1, True, None)


@pytest.mark.parametrize("over, needle", [
    ({"format": "sdagent-job/1"}, "format 'sdagent-job/1'"),
    ({"precision": "fp16"}, "invalid precision 'fp16'"),
    ({"threads": 0}, "invalid threads 0"),
    ({"threads": "2"}, "invalid threads '2'"),
    ({"threads": True}, "invalid threads True"),
    ({"repeats": -1}, "invalid repeats/warmup"),
    ({"warmup_steps": 0}, "invalid repeats/warmup"),
    ({"warmup": 0, "repeats": 0}, "nothing would be generated"),
    ({"static_shapes": "yes"}, "invalid static_shapes 'yes'"),
    ({"ov_model": ""}, "invalid ov_model ''"),
    ({"steps": 0}, "invalid steps 0"),
    ({"height": 500}, "invalid height 500"),
    ({"steps": "20"}, "bad workload"),
    ({"scheduler": "dpm"}, "scheduler 'dpm' is not available in OpenVINO GenAI"),
    ({"scheduler": "unipc"}, "scheduler 'unipc' is not available"),
    ({"scheduler": "karras"}, "unknown scheduler 'karras'"),
])
def test_a_bad_job_is_refused_with_the_bad_value_named(over, needle):
    with pytest.raises(BadInput, match=needle.replace("(", r"\(").replace("'", "'")) as e:
        OvJob.from_dict(job(**over))
    assert "\n" not in str(e.value)


def test_a_job_missing_a_key_or_with_an_unknown_workload_field_is_refused():
    d = job()
    del d["ov_model"]
    with pytest.raises(BadInput, match="missing 'ov_model'"):
        OvJob.from_dict(d)
    d = job()
    d["workload"]["sampler"] = "x"
    with pytest.raises(BadInput, match="bad workload"):
        OvJob.from_dict(d)
    with pytest.raises(BadInput, match="expected a JSON object"):
        OvJob.from_dict([1, 2])  # type: ignore[arg-type]


def test_schedulers_map_to_genai_types_and_default_keeps_the_exported_one():
    assert genai_scheduler("default") is None
    assert genai_scheduler("euler") == "EULER_DISCRETE" and genai_scheduler("euler_a") == "EULER_ANCESTRAL_DISCRETE"
    assert genai_scheduler("pndm") == "PNDM" and genai_scheduler("ddim") == "DDIM" and genai_scheduler("lms") == "LMS_DISCRETE"


def test_the_compile_config_always_states_the_precision_and_latency_hint():
    bf = compile_config(OvJob.from_dict(job()))
    assert bf == {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    f32 = compile_config(OvJob.from_dict(job(precision="fp32", threads=3, cache_dir="/c")))
    assert f32 == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "3",
                   "CACHE_DIR": "/c"}


# ---------------------------------------------------------------------------
# The worker's pure parts and its error path (no OpenVINO is imported before the job is valid)
# ---------------------------------------------------------------------------


def test_process_start_is_read_past_a_command_name_with_spaces_and_parens():
    fields = " ".join(str(i) for i in range(3, 53))  # field n holds n: starttime is 22
    assert ovworker.parse_stat_starttime(f"1234 (python) x) {fields}") == 22
    assert ovworker.parse_stat_starttime(f"1 (a b) {fields}") == 22
    age = ovworker.process_age_s()
    assert age is not None and 0 < age < time.time()


def test_a_generation_reports_the_torch_workers_timing_keys():
    g = ovworker.OvGeneration(1.5, [0.5, 0.7], [0.45, 0.65], 0.01, 0.2, 120.0)
    t = g.timings()
    assert {"total_s", "unet_steps_s", "vae_decode_s", "text_encode_s", "unet_s", "unet_step_mean_s"} <= set(t)
    assert t["unet_s"] == pytest.approx(1.2) and t["unet_step_mean_s"] == pytest.approx(0.6)
    with pytest.raises(SdagentError, match="ran 2 denoising steps for a request of 3"):
        ovworker.check_steps(g, Workload(steps=3))
    ovworker.check_steps(g, Workload(steps=2))


class _Dim:
    def __init__(self, n):
        self.is_static, self.n = n is not None, n

    def get_length(self):
        return self.n


class _Input:
    def __init__(self, name, dims):
        self.name, self.dims = name, dims

    def get_any_name(self):
        return self.name

    def get_partial_shape(self):
        return [_Dim(d) for d in self.dims]


class _Model:
    inputs = [_Input("sample", [None, 4, None, None]), _Input("timestep", [None]),
              _Input("encoder_hidden_states", [None, 77, 768]), _Input("added_cond", [None, None])]


def test_the_probe_compiles_the_unet_at_the_pipelines_static_shapes():
    assert ovworker.unet_shapes(_Model(), Workload(height=512, width=768, guidance=7.5)) == {
        "sample": [2, 4, 64, 96], "timestep": [1], "encoder_hidden_states": [2, 77, 768]}
    assert ovworker.unet_shapes(_Model(), Workload(height=64, width=64, guidance=1.0))["sample"] == [1, 4, 8, 8]


def test_the_worker_writes_an_error_result_for_a_bad_job(tmp_path):
    jf, out = tmp_path / "job.json", tmp_path / "out.json"
    jf.write_text(json.dumps(job(scheduler="dpm")))
    assert ovworker.main(["--job", str(jf), "--result", str(out)]) == 2
    data = json.loads(out.read_text())
    assert data["ok"] is False and "scheduler 'dpm' is not available" in data["error"]
    jf.write_text(json.dumps(job(ov_model=str(tmp_path / "nowhere"))))
    assert ovworker.main(["--job", str(jf), "--result", str(out)]) == 2
    assert "OpenVINO model directory does not exist" in json.loads(out.read_text())["error"]
    jf.write_text("{not json")
    assert ovworker.main(["--job", str(jf), "--result", str(out)]) == 2
    assert "is not valid JSON" in json.loads(out.read_text())["error"]


def test_an_incomplete_export_is_not_an_ov_model(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "openvino_model.xml").write_text("<net/>")
    with pytest.raises(BadInput, match="not a complete OpenVINO text-to-image export.*model_index.json"):
        ovworker.check_ov_model(str(tmp_path))


# ---------------------------------------------------------------------------
# The parent's side
# ---------------------------------------------------------------------------


def test_the_worker_launch_is_stock_and_finds_this_sdagent(tmp_path):
    py = tmp_path / "python"
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    env = {"PATH": "/bin", "PYTHONPATH": "/x", "LD_PRELOAD": "/lib/libjemalloc.so.2", "KMP_AFFINITY": "compact",
           "OMP_NUM_THREADS": "1"}
    launch = ovrun.openvino_launch(str(py), env, prefix=("numactl", "-C", "0-1"))
    assert launch.argv == ("numactl", "-C", "0-1", str(py), "-m", "sdagent.peers.openvino")
    assert launch.env["PYTHONPATH"].split(os.pathsep) == [ovrun.AGENT_ROOT, "/x"]
    assert (Path(ovrun.AGENT_ROOT) / "sdagent" / "peers" / "openvino.py").is_file()
    assert not {"LD_PRELOAD", "KMP_AFFINITY", "OMP_NUM_THREADS"} & set(launch.env)


def test_the_openvino_python_is_the_env_var_else_the_default_venv(tmp_path):
    assert ovexport.openvino_python({"HOME": str(tmp_path)}) is None
    with pytest.raises(BadInput, match="no OpenVINO venv"):
        ovexport.require_openvino_python({"HOME": str(tmp_path)})
    default = tmp_path / ".cache" / "sdagent" / "venv-openvino" / "bin" / "python"
    default.parent.mkdir(parents=True)
    default.write_text("#!/bin/sh\n")
    default.chmod(0o755)
    assert ovexport.openvino_python({"HOME": str(tmp_path)}) == str(default)
    assert ovexport.openvino_python({"SDAGENT_CACHE": str(tmp_path / "c")}) is None
    with pytest.raises(BadInput, match="invalid SDAGENT_OPENVINO_PYTHON"):
        ovexport.openvino_python({"SDAGENT_OPENVINO_PYTHON": str(tmp_path / "missing")})


# ---------------------------------------------------------------------------
# The export: cache key, atomicity, reuse (a fake optimum-cli)
# ---------------------------------------------------------------------------

VERSIONS = {"openvino": "2026.4.1", "openvino-tokenizers": "2026.4.1.0", "optimum": "2.3.0",
            "optimum-intel": "2.2.0", "nncf": "3.4.0", "transformers": "5.5.4", "diffusers": "0.39.0",
            "torch": "2.13.0+cpu"}


def make_model(path: Path) -> Path:
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", *TOKENIZER_FILES):
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        (path / f).write_text(f"contents of {f}")
    return path


class FakeOptimum:
    """Stands in for subprocess.run: answers the versions query, 'exports' by writing files."""

    def __init__(self, versions=None, write=REQUIRED_FILES, rc=0, during=None):
        self.versions = dict(VERSIONS if versions is None else versions)
        self.write, self.rc, self.during = write, rc, during
        self.exports: list[list[str]] = []
        self.timeouts: list[float | None] = []

    def __call__(self, argv, **kw):
        if argv[1] == "-c":
            return subprocess.CompletedProcess(argv, 0, json.dumps(self.versions) + "\n", "")
        assert argv[1:5] == ["-m", "optimum.commands.optimum_cli", "export", "openvino"], argv
        assert kw["env"]["HF_HUB_OFFLINE"] == "1" and "LD_PRELOAD" not in kw["env"]
        self.exports.append(list(argv))
        self.timeouts.append(kw.get("timeout"))
        out = Path(argv[-1])
        for f in self.write:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_text("x")
        if self.during:
            self.during()
        return subprocess.CompletedProcess(argv, self.rc, "", "Traceback ...\nRuntimeError: boom\n" if self.rc else "")


def stamps(tmp_path) -> tuple[FileStamp, ...]:
    return ovexport.model_stamps(make_model(tmp_path / "m"))


def test_the_key_is_stable_and_changes_with_any_file_or_version(tmp_path):
    s = stamps(tmp_path)
    k = export_key(s, VERSIONS)
    assert len(k) == 12 and int(k, 16) >= 0 and export_key(s, dict(reversed(list(VERSIONS.items())))) == k
    assert [x.path for x in s] == sorted(x.path for x in s) and "tokenizer/vocab.json" in [x.path for x in s]
    grown = tuple(FileStamp(x.path, x.size + (x.path.endswith(".safetensors")), x.mtime_ns) for x in s)
    touched = tuple(FileStamp(x.path, x.size, x.mtime_ns + (x.path == "model_index.json")) for x in s)
    renamed = tuple(FileStamp(x.path.replace("unet/", "unet2/"), x.size, x.mtime_ns) for x in s)
    others = {export_key(grown, VERSIONS), export_key(touched, VERSIONS), export_key(renamed, VERSIONS),
              export_key(s, {**VERSIONS, "openvino": "2026.5.0"}), export_key(s, {**VERSIONS, "optimum-intel": "2.3"}),
              export_key(s[:-1], VERSIONS), export_key(s, VERSIONS, task="image-to-image")}
    assert len(others) == 7 and k not in others


def test_a_model_the_exporter_cannot_read_is_refused(tmp_path):
    with pytest.raises(BadInput, match="model directory does not exist"):
        ovexport.check_model_dir(tmp_path / "none")
    with pytest.raises(BadInput, match="no model_index.json"):
        ovexport.check_model_dir(tmp_path)
    m = make_model(tmp_path / "m")
    (m / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(BadInput, match="lacks tokenizer/merges.txt: openvino-tokenizers"):
        ovexport.check_model_dir(m)


def test_export_lands_atomically_in_the_cache_then_is_reused(tmp_path):
    model, root, fake = make_model(tmp_path / "sd15"), tmp_path / "cache", FakeOptimum()
    first = ovexport.export_model(model, python="/venv/bin/python", root=root, run=fake)
    target = Path(first.path)
    assert not first.reused and first.export_s is not None and len(fake.exports) == 1
    assert target.parent == root and target.name == f"sd15-{first.key}"
    argv = fake.exports[0]
    assert argv[argv.index("--model") + 1] == str(model) and argv[argv.index("--task") + 1] == "text-to-image"
    assert Path(argv[-1]).parent == root and Path(argv[-1]).name.startswith(".sd15-")  # exported into a temp sibling
    marker = json.loads((target / MARKER).read_text())
    assert marker["key"] == first.key and marker["model"] == str(model) and marker["versions"] == VERSIONS
    assert sorted(p.name for p in root.iterdir()) == [f".{target.name}.lock", target.name]  # no temp left
    again = ovexport.export_model(model, python="/venv/bin/python", root=root, run=fake)
    assert again.reused and again.path == first.path and again.export_s is None and len(fake.exports) == 1
    assert fake.timeouts == [ovexport.export_timeout_s("full")]  # the exporter ran under the weights' limit


def test_a_failed_or_partial_export_leaves_nothing_to_reuse(tmp_path):
    model, root = make_model(tmp_path / "m"), tmp_path / "cache"
    with pytest.raises(SdagentError, match=r"export of .* failed \(exit 1\): Traceback ... \| RuntimeError: boom"):
        ovexport.export_model(model, python="/p", root=root, run=FakeOptimum(write=REQUIRED_FILES[:3], rc=1))
    with pytest.raises(SdagentError, match="is incomplete: no .*unet/openvino_model.bin"):
        ovexport.export_model(model, python="/p", root=root,
                              run=FakeOptimum(write=[f for f in REQUIRED_FILES if f != "unet/openvino_model.bin"]))
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    # a directory at the target without the marker (a copy interrupted, a crashed older tool) is replaced,
    # even when every file is there: only the marker, written last, says the export finished
    key = export_key(ovexport.model_stamps(model), VERSIONS)
    partial = root / f"m-{key}"
    for f in REQUIRED_FILES:
        (partial / f).parent.mkdir(parents=True, exist_ok=True)
        (partial / f).write_text("half")
    fake = FakeOptimum()
    res = ovexport.export_model(model, python="/p", root=root, run=fake)
    assert not res.reused and len(fake.exports) == 1 and res.path == str(partial)
    assert (partial / MARKER).is_file() and (partial / "unet" / "openvino_model.xml").read_text() == "x"
    # and a marked export missing a file (deleted by hand) is not reused either
    (partial / "unet" / "openvino_model.bin").unlink()
    assert not ovexport.export_model(model, python="/p", root=root, run=fake).reused and len(fake.exports) == 2


def test_an_export_killed_midway_leaves_a_temp_dir_that_the_next_one_removes(tmp_path):
    model, root = make_model(tmp_path / "m"), tmp_path / "cache"
    key = export_key(ovexport.model_stamps(model), VERSIONS)
    stale = root / f".m-{key}.tmp-abc123"
    (stale / "unet").mkdir(parents=True)
    res = ovexport.export_model(model, python="/p", root=root, run=FakeOptimum())
    assert not stale.exists() and Path(res.path).is_dir()


def test_a_changed_model_is_exported_again_and_its_old_export_removed(tmp_path):
    model, root, fake = make_model(tmp_path / "m"), tmp_path / "cache", FakeOptimum()
    other = make_model(tmp_path / "elsewhere" / "m")  # same name, another model: its export stays
    kept = ovexport.export_model(other, python="/p", root=root, run=fake)
    old = ovexport.export_model(model, python="/p", root=root, run=fake)
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_text("new weights, other size")
    new = ovexport.export_model(model, python="/p", root=root, run=fake)
    assert new.key != old.key and not new.reused and len(fake.exports) == 3
    assert not Path(old.path).exists() and Path(new.path).is_dir() and Path(kept.path).is_dir()
    newer_tools = ovexport.export_model(model, python="/p", root=root, run=FakeOptimum({**VERSIONS, "openvino": "2027.0"}))
    assert newer_tools.key != new.key and not newer_tools.reused


def test_a_model_changing_during_its_export_is_not_stamped(tmp_path):
    model, root = make_model(tmp_path / "m"), tmp_path / "cache"

    def rewrite():
        (model / "model_index.json").write_text("rewritten meanwhile, longer than before")

    with pytest.raises(SdagentError, match="changed during its export"):
        ovexport.export_model(model, python="/p", root=root, run=FakeOptimum(during=rewrite))
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_an_explicit_out_is_reused_or_replaced_but_a_foreign_directory_is_refused(tmp_path):
    model, out = make_model(tmp_path / "m"), tmp_path / "ov"
    fake = FakeOptimum()
    assert not ovexport.export_model(model, out, python="/p", run=fake).reused
    assert ovexport.export_model(model, out, python="/p", run=fake).reused
    newer = ovexport.export_model(model, out, python="/p", run=FakeOptimum({**VERSIONS, "diffusers": "0.43"}))
    assert not newer.reused and json.loads((out / MARKER).read_text())["key"] == newer.key
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_text("meow")
    with pytest.raises(BadInput, match="not empty and not an sdagent export"):
        ovexport.export_model(model, foreign, python="/p", run=fake)
    assert (foreign / "cat.jpg").read_text() == "meow"
    with pytest.raises(BadInput, match="output directory does not exist"):
        ovexport.export_model(model, tmp_path / "no" / "ov", python="/p", run=fake)


def test_a_venv_without_the_exporter_is_named(tmp_path):
    model = make_model(tmp_path / "m")
    with pytest.raises(BadInput, match="lacks optimum-intel"):
        ovexport.export_model(model, python="/p", root=tmp_path / "c",
                              run=FakeOptimum({**VERSIONS, "optimum-intel": None}))


# ---------------------------------------------------------------------------
# End to end on the tiny preset: export + one worker run (needs the OpenVINO venv)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ov_python() -> str:
    """$SDAGENT_OPENVINO_PYTHON, else the default venv's python; the e2e tests skip without one."""
    given = os.environ.get(ovexport.PYTHON_ENV)
    if given and not os.access(given, os.X_OK):
        pytest.skip(f"no OpenVINO venv: {ovexport.PYTHON_ENV}={given} is not an executable")
    py = given or ovexport.openvino_python()
    if py is None:
        pytest.skip(f"no OpenVINO venv: {ovexport.PYTHON_ENV} is unset and {ovexport.cache_base()}/venv-openvino "
                    "does not exist (scripts/lib.sh venv_openvino creates it)")
    return py


@pytest.fixture(scope="module")
def tiny_export(ov_python, tiny_model, tmp_path_factory) -> Path:
    """The tiny preset exported through the module's CLI entry point, then found again in the cache."""
    out = tmp_path_factory.mktemp("ov") / "tiny-ov"
    env = {**os.environ, ovexport.PYTHON_ENV: ov_python, "PYTHONPATH": ovrun.AGENT_ROOT}
    cmd = [sys.executable, "-m", "sdagent.peers.openvino", "export", "--model", str(tiny_model), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    assert res["path"] == str(out) and res["reused"] is False and res["versions"]["openvino"]
    again = ovexport.export_model(tiny_model, out, python=ov_python)
    assert again.reused and again.key == res["key"]
    return out


@pytest.mark.slow
def test_openvino_generates_the_tiny_model_and_reports_like_the_torch_worker(tiny_export, ov_python):
    w = Workload(steps=2, height=64, width=64)
    job = OvJob(str(tiny_export), w, precision="bf16", threads=2, warmup=1, repeats=1, probe_precision=True)
    res = ovrun.measure_openvino(job, ovrun.openvino_launch(ov_python), timeout_s=300)
    assert res.ok, res.reason
    d = res.measurement.to_dict()
    for key in ("ok", "workload", "describe", "load_s", "prepare_s", "warmup_s", "latency_s", "latency_median_s",
                "runs", "unet_evals", "process", "load_average", "start_to_first_image_s", "versions"):
        assert key in d, key
    assert d["workload"] == w.to_dict() and d["describe"]["run"]["backend"] == "openvino"
    assert d["describe"]["run"]["config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert len(d["latency_s"]) == 1 and d["latency_s"][0] > 0
    run = d["runs"][0]
    # PNDM (the preset's scheduler) makes one more UNet call than steps, as diffusers' does
    assert d["describe"]["scheduler"] == "PNDMScheduler" and d["unet_evals"] == len(run["unet_steps_s"]) == 3
    assert all(s > 0 for s in run["unet_steps_s"]) and run["vae_decode_s"] is not None
    assert 0 < run["image_mean_u8"] < 255 and run["cpu_s"] > 0
    assert d["start_to_first_image_s"] > d["load_s"] + d["prepare_s"]
    libs = d["process"]["libraries"]
    assert any("libopenvino" in p for p in libs) and not any("libtorch" in p for p in libs)
    assert "torch was imported" not in " ".join(d["describe"]["notes"])
    probe = d["describe"]["precision_probe"]
    assert probe["execution_devices"] == ["CPU"] and probe["inference_num_threads"] == 2
    if "BF16" in d["describe"]["cpu"]["optimization_capabilities"]:
        assert probe["inference_precision_hint"] == "bf16" and probe["runtime_precisions"].get("bf16", 0) > 0
    assert d["versions"]["openvino"] and d["versions"]["export"]["optimum-intel"]


@pytest.mark.slow
def test_openvino_runs_fp32_with_another_scheduler(tiny_export, ov_python):
    w = Workload(steps=2, height=64, width=64, scheduler="euler")
    res = ovrun.measure_openvino(OvJob(str(tiny_export), w, precision="fp32", warmup=0, repeats=1, probe_precision=True),
                                 ovrun.openvino_launch(ov_python), timeout_s=300)
    assert res.ok, res.reason
    m = res.measurement
    assert m.describe["scheduler"] == "EULER_DISCRETE" and m.unet_evals == 2
    assert m.describe["precision_probe"]["runtime_precisions"].get("bf16", 0) == 0
    assert m.start_to_first_image_s is not None


@pytest.mark.slow
def test_the_worker_process_fails_with_a_reason_for_a_scheduler_genai_lacks(tiny_export, ov_python, tmp_path):
    w = Workload(steps=2, height=64, width=64)
    jf, out = tmp_path / "job.json", tmp_path / "out.json"
    jf.write_text(json.dumps({**OvJob(str(tiny_export), w).to_dict(), "workload": {**w.to_dict(), "scheduler": "dpm"}}))
    launch = ovrun.openvino_launch(ov_python)
    p = subprocess.run([*launch.argv, "--job", str(jf), "--result", str(out)], env=dict(launch.env),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "scheduler 'dpm' is not available in OpenVINO GenAI" in p.stderr
    assert json.loads(out.read_text()) == {"format": "sdagent-result/1", "ok": False,
                                           "error": p.stderr.strip().split("error: ", 1)[1]}


def test_the_family_decides_the_export_class_and_its_files():
    """Issue 23 item 4: SD 1.x/2.x and Turbo export as OVStableDiffusionPipeline, SDXL (and SDXL-Turbo) as
    OVStableDiffusionXLPipeline with its second text encoder's files, LCM as OVLatentConsistencyModelPipeline;
    a family the backend cannot run is one line naming it and the ones it runs."""
    from sdagent.pipeline.family import FAMILIES

    assert {f: ovexport.ov_class_for(f) for f in ("sd1", "sd2-v", "sd-turbo")} == dict.fromkeys(
        ("sd1", "sd2-v", "sd-turbo"), "OVStableDiffusionPipeline")
    assert ovexport.ov_class_for("sdxl") == ovexport.ov_class_for("sdxl-turbo") == "OVStableDiffusionXLPipeline"
    assert ovexport.ov_class_for("lcm") == "OVLatentConsistencyModelPipeline"
    assert set(ovexport.OV_CLASSES) <= set(FAMILIES)
    assert ovexport.required_files() == ovexport.required_files("sd-turbo") == REQUIRED_FILES
    assert "text_encoder_2/openvino_model.bin" in ovexport.required_files("sdxl-turbo")
    with pytest.raises(BadInput) as exc:
        ovexport.ov_class_for("lcm-sdxl")
    msg = str(exc.value)
    assert msg.startswith("backend openvino cannot run the lcm-sdxl family:") and "sdxl-turbo" in msg
    assert "\n" not in msg


def test_an_sdxl_export_without_its_second_encoder_is_incomplete_and_an_unrunnable_family_exports_nothing(tmp_path):
    model, root = make_model(tmp_path / "xl"), tmp_path / "cache"
    with pytest.raises(SdagentError, match="is incomplete: no text_encoder_2/openvino_model.xml"):
        ovexport.export_model(model, python="/p", root=root, run=FakeOptimum(), family="sdxl-turbo")
    fake = FakeOptimum(write=ovexport.required_files("sdxl"))
    res = ovexport.export_model(model, python="/p", root=root, run=fake, family="sdxl")
    marker = json.loads((Path(res.path) / MARKER).read_text())
    assert marker["ov_class"] == "OVStableDiffusionXLPipeline" and marker["family"] == "sdxl"
    never = FakeOptimum()
    with pytest.raises(BadInput, match="cannot run the lcm-sdxl family"):
        ovexport.export_model(model, python="/p", root=root, run=never, family="lcm-sdxl")
    assert never.exports == []


def test_backend_openvino_refuses_a_family_it_cannot_run_before_anything_else(monkeypatch):
    from sdagent.pipeline import modeldir, ov_backend
    from sdagent.pipeline.family import FAMILIES, SDXL
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.runspec import RunSpec

    monkeypatch.setattr(modeldir, "check_model_dir",
                        lambda p: modeldir.ModelDir(Path(p), SDXL, {}, None, FAMILIES["lcm-sdxl"]))
    monkeypatch.setattr(ov_backend, "require_openvino", lambda: pytest.fail("the refusal comes first"))
    with pytest.raises(BadInput, match="^backend openvino cannot run the lcm-sdxl family"):
        ov_backend.ready_openvino("/m/lcm-xl", RunSpec("openvino", "fp32", False, False, True), Workload())


def test_an_lcm_pipeline_takes_its_guidance_at_unet_batch_1():
    """LCM reads the guidance scale as an embedding (family cfg False): its export is compiled at UNet batch 1, and
    a guidance of 8.5 (its default) must not be refused as another batch's; SD's still is."""
    from types import SimpleNamespace

    from sdagent.pipeline.ov_backend import OvPipeline

    key = SimpleNamespace(height=64, width=64, batch=1)
    OvPipeline(None, None, Path("/ir"), key, None, "LCMScheduler", cfg=False).check_shape(64, 64, 8.5)
    with pytest.raises(BadInput, match=r"UNet batch 1 .*guidance 8.5 \(batch 2\)"):
        OvPipeline(None, None, Path("/ir"), key, None, "PNDMScheduler").check_shape(64, 64, 8.5)
