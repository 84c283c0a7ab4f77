"""Host probes that decide what the plan may use: the C++ compiler's test build (issue 19 item 7) and
IPEX's import in a subprocess (item 9), both cached; stand-in programs show what this host cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from pathlib import Path

import pytest

from clirun import clean_env, sdagent
from sdagent.host import cxx as C
from sdagent.host.software import gather_facts, ipex_status

#: GCC 8 as RHEL 8 ships it: answers --version, rejects C++20 as GCC before 10 does.
GCC8 = """#!/bin/sh
echo "$*" >> "{log}"
for a in "$@"; do
  case "$a" in
    --version) echo "g++ (GCC) 8.5.0 20210514 (Red Hat 8.5.0-4)"; exit 0;;
    -std=c++2*) echo "g++: error: unrecognized command line option '$a'; did you mean '-std=c++2a'?" >&2; exit 1;;
  esac
done
{tail}
"""


def stand_in(dirpath: Path, name: str, tail: str = "exit 0") -> Path:
    """An executable `name` in `dirpath` behaving like GCC 8; `tail` runs when no option was rejected."""
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / name
    p.write_text(GCC8.format(log=dirpath / f"{name}.log", tail=tail))
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return p


def calls(p: Path) -> list[str]:
    log = p.parent / f"{p.name}.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A probe cache of this test's own."""
    monkeypatch.setenv("SDAGENT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------
# Item 7: the compiler's test build
# ---------------------------------------------------------------------------


def test_a_compiler_that_rejects_inductors_standard_is_named_with_its_first_error_line(tmp_path, cache):
    gcc8 = stand_in(tmp_path / "bin", "g++")
    why = C.cxx_problem(str(gcc8), cpu_flags=("avx2", "fma", "f16c"), std="-std=c++20")
    assert why is not None and why.startswith(f"{gcc8} cannot build inductor's code (-std=c++20): ")
    assert why.endswith("g++: error: unrecognized command line option '-std=c++20'; did you mean '-std=c++2a'?")
    build = [c for c in calls(gcc8) if "--version" not in c]
    assert len(build) == 1 and "-fopenmp" in build[0] and "-mavx2 -mfma -mf16c" in build[0] \
        and "-shared -fPIC" in build[0] and "sdagent_cxx_probe.cpp" in build[0]


def test_the_answer_is_cached_per_compiler_and_redone_when_the_compiler_changes(tmp_path, cache):
    gcc8 = stand_in(tmp_path / "bin", "g++")
    first = C.cxx_problem(str(gcc8), cpu_flags=(), std="-std=c++20")
    assert C.cxx_problem(str(gcc8), cpu_flags=(), std="-std=c++20") == first
    assert len([c for c in calls(gcc8) if "--version" not in c]) == 1  # the second answer came from the cache
    assert len(list((cache / "probes").glob("cxx-*.json"))) == 1
    # the same path, upgraded (a new file: another mtime and version): built again, and now it can
    os.unlink(gcc8)
    gcc8.write_text(f"#!/bin/sh\necho \"$*\" >> {gcc8.parent / 'g++.log'}\n"
                    "[ \"$1\" = --version ] && { echo 'g++ (GCC) 12.2.0'; exit 0; }\n"
                    "prev=''; for a in \"$@\"; do [ \"$prev\" = -o ] && : > \"$a\"; prev=$a; done; exit 0\n")
    gcc8.chmod(0o755)
    os.utime(gcc8, ns=(1, 10**18))
    assert C.cxx_problem(str(gcc8), cpu_flags=(), std="-std=c++20") is None
    assert len([c for c in calls(gcc8) if "--version" not in c]) == 2


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on this host to build the test program")
def test_the_hosts_own_gxx_builds_the_test_program(cache):
    assert C.cxx_problem(shutil.which("g++")) is None


def test_gather_facts_fills_cxx_error_from_the_compiler_in_cxx(tmp_path, cache, monkeypatch):
    gcc8 = stand_in(tmp_path / "bin", "g++", tail='echo "cc1plus: error: inductor needs C++17 at least" >&2; exit 1')
    monkeypatch.setenv("CXX", str(gcc8))
    facts = gather_facts()
    assert facts.cxx == str(gcc8)
    assert facts.cxx_error and str(gcc8) in facts.cxx_error and "error:" in facts.cxx_error
    assert facts.to_dict()["cxx_error"] == facts.cxx_error


def test_inductor_std_and_isa_flags_follow_torch_and_the_cpu(tmp_path):
    src = tmp_path / "cpp_builder.py"
    src.write_text('def _get_cpp_std_cflag(std_num: str = "c++20") -> list[str]:\n    pass\n')
    assert C.inductor_std_flag(src) == "-std=c++20"
    src.write_text("# an older torch without the helper\n")
    assert C.inductor_std_flag(src) == "-std=c++17"
    spr = ("avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512vl", "avx512bw", "avx512_vnni", "avx512_bf16",
           "amx_tile", "amx_bf16", "amx_int8")
    assert "-mamx-tile" in C.isa_flags(spr) and "-mavx512bf16" in C.isa_flags(spr)
    assert C.isa_flags(("avx2", "fma", "f16c")) == ("-mavx2", "-mfma", "-mf16c")
    assert C.isa_flags(("sse4_2",)) == ()


def test_first_error_line():
    assert C.first_error_line("In file included from x.h:1:\nx.cpp:3:1: error: 'concept' does not name a type\n"
                              "x.cpp:9: error: later\n") == "x.cpp:3:1: error: 'concept' does not name a type"
    assert C.first_error_line("\n  ld: cannot find -lgomp\n") == "ld: cannot find -lgomp"


def test_a_cpp_compile_error_names_the_compiler_and_its_first_error():
    from sdagent.pipeline.artifacts import build_error

    class CppCompileError(Exception):  # inductor's message layout (torch/_inductor/exc.py)
        pass

    exc = CppCompileError("C++ compile error\n\nCommand:\n/opt/gcc8/bin/g++ /tmp/x/header.hpp -O1 -std=c++20 -o "
                          "/tmp/x/header.i\n\nOutput:\ng++: error: unrecognized command line option '-std=c++20'\n")
    assert build_error(exc) == ("/opt/gcc8/bin/g++ failed to build inductor's code: "
                                "g++: error: unrecognized command line option '-std=c++20'")
    assert build_error(ValueError("an unsupported op\nmore")) == "ValueError: an unsupported op"


# ---------------------------------------------------------------------------
# Item 7 through the CLI: `model compile` exits 7 naming the compiler; `run` says what really ran
# ---------------------------------------------------------------------------


def test_model_compile_with_a_compiler_that_cannot_build_is_exit_7_one_line(tiny_model, tmp_path):
    gcc8 = stand_in(tmp_path / "bin", "g++")
    env = clean_env(CXX=str(gcc8), SDAGENT_CACHE=str(tmp_path / "cache"),
                    SDAGENT_LOCK_FILE=str(tmp_path / "bench.lock"))
    r = sdagent("model", "compile", "--model", str(tiny_model), "--height", "64", "--width", "64",
                "--artifacts", str(tmp_path / "store"), env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 7, r.stderr
    assert len(lines) == 1 and lines[0].startswith("sdagent: error: model compile: ") and str(gcc8) in lines[0]
    assert "unrecognized command line option '-std=c++" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "store").exists()  # nothing built, nothing half-written


def test_model_compile_whose_package_build_fails_is_exit_7_naming_the_compiler(tiny_model, tmp_path):
    """A compiler that passes the test build but fails inductor's real one (a header it lacks): the
    export runs, inductor's build fails, and the command says so in one line instead of a traceback."""
    real = shutil.which("g++")
    if real is None:
        pytest.skip("no g++ on this host for the stand-in to pass its test build with")
    flaky = tmp_path / "bin" / "g++"
    flaky.parent.mkdir()
    flaky.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *sdagent_cxx_probe.cpp*|--version) exec {real} "$@";; esac
        echo "fatal error: ATen/cpu/vec/vec.h: No such file or directory" >&2
        echo "compilation terminated." >&2; exit 1
        """))
    flaky.chmod(0o755)
    env = clean_env(CXX=str(flaky), SDAGENT_CACHE=str(tmp_path / "cache"),
                    TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    r = sdagent("model", "compile", "--model", str(tiny_model), "--height", "64", "--width", "64",
                "--artifacts", str(tmp_path / "store"), env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sdagent: error")]
    assert r.returncode == 7, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-3000:]
    assert str(flaky) in lines[0] and "No such file or directory" in lines[0], lines[0]
    # where the plan in force does not compile (eager: AVX2 hosts), the command says what it builds instead
    compiles = json.loads(sdagent("plan", "--json", env=env).stdout)["settings"]["compile"]
    assert ("the plan in force does not compile" in r.stderr) is (not compiles), r.stderr[-3000:]


def test_run_and_bench_whose_compile_falls_back_say_eager_in_their_headers(tiny_model, tmp_path):
    """The plan asks compiled; no package can be built (an unwritable store): the header says what ran."""
    out = tmp_path / "x.png"
    args = ("run", "--model", str(tiny_model), "--prompt", "p", "--steps", "2", "--height", "64", "--width", "64",
            "--backend", "native", "--compile", "--artifacts", "/proc/sdagent-no-store", "-o", str(out))
    env = clean_env(SDAGENT_CACHE=str(tmp_path / "cache"))
    r = sdagent(*args, env=env)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[1]
    assert ", eager (compile unavailable: " in header and "compiled" not in header.split("(")[0], header
    j = json.loads(sdagent(*args, "--json", env=env).stdout)
    assert j["compiled"] is False and j["ran"].startswith(j["run"]["backend"]) and "compile unavailable" in j["ran"]
    b = sdagent("bench", "--model", str(tiny_model), "--steps", "2", "--height", "64", "--width", "64", "--runs", "1",
                "--warmup", "0", "--backend", "native", "--compile", "--artifacts", "/proc/sdagent-no-store",
                env=clean_env(SDAGENT_CACHE=str(tmp_path / "cache"), SDAGENT_LOCK_FILE=str(tmp_path / "lock")))
    assert b.returncode == 0, b.stderr
    setup = next(ln for ln in b.stdout.splitlines() if ln.startswith("setup: "))
    assert ", eager (compile unavailable: " in setup, setup


# ---------------------------------------------------------------------------
# Item 9: IPEX usable only when it imports
# ---------------------------------------------------------------------------


def fake_ipex(root: Path, torch_version: str, body: str) -> Path:
    """An `intel-extension-for-pytorch` install whose metadata matches torch and whose import runs `body`."""
    pkg = root / "intel_extension_for_pytorch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    info = root / f"intel_extension_for_pytorch-{torch_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: intel-extension-for-pytorch\n"
                                   f"Version: {torch_version}\n")
    return root


BROKEN = ('raise ImportError("/venv/lib/python3.11/site-packages/intel_extension_for_pytorch/lib/'
          'libintel-ext-pt-cpu.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")\n')


@pytest.fixture
def torch_version() -> str:
    from sdagent.host.software import package_version

    v = package_version("torch")
    if v is None:
        pytest.skip("torch is not installed: IPEX's metadata cannot match it")
    if package_version("intel-extension-for-pytorch"):
        pytest.skip("a real IPEX is installed here: the fake one would not be the one found")
    return v


def test_ipex_that_matches_torch_but_fails_to_import_is_not_usable(tmp_path, cache, monkeypatch, torch_version):
    monkeypatch.syspath_prepend(str(fake_ipex(tmp_path / "site", torch_version, BROKEN)))
    st = ipex_status()
    assert st.usable is False and st.version == torch_version
    assert "does not import" in st.reason and "undefined symbol: _ZN3c1017RegisterOperatorsD1Ev" in st.reason
    rec = json.loads(next((cache / "probes").glob("ipex-import-*.json")).read_text())
    assert rec["key"]["version"] == torch_version and rec["answer"]["ok"] is False


def test_ipex_import_is_cached_per_install(tmp_path, cache, monkeypatch, torch_version):
    site = fake_ipex(tmp_path / "site", torch_version, "import os\nopen(os.environ['IPEX_LOG'], 'a').write('x')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("IPEX_LOG", str(tmp_path / "imports"))
    assert ipex_status().usable is True and ipex_status().usable is True
    assert (tmp_path / "imports").read_text() == "x"  # imported once: the second answer is the cache's
    # the install changes (a reinstall that broke it): its mtime is another, so it is imported again
    init = site / "intel_extension_for_pytorch" / "__init__.py"
    init.write_text(BROKEN)
    os.utime(init, ns=(1, 10**18))
    assert ipex_status().usable is False


def test_plan_falls_back_to_native_naming_the_import_error(tiny_model, tmp_path, torch_version):
    site = fake_ipex(tmp_path / "site", torch_version, BROKEN)
    env = clean_env(SDAGENT_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], str(site)))
    r = sdagent("plan", "--json", env=env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["settings"]["backend"] == "native"
    backend = next(d for d in plan["decisions"] if d["key"] == "backend")
    assert "undefined symbol" in backend["reason"], backend
    assert plan["facts"]["ipex"]["usable"] is False
    r = sdagent("run", "--model", str(tiny_model), "--prompt", "p", "--backend", "ipex", "-o",
                str(tmp_path / "x.png"), env=env)
    assert r.returncode == 2 and "undefined symbol" in r.stderr
