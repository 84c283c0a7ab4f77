"""Every command's options driven with random and hostile values (hypothesis), issue 20's closing property:

* no traceback: `sdagent.cli.main` ends only in SystemExit (in this process an escaping exception is the
  traceback a user would see);
* the exit code is one of the documented table's (sdagent.errors.EXIT_CODES);
* no file outside the named outputs is touched: the sandbox (the working directory, where every path
  drawn lives) differs afterwards only at the paths given to -o/--output/--report/--prometheus/--out-dir.

Kept cheap for CI (well under two minutes): commands run in this process; the ones that measure get a
model path that is not a model (missing, a file, an empty directory, ""), so each one's checks before the
model loads are what is driven, never a pipeline; `exec` only with --dry-run.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (the `test` extra)")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from sdagent.cli import main  # noqa: E402
from sdagent.errors import EXIT_CODES  # noqa: E402

CODES = {e.code for e in EXIT_CODES}

#: Values a user (or an empty shell variable) hands an option: empty, blank, not numbers, huge, negative,
#: control characters, non-UTF-8 argv bytes (Python's surrogateescape), paths that are not files.
HOSTILE = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1", "2", "7.5", "1e309", "-0", "9" * 40, "0x10",
           "a\nb", "\t", "\udcff\udcfe", "\u202e", "ü" * 3, "..", ".", "/", "/proc/self/status", "/dev/null",
           "/nonexistent/x", "x" * 300, "--help", "-o", "true", "false", "auto", "key=value", "=", "[]", "{}"]

#: Output-ish names, always inside the sandbox (the working directory) or places that cannot be written.
OUT_NAMES = ["", " ", "out.json", "sub/out.json", "missing/dir/out.json", ".", "/", "/proc/x.json",
             "adir", "a\nb.json", "sentinel.txt", "ro/out.json"]
MODEL_PATHS = ["", "nomodel", "sentinel.txt", "adir", "/nonexistent", "."]

hostile = st.sampled_from(HOSTILE) | st.text(min_size=0, max_size=20).filter(lambda s: "\x00" not in s)
ints = st.sampled_from(["-5", "0", "1", "3", "64", "100000", "nan", "", str(2**63), str(2**64)]) | \
    st.integers(-10**20, 10**20).map(str)
floats = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.5", "1e-300", "1e309", ""]) | \
    st.floats(allow_nan=True, allow_infinity=True).map(repr)


def opt(name: str, values: Any) -> Any:
    return st.tuples(st.just(name), values).map(list)


WORKLOAD = [opt("--prompt", hostile), opt("--steps", ints), opt("--height", ints), opt("--width", ints),
            opt("--guidance", floats), opt("--seed", ints), opt("--scheduler", hostile)]
LAYOUT = [opt("--instances", ints), opt("--cores-per-instance", ints), st.just(["--span-nodes"]),
          st.just(["--use-smt"]), opt("--set", hostile), opt("--set", st.sampled_from(
              ["binding=taskset", "binding=nope", "kmp_blocktime=-1", "omp_num_threads=0", "precision=fp8",
               "allocator=jemalloc", "malloc_conf=a\nb", "nokey", "=1"])), opt("--overrides", st.sampled_from(
                  ["dup.yml", "bad.yml", "sentinel.txt", "/nonexistent", ""]))]
BACKEND = [opt("--backend", hostile), opt("--precision", hostile), st.just(["--compile"]),
           opt("--artifacts", hostile)]
MEASURE = [opt("--repeats", ints), opt("--warmup-steps", ints), opt("--timeout", floats)]
OUT = st.sampled_from(OUT_NAMES)

COMMANDS: dict[str, tuple[list[str], list[Any], list[str]]] = {
    # name: (fixed argv, option strategies, output options)
    "topology": (["topology"], [st.just(["--json"])], ["-o"]),
    "plan": (["plan"], [*LAYOUT, st.just(["--json"]), st.just(["--list-settings"])], ["-o"]),
    "env": (["env"], [*LAYOUT, opt("--format", hostile), opt("--instance", ints)], ["-o"]),
    "exec": (["exec", "--dry-run"], [*LAYOUT, opt("--instance", ints)], []),
    "run": (["run"], [*WORKLOAD, *BACKEND, st.just(["--json"]), opt("--negative-prompt", hostile)], ["-o"]),
    "bench": (["bench"], [*WORKLOAD, *BACKEND, *LAYOUT[:4], opt("--runs", ints), opt("--warmup", ints),
                          opt("--images", ints), opt("--window", floats), st.just(["--throughput"])], ["-o"]),
    "verify": (["verify"], [*WORKLOAD, *LAYOUT, opt("--targets", st.sampled_from(
        ["dup.yml", "bad.yml", "targets.yml", "", "/nonexistent"])), opt("--runs", ints), opt("--warmup", ints),
        opt("--instance", ints), st.just(["--against-stock"])], ["--report", "--prometheus"]),
    "tune": (["tune"], [*WORKLOAD[:5], *MEASURE, *LAYOUT[:4], opt("--budget", floats), opt("--max-rounds", ints),
                        opt("--objective", hostile)], ["-o"]),
    "ladder": (["ladder"], [*WORKLOAD[:5], *MEASURE, st.just(["--quick"]), opt("--rounds", ints),
                            opt("--step-size", ints), opt("--step-calls", ints), opt("--throughput", ints)],
               ["--out-dir"]),
    "model compile": (["model", "compile"], [*WORKLOAD, opt("--artifacts", hostile)], []),
    # never a directory it could create a model in (seconds each): the refusals are what is driven
    "model create": (["model", "create"], [opt("--preset", st.sampled_from(["tiny", "sd15", "", "huge"])),
                                           st.just(["--force"]), opt("--seed", ints), st.just(["--json"])], []),
}
GROUP = [opt("--lock-timeout", floats), opt("--plan-file", st.sampled_from(
    ["", "/nonexistent", "sentinel.txt", "a\nb", "plan.json", "future.json"])),
    opt("--topology-file", st.sampled_from(["", "sentinel.txt", "/dev/null", "dup-topo.json"]))]


def _sandbox(root: Path) -> None:
    """The files the drawn paths name: a sentinel, a directory, broken inputs, a read-only-looking dir."""
    (root / "sentinel.txt").write_text("do not touch")
    (root / "adir").mkdir()
    (root / "adir" / "inside.txt").write_text("do not touch either")
    (root / "sub").mkdir()
    (root / "ro").mkdir()
    os.chmod(root / "ro", 0o555)
    (root / "dup.yml").write_text("a: 1\na: 2\n")
    (root / "bad.yml").write_text("- [unclosed\n")
    (root / "targets.yml").write_text("- {name: a, match: {}, p50_s: 1}\n")
    (root / "plan.json").write_text('{"format": "sdagent-plan/1", "settings": {}}')
    (root / "future.json").write_text('{"format": "sdagent-plan/99", "settings": {}}')
    (root / "dup-topo.json").write_text('{"cpus": [{"id": 0, "socket": 0, "core": 0, "node": 0, "siblings": [0]},'
                                        '{"id": 0, "socket": 0, "core": 0, "node": 0, "siblings": [0]}], '
                                        '"nodes": [{"id": 0, "cpus": [0]}]}')


def _tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under root with its mode, size and (small files') content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size,
                                             p.read_bytes() if p.is_file() and st_.st_size < 1 << 16 else None)
    return out


@st.composite
def invocations(draw: Any) -> tuple[list[str], list[str]]:
    """(argv, the output paths it names)."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    fixed, options, outs = COMMANDS[name]
    argv: list[str] = []
    for g in draw(st.lists(st.sampled_from(GROUP), max_size=2)):
        argv += draw(g)
    argv += fixed
    if name in ("run", "bench", "verify", "tune", "ladder", "model compile"):
        argv += ["--model", draw(st.sampled_from(MODEL_PATHS))]
    for o in draw(st.lists(st.sampled_from(options), max_size=4)):
        argv += draw(o)
    named = []
    for o in outs:
        if draw(st.booleans()):
            path = draw(OUT)
            argv += [o, path]
            named.append(path)
    if name == "exec":
        argv += ["--", "true"]
    if name == "model create":
        argv += ["--", draw(st.sampled_from(["", ".", "adir", "sentinel.txt", "/", "/proc/x", "missing/m", " "]))]
    return argv, named


@pytest.fixture(scope="module")
def sandbox():
    keep = os.getcwd(), dict(os.environ)
    for k in list(os.environ):
        if k.startswith(("SDAGENT_", "LD_PRELOAD", "OMP_", "KMP_", "MALLOC_CONF")):
            del os.environ[k]
    with tempfile.TemporaryDirectory(prefix="sdagent-fuzz-") as td:
        os.environ["SDAGENT_LOCK_FILE"] = os.path.join(td, "lock", "bench.lock")
        yield Path(td)
        os.chdir(keep[0])
    os.environ.clear()
    os.environ.update(keep[1])


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(invocations())
def test_every_command_ends_in_a_documented_code_without_a_traceback_touching_only_its_outputs(sandbox, inv):
    argv, named = inv
    work = Path(tempfile.mkdtemp(dir=sandbox))
    _sandbox(work)
    os.chdir(work)
    before = _tree(work)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            else:
                code = 0
    finally:
        os.chdir(sandbox)
    hypothesis.event(f"exit {code}")
    assert code in CODES, (argv, code, err.getvalue()[-800:])
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue()[-2000:])
    if code == 2:  # bad input: one line (Click's own --help output aside)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("sdagent: error: "), (argv, err.getvalue())
    after = _tree(work)
    allowed = {os.path.normpath(n) for n in named if n.strip()}
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    stray = {p for p in changed if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed)}
    assert not stray, (argv, sorted(stray), err.getvalue()[-500:])
    os.chmod(work / "ro", 0o755)
