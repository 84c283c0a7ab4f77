"""Your own server on the verified configuration: sdagent.load_pipeline and examples/serve.py, end to end."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from clirun import PY, REPO, clean_env, sdagent_popen

pytestmark = pytest.mark.slow


def test_load_pipeline_applies_the_plan_in_force(tiny_model, tmp_path, monkeypatch):
    import sdagent

    plan = tmp_path / "plan.json"
    from clirun import sdagent as run

    assert run("plan", "--set", "precision=fp32", "--set", "compile=false", "-o", str(plan)).returncode == 0
    monkeypatch.delenv("SDAGENT_PLAN_JSON", raising=False)
    pipe = sdagent.load_pipeline(tiny_model, height=64, width=64, plan_file=str(plan))
    assert pipe.sdagent["run"]["precision"] == "fp32" and pipe.sdagent["plan_source"] == "derived+overrides"
    pipe("a ship", num_inference_steps=2)  # a plain diffusers call, as a user's server makes it
    assert pipe.unet.seen["out_dtype"] == "float32" and pipe.unet.seen["mode"] == "eager"
    bf16 = sdagent.load_pipeline(tiny_model, height=64, width=64, plan_file=None)
    if bf16.sdagent["run"]["precision"] == "bf16":  # this host computes bf16 natively: the plan's default
        bf16("a ship", num_inference_steps=2)
        assert bf16.unet.seen["out_dtype"] == "bfloat16"


@pytest.mark.parametrize("fixture, steps, guidance, cls", [("tiny_sdxl", 20, 5.0, "StableDiffusionXLPipeline"),
                                                           ("tiny_lcm", 4, 8.5, "LatentConsistencyModelPipeline")])
def test_load_pipeline_gives_each_familys_pipeline_and_its_defaults(request, fixture, steps, guidance, cls, tmp_path):
    """The family decides the pipeline class and the request a server should make where its client says
    nothing (pipe.sdagent["defaults"], what examples/serve.py uses): the one the packages are built for."""
    import sdagent
    from clirun import sdagent as run

    model = request.getfixturevalue(fixture)
    plan = tmp_path / "plan.json"
    assert run("plan", "--set", "precision=fp32", "--set", "compile=false", "-o", str(plan)).returncode == 0
    pipe = sdagent.load_pipeline(model, plan_file=str(plan))
    d = pipe.sdagent["defaults"]
    assert type(pipe).__name__ == cls
    assert d == {"family": fixture[len("tiny_"):], "steps": steps, "guidance": guidance, "height": 64, "width": 64}
    out = pipe("a ship", num_inference_steps=1, guidance_scale=d["guidance"], height=64, width=64, output_type="np")
    assert out.images[0].shape == (64, 64, 3) and pipe.unet.seen["mode"] == "eager"


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_lcm"])
def test_the_example_server_answers_under_exec(request, fixture, tmp_path):
    """examples/serve.py under the plan; on LCM a request without steps gets the family's 4 (its defaults)."""
    tiny_model = request.getfixturevalue(fixture)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(SDAGENT_LOCK_FILE=str(tmp_path / "lock"))
    p = sdagent_popen("exec", "--", PY, str(REPO / "examples" / "serve.py"), "--model", str(tiny_model),
                      "--port", str(port), "--height", "64", "--width", "64", env=env)
    try:
        end = time.monotonic() + 300
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
                break
            except OSError:
                assert p.poll() is None, p.stderr.read()
                assert time.monotonic() < end
                time.sleep(0.5)
        assert health["ok"] and health["sdagent"]["run"]["backend"] == "native"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=b'{"prompt": "ship", "steps": 2}',
                                     method="POST")
        png = urllib.request.urlopen(req, timeout=120).read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        if fixture == "tiny_lcm":
            assert health["sdagent"]["defaults"]["steps"] == 4 and health["sdagent"]["defaults"]["guidance"] == 8.5
            plain = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=b'{"prompt": "ship"}',
                                           method="POST")
            assert urllib.request.urlopen(plain, timeout=120).read()[:8] == b"\x89PNG\r\n\x1a\n"
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=b'{"steps": 2}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        assert e.value.code == 400
    finally:
        p.terminate()
        p.communicate(timeout=30)
