"""The process border every measurement crosses: a worker process started, its result read back.

- `result`: the record a worker returns (`sdagent-result/1`) and the parent's view of it.
- `parent`: start a worker under a launch, wait for it, kill it with everything it started.
- `child`: a worker's life (read the job, measure, write the result) and dying with the parent.

Both measuring/ (sdagent's own worker) and peers/ (the OpenVINO worker) stand on it.
"""
