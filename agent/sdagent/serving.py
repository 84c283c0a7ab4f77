"""The agent's pipeline for your own server: the plan in effect, applied whole.

`sdagent-tuned python serve.py` (or `sdagent exec -- python serve.py`) gives a
process the plan's preloads, threads and pinning; the precision, memory format
and compiled packages are the pipeline's business. `load_pipeline` applies
that half too, from the same plan, so a server gets the configuration
`sdagent verify` proved, not half of it:

    import sdagent
    pipe = sdagent.load_pipeline("/var/lib/sdagent/models/sd15", height=512, width=512)
    image = pipe("sailing ship in storm by Rembrandt", num_inference_steps=20).images[0]
"""

from __future__ import annotations

import os
from typing import Any

from sdagent.pipeline.workload import DEMO_PROMPT, Workload, validate_workload


def load_pipeline(model_dir: str | os.PathLike[str], *, height: int | None = None, width: int | None = None,
                  guidance: float | None = None, scheduler: str = "default", plan_file: str | None = None,
                  artifacts: str | None = None, topology_file: str | None = None) -> Any:
    """A ready pipeline run the way the plan in effect says: a diffusers StableDiffusionPipeline for the
    native and ipex backends; for backend openvino a pipeline.ov_backend.OvPipeline, called the same way
    (`pipe(prompt, num_inference_steps=20).images[0]`), with OpenVINO GenAI's Text2ImagePipeline as
    `pipe.genai`, compiled for one static size (height x width, guided or not).

    The plan in effect is the one `sdagent exec` / `sdagent-tuned` started this process under, else
    `plan_file` (or $SDAGENT_PLAN_FILE), else the plan derived for this host. `height`, `width` and
    `guidance` are the requests the compiled packages are built for (default: the model's own size and
    its family's guidance: 7.5 for SD 1.x/2.x, 5 for SDXL, 0 for Turbo, LCM's 8.5 as an embedding);
    other requests still work, on the eager path. `pipe.sdagent` describes what was applied, and under
    "defaults" the request the pipeline was built for: {"family", "steps" (the family's: Turbo 1, LCM 4,
    else 20), "guidance", "height", "width"}, what a server should use where a request says nothing.
    """
    from sdagent.host.software import gather_facts
    from sdagent.host.topology import current_topology
    from sdagent.pipeline.backends import ready
    from sdagent.pipeline.modeldir import check_model_dir
    from sdagent.planning.planfile import plan_in_force

    md = check_model_dir(model_dir)
    size = md.default_size() if height is None or width is None else 0
    w = validate_workload(Workload(prompt=DEMO_PROMPT, height=height or size, width=width or size,
                                   guidance=md.family.default_guidance if guidance is None else guidance,
                                   scheduler=scheduler, cfg=md.family.cfg))
    plan = plan_in_force(current_topology(topology_file=topology_file or os.environ.get("SDAGENT_TOPOLOGY_FILE")),
                         gather_facts(), plan_file=plan_file or os.environ.get("SDAGENT_PLAN_FILE"),
                         environ=os.environ)
    prepared = ready(md.path, plan.run_spec, w, artifacts)
    pipe = prepared.pipe
    from sdagent.pipeline.family import default_steps

    defaults = {"family": md.family.name, "steps": default_steps(md.family, 20), "guidance": w.guidance,
                "height": w.height, "width": w.width}
    pipe.sdagent = {"plan_source": plan.source, "plan": plan.summary(), **prepared.describe(), "defaults": defaults}
    return pipe
