"""A tuned plan against stock, stock + bf16 and the topology plan, measured side by side in one sitting.

    python scripts/compare_plans.py --model DIR --plan tuned.json [--rounds 3] [--out compare.md]

Each configuration runs in a fresh process per round (the median of --repeats timed calls), rounds
interleaved with the order rotated, on the tune's own workload unless given. Printed: each
configuration's median (min-max) and its paired ratio to the tuned plan per round, and whether the
tuned plan is at least as fast as the best of the others (tune's own sequential rule on the paired
rounds, with the noise those rounds show).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from sdagent import atomicio  # noqa: E402
from sdagent.host.process import machine_state, read_load_average  # noqa: E402
from sdagent.host.software import gather_facts  # noqa: E402
from sdagent.host.topology import current_topology  # noqa: E402
from sdagent.measuring.runner import WorkerJob, worker_cmd  # noqa: E402
from sdagent.measuring.stats import rotated  # noqa: E402
from sdagent.pipeline.modeldir import check_model_dir  # noqa: E402
from sdagent.pipeline.workload import Workload  # noqa: E402
from sdagent.planning.launch import plan_launch, stock_launch  # noqa: E402
from sdagent.planning.plan import make_plan  # noqa: E402
from sdagent.planning.planfile import plan_in_force  # noqa: E402
from sdagent.planning.runspec import STOCK_RUN, RunSpec  # noqa: E402
from sdagent.tuning.rule import FASTER, Noise, decide  # noqa: E402
from sdagent.workers.parent import run_worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--plan", required=True, help="the tuned plan file (sdagent tune -o)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the Markdown and a .json beside it")
    a = ap.parse_args(argv)
    md = check_model_dir(a.model)
    topo, facts = current_topology(), gather_facts()
    tuned = plan_in_force(topo, facts, plan_file=a.plan, environ={})
    w = Workload(**(tuned.tuning or {}).get("workload", {})) if tuned.tuning else Workload(steps=4, height=256,
                                                                                          width=256)
    derived = make_plan(topo, facts)
    env = dict(os.environ)
    cmd = worker_cmd()
    stock_bf16 = RunSpec("native", "bf16", True, False, True, topo.flags)
    configs = {
        "stock": (stock_launch(cmd, env), STOCK_RUN.on_host(topo.flags)),
        "stock + bf16": (stock_launch(cmd, env, name="stock + bf16"), stock_bf16),
        "topology plan": (plan_launch(derived, cmd, env, name="topology plan"), derived.run_spec),
        "tuned plan": (plan_launch(tuned, cmd, env, name="tuned plan"), tuned.run_spec),
    }
    names = list(configs)
    got: dict[str, list[float | None]] = {n: [] for n in names}
    started = time.time()
    load_before = list(read_load_average())
    for i in range(a.rounds):
        for n in rotated(names, i):
            launch, spec = configs[n]
            job = WorkerJob(str(md.path), w, spec, warmup=1, warmup_steps=2, repeats=a.repeats)
            res = run_worker(launch, job, timeout_s=7200)
            got[n].append(res.latency_s if res.ok else None)
            print(f"round {i + 1}/{a.rounds} {n}: {res.latency_s if res.ok else res.reason}", file=sys.stderr,
                  flush=True)
    ok = {n: [x for x in v if x is not None] for n, v in got.items()}
    noise = Noise()
    noise.add_floor([v for v in ok.values() if len(v) >= 2])
    lines = [f"# Tuned plan vs stock, stock + bf16 and the topology plan ({md.name}, {w.width}x{w.height}, "
             f"{w.steps} steps)", "",
             f"{a.rounds} interleaved rounds, each configuration a fresh process per round taking the median of "
             f"{a.repeats} timed calls. Ratios are per round: the configuration's time / the tuned plan's.", "",
             "| configuration | s / image, median (min-max) | ratio to tuned, median (min-max) | "
             "tuned faster by tune's rule? |", "|---|---|---|---|"]
    record = {"model": str(md.path), "workload": w.to_dict(), "rounds": a.rounds, "repeats": a.repeats,
              "plan": a.plan, "samples": got, "configs": {n: configs[n][1].describe() for n in names}}
    verdicts = {}
    for n in names:
        xs = ok[n]
        if not xs:
            lines.append(f"| {n} | failed | | |")
            continue
        pairs = [(t, x) for t, x in zip(got["tuned plan"], got[n]) if t is not None and x is not None]
        ratios = [x / t for t, x in pairs]
        v = decide([x for _, x in pairs], [t for t, _ in pairs], noise.sigma, final=True) if n != "tuned plan" \
            and pairs else None
        verdicts[n] = v.outcome if v else None
        rr = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios and n != "tuned plan"
              else "-")
        lines.append(f"| {n} ({configs[n][1].describe()}) | {statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}) "
                     f"| {rr} | {('yes' if v.outcome == FASTER else 'no: ' + v.outcome) if v else '-'} |")
    others = [n for n in names if n != "tuned plan" and ok[n]]
    best = min(others, key=lambda n: statistics.median(ok[n])) if others else None
    if best and ok["tuned plan"]:
        t, b = statistics.median(ok["tuned plan"]), statistics.median(ok[best])
        lines += ["", f"The tuned plan's median is {t / b:.2f}x the best other configuration's (`{best}`, "
                      f"{b:.3f} s): {'at least as fast' if t <= b else 'slower'} in the median."]
    state = machine_state().to_dict()
    lines += ["", f"Host: {topo.summary()}; load average before {load_before}, after {list(read_load_average())}; "
                  f"versions {state['versions']}; took {time.time() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        record.update(verdicts=verdicts, machine={"topology": topo.summary(), "versions": state["versions"]})
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomicio.write_text(a.out, text)
        atomicio.write_json(str(Path(a.out).with_suffix(".json")), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
