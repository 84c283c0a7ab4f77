"""Peers: other stacks measured side by side with sdagent's own, on the same host and workload.

A peer runs in its own venv and its own fresh process (its libraries cannot share
one with torch's: OpenVINO pins transformers<5.6, and its threading is TBB, not
OpenMP), so a peer's worker imports only the standard library, the peer's own
packages and the torch-free modules of sdagent (errors, atomicio, pipeline.workload,
planning.settings, host.process, workers), and returns the same record as
sdagent.measuring.worker (workers.result, `sdagent-result/1`). peers/ stands on
workers/ (the process border), never on measuring/.

- `openvino`: OpenVINO GenAI's Text2ImagePipeline on an IR exported by optimum-intel
  (`ovexport`: the offline, cached export; `ovjob`: the job record; `ovrun`: the parent's side).
"""
