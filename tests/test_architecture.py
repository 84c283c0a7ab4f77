"""The architecture holds: decisions agree with settings, tables are the single source, layers import downward."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from hosts import HOSTS, write_tree
from sdagent.errors import EXIT_CODES, exit_codes_markdown
from sdagent.host.software import HostFacts, IpexStatus
from sdagent.host.topology import read_topology
from sdagent.planning.plan import make_plan
from sdagent.planning.render import render
from sdagent.planning.settings import KNOBS, LIBRARY_KNOBS

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "agent" / "sdagent"

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
IOMP = "/opt/sdagent/venv/lib/libiomp5.so"
FULL = HostFacts(libraries={"jemalloc": JE, "tcmalloc": None, "iomp": IOMP}, numactl="/usr/bin/numactl",
                 taskset="/usr/bin/taskset", numa_permitted=True,
                 ipex=IpexStatus(True, "2.8.0", "2.8.0", "IPEX 2.8.0 matches torch 2.8.0"))
BARE = HostFacts(libraries={"jemalloc": None, "tcmalloc": None, "iomp": None},
                 ipex=IpexStatus(False, None, "2.13.0", "intel-extension-for-pytorch is not installed"))
FACTS = {"full": FULL, "bare": BARE, "no-numa": replace(FULL, numa_permitted=False),
         "taskset-only": replace(BARE, taskset="/usr/bin/taskset")}

#: Plan files made elsewhere: everything on, everything off, and a multi-instance layout's settings.
FILES = {
    "none": {},
    "all-on": {"allocator": "jemalloc", "malloc_conf": "long", "omp_runtime": "intel", "binding": "numactl",
               "membind": True, "backend": "ipex", "precision": "bf16", "kmp_affinity": "compact",
               "kmp_blocktime": 1, "compile": True},
    "all-off": {"allocator": "default", "omp_runtime": "default", "binding": "none", "membind": False,
                "backend": "native", "precision": "fp32", "kmp_affinity": "unset", "kmp_blocktime": "unset"},
    "taskset": {"binding": "taskset", "allocator": "tcmalloc"},
}


@pytest.fixture(scope="module")
def topologies(tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    return {name: read_topology(write_tree(base / name, spec)) for name, spec in HOSTS.items()}


@pytest.mark.parametrize("facts", list(FACTS))
@pytest.mark.parametrize("file", list(FILES))
def test_every_decision_states_the_value_in_effect(topologies, facts, file):
    """On every fixture host, whatever the plan file asked and whatever the host lacks: one decision per
    setting, and its value is the setting's (fallbacks happen inside the decision, never after it)."""
    for name, topo in topologies.items():
        plan = make_plan(topo, FACTS[facts], file_settings=FILES[file], source="tuned" if file != "none" else "derived")
        keys = [d.key for d in plan.decisions]
        assert sorted(keys) == sorted(KNOBS), (name, keys)  # the library paths are decisions too (issue 24)
        for d in plan.decisions:
            assert d.value == plan.settings[d.key], (name, facts, file, d)


def test_a_plan_file_the_host_cannot_honour_says_so_everywhere(topologies, tmp_path):
    """The bug: a plan file asking jemalloc, numactl and ipex on a host without them printed 'from the tuned
    plan file' with the asked values in `sdagent plan` and in tuned.env, while the settings fell back."""
    topo = topologies["spr-2s-smt"]
    plan = make_plan(topo, BARE, file_settings=FILES["all-on"], source="tuned")
    s = plan.settings
    assert (s["allocator"], s["omp_runtime"], s["binding"], s["membind"], s["backend"]) == \
        ("default", "default", "none", False, "native")
    d = {x.key: x for x in plan.decisions}
    for key, asked in (("allocator", "jemalloc"), ("omp_runtime", "intel"), ("binding", "numactl"),
                       ("backend", "ipex"), ("membind", "True")):
        assert f"{asked} asked, but" in d[key].reason, d[key]
    # taskset -> none warns too (it used to fall back silently)
    assert any(w.startswith("binding=numactl asked") and "using none" in w for w in plan.warnings)
    env = render(plan, "env")
    comments = {m.group(1): m.group(2) for m in re.finditer(r"^# (\w+) = (\S+):", env, re.M)}
    assert comments["allocator"] == "default" and comments["binding"] == "none" and comments["backend"] == "native"
    assert "LD_PRELOAD" not in env


def test_a_new_layout_re_derives_the_layouts_settings(topologies, tmp_path):
    """A plan file's 8 threads and single-instance KMP_BLOCKTIME do not carry over to 2 instances of 4 cores."""
    from sdagent.planning.layout import PlanRequest
    from sdagent.planning.planfile import plan_in_force

    topo = topologies["spr-2s-smt"]
    f = tmp_path / "plan.json"
    # a tuned plan with Intel OpenMP (only it reads KMP_BLOCKTIME; the shipped evidence leaves it off)
    f.write_text(json.dumps(make_plan(topo, FULL, PlanRequest(cores_per_instance=8, instances=1),
                                      overrides={"omp_runtime": "intel"}).to_dict()))
    same = plan_in_force(topo, FULL, plan_file=str(f), environ={})
    assert same.settings["omp_num_threads"] == 8 and same.settings["kmp_blocktime"] == "unset"
    two = plan_in_force(topo, FULL, plan_file=str(f), environ={}, request=PlanRequest(instances=2, cores_per_instance=4))
    assert two.settings["omp_num_threads"] == 4 and two.settings["kmp_blocktime"] == 1
    assert two.settings["binding"] == "numactl" and len(two.instances) == 2


# ---------------------------------------------------------------------------
# Tables as the single source
# ---------------------------------------------------------------------------


def test_readme_exit_code_table_is_the_table():
    readme = (REPO / "README.md").read_text()
    assert exit_codes_markdown() in readme


def test_fleet_templates_take_verdicts_from_the_report_not_a_table_of_their_own():
    """No code -> words mapping in Jinja: the verdict is the report's `verdict` field."""
    for tpl in (REPO / "playbooks" / "templates").glob("*.j2"):
        text = tpl.read_text()
        assert not [e.meaning for e in EXIT_CODES if e.meaning in text], tpl.name
        assert not re.search(r"""\b[0-7]\s*:\s*['"][a-z]""", text), tpl.name


def test_one_list_of_precisions_and_backends():
    """Every module that names the legal precisions reads them from planning.settings."""
    offenders = []
    for f in PKG.rglob("*.py"):
        text = f.read_text()
        if f.name == "settings.py":
            continue
        if re.search(r"""\(\s*["'](bf16|fp32)["']\s*,\s*["'](bf16|fp32)["']\s*\)""", text):
            offenders.append(str(f.relative_to(PKG)))
    assert offenders == []


def test_stock_env_and_the_recorded_env_come_from_one_table():
    from sdagent.envvars import is_tuning_var, stock_env, tuning_vars

    env = {"PATH": "/bin", "LD_PRELOAD": "x", "OMP_NUM_THREADS": "2", "KMP_BLOCKTIME": "1",
           "TORCHINDUCTOR_FREEZING": "1", "DNNL_VERBOSE": "0", "SDAGENT_INSTANCE": "0", "HOME": "/h"}
    assert set(stock_env(env)) | set(tuning_vars(env)) == set(env)
    assert not set(stock_env(env)) & set(tuning_vars(env))
    assert all(is_tuning_var(k) for k in tuning_vars(env))


# ---------------------------------------------------------------------------
# One run record, one serialization
# ---------------------------------------------------------------------------


def test_the_run_record_crosses_to_a_worker_as_one_json_job(topologies):
    from sdagent.measuring.runner import WorkerJob
    from sdagent.pipeline.workload import Workload
    from sdagent.planning.runspec import FP32_REFERENCE, STOCK_RUN, STOCK_SETTINGS

    topo = topologies["epyc-2core-zen5"]
    plan = make_plan(topo, BARE)
    spec = plan.run_spec
    assert spec.precision == "bf16" and spec.native_bf16 and spec.isa_flags == topo.flags
    job = WorkerJob("/m", Workload(steps=3), spec, warmup=2, repeats=4, unet_only=True)
    back = WorkerJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job  # the worker gets exactly what was decided, ISA flags included
    assert STOCK_RUN.settings() == {k: STOCK_SETTINGS[k] for k in STOCK_RUN.settings()}
    assert FP32_REFERENCE.precision == "fp32" and not FP32_REFERENCE.compile


# ---------------------------------------------------------------------------
# Layers import downward; commands do not import each other; no cycles
# ---------------------------------------------------------------------------

#: Lower rank = lower layer. A module may import its own layer and lower ones only.
RANK = {"errors": 0, "atomicio": 0, "resources": 0, "envvars": 0, "host": 1, "planning": 2, "pipeline": 3,
        "textfmt": 3, "workers": 3, "measuring": 4, "peers": 4, "tuning": 5, "verifying": 5, "serving": 6,
        "cli": 6, "__main__": 6}


def _modules() -> dict[str, set[str]]:
    """sdagent module -> the sdagent modules it imports (at any depth of the file)."""
    out: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).with_suffix("")
        name = ".".join(("sdagent",) + rel.parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sdagent"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("sdagent"))
        out[name] = deps
    return {k: {d for d in v if d in out} for k, v in out.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_import_downward_only():
    bad = []
    for mod, deps in _modules().items():
        if _layer(mod) == "__init__":
            continue
        for d in deps:
            if _layer(d) != "__init__" and RANK[_layer(d)] > RANK[_layer(mod)]:
                bad.append(f"{mod} -> {d}")
    assert bad == []


def test_command_modules_do_not_import_each_other_and_nothing_imports_the_cli():
    mods = _modules()
    commands = {m for m in mods if m.startswith("sdagent.cli.") and m.endswith(("_cmd", "hostcmds"))}
    for c in commands:
        assert not mods[c] & commands, c
    for m, deps in mods.items():
        if not m.startswith("sdagent.cli") and m != "sdagent.__main__":
            assert not any(d.startswith("sdagent.cli") for d in deps), m


def test_no_import_cycle():
    mods = _modules()
    # registration of the subcommands by the group is the one sanctioned back edge
    graph = {m: {d for d in deps if not (m == "sdagent.cli" and d.startswith("sdagent.cli."))}
             for m, deps in mods.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for d in graph[m]:
            if d == m or d.startswith(m + "."):
                continue  # a package importing its own submodule
            if state.get(d) == 1:
                cycle.extend(path + [d])
                return True
            if d not in state and visit(d, path + [d]):
                return True
        state[m] = 2
        return False

    for m in graph:
        if m not in state and visit(m, [m]):
            break
    assert cycle == []


def test_the_readme_layer_table_names_every_package_and_top_level_module():
    """README's Architecture table matches the tree: every layer of RANK (less the leaf helpers) is a row."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([\w.]+)/?` \|", table, re.M))
    tree = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tree |= {p.name for p in PKG.glob("*.py") if p.stem in ("serving", "textfmt")}
    assert {n.removesuffix(".py") for n in tree} <= {n.removesuffix(".py") for n in named}, named
    assert set(RANK) >= {n.removesuffix(".py") for n in tree}


def test_peers_stand_on_workers_not_on_measuring():
    """The OpenVINO peer (and any other) reaches the process border through workers/, never measuring/."""
    bad = [f"{m} -> {d}" for m, deps in _modules().items() if m.startswith("sdagent.peers")
           for d in deps if d.startswith("sdagent.measuring")]
    assert bad == []


# ---------------------------------------------------------------------------
# The worker result: one record, read by attribute
# ---------------------------------------------------------------------------

#: Result keys that other records share (bench's JSON, ladder.json, the jobs, the tune record, FLOPs'
#: output), so a subscript by them elsewhere reads those records, not a worker's result.
SHARED_KEYS = {"format", "ok", "error", "workload", "latency_s", "load_average", "images", "versions", "mode",
               "runs"}


def _key_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every `x["key"]` and `x.get("key", ...)` with a constant string key."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
            out.append((n.lineno, n.slice.value))
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args
              and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
            out.append((n.lineno, n.args[0].value))
    return out


def test_worker_result_keys_are_read_only_in_the_records_own_module():
    """Every reader of a worker's result (ladder, tune, verify's stock run, throughput, the peers) takes
    attributes of workers.result.Measurement; only that module knows the keys of the file."""
    from dataclasses import fields

    from sdagent.workers.result import Measurement

    own = PKG / "workers" / "result.py"
    keys = ({f.name for f in fields(Measurement)} | {"latency_median_s", "unet_steps_s"}) - SHARED_KEYS
    bad = []
    for f in PKG.rglob("*.py"):
        if f == own:
            continue
        text = f.read_text()
        bad += [f"{f.relative_to(PKG)}:{line} [{k!r}]" for line, k in _key_reads(ast.parse(text)) if k in keys]
        if '"latency_median_s"' in text:  # the key the readers picked twice, word for word
            bad.append(f"{f.relative_to(PKG)}: names the result's median key")
    assert bad == []


# ---------------------------------------------------------------------------
# Small functions
# ---------------------------------------------------------------------------

#: Where the rule holds today (issue 18: the rest of the agent follows as its rules become tables).
SHORT_FUNCTIONS = ["measuring", "peers", "workers", "tuning/search.py", "tuning/session.py",
                   "verifying/session.py"]


def test_no_function_over_80_lines():
    long = []
    for area in SHORT_FUNCTIONS:
        files = [PKG / area] if area.endswith(".py") else sorted((PKG / area).rglob("*.py"))
        for f in files:
            for n in ast.walk(ast.parse(f.read_text())):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                    long.append(f"{f.relative_to(PKG)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == []


def test_the_host_layer_knows_no_plan():
    """host/ reads the machine; a plan reaches it only as the plain values it needs (issue 18 item 3): no
    parameter, field or attribute named plan, no import of planning."""
    bad = []
    for f in (PKG / "host").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.arg):
                names.append(node.arg)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.append(node.target.id)
            elif isinstance(node, ast.Attribute):
                names.append(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            bad += [f"{f.name}: {n}" for n in names if n == "plan" or n.startswith(("plan_", "sdagent.planning"))]
    assert bad == []


def test_plan_reads_settings_through_typed_accessors():
    """No Plan.__getattr__: each setting has a typed property, and the run spec is a property of the plan."""
    from sdagent.planning.plan import Plan

    assert "__getattr__" not in Plan.__dict__
    for key in KNOBS:
        if key not in LIBRARY_KNOBS.values():
            assert isinstance(Plan.__dict__.get(key), property), key
    assert not hasattr(__import__("sdagent.planning.runspec", fromlist=["RunSpec"]).RunSpec, "from_plan")

