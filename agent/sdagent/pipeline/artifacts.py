"""Compiled artifacts: AOTInductor packages of the pipeline's parts, built once, loaded in seconds.

Why ahead of time: a torch.compile of SD-1.5's UNet takes minutes in every
fresh process, even with a warm cache (the frozen graph's prepacked oneDNN
weights cannot be pickled, so inductor's FX-graph cache is bypassed). An
AOTInductor package holds the compiled kernels and the frozen, prepacked
weights in one shared object: a fresh process loads it in seconds.

A package is only valid for what it was built for: the model's weights, the
part, the input shapes (resolution, guided batch), precision and memory
format, the compile options, the torch version and the CPU it was built on. All
of that is its **key**; the store is addressed by the key's digest, and each package
carries its key in `manifest.json`. A package built for another torch or
another CPU is never loaded: it is reported stale and rebuilt.

The CPU part of the key is what the build really depends on: inductor compiles
the kernels with `-march=native`, so the compiler targets every feature the CPU
reports, not a chosen subset. A package keyed on 15 ISA flags could be loaded
on a CPU that shares them but lacks another the compiler used (a cache copied
between CPU generations): :func:`cpu_identity` keys on the vendor, family,
model and the whole flag set of /proc/cpuinfo instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sdagent import atomicio
from sdagent.errors import BadInput

#: Bump when the way parts are wrapped or built changes: older packages become stale.
#: 2: the CPU is keyed on its whole /proc/cpuinfo identity (cpu_identity), not 15 ISA flags.
RECIPE = 2
PARTS = ("unet", "vae_decoder", "text_encoder")
MANIFEST = "manifest.json"


def default_store() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdagent" / "artifacts"


def cpu_identity(cpuinfo_text: str) -> tuple[str, ...]:
    """What code built with `-march=native` depends on, from /proc/cpuinfo's first processor:
    ("vendor_id", "cpu family", "model", then every flag, sorted). Pure; () for an empty text.

    Flags beyond the ISA (hypervisor, constant_tsc) are kept: a key that changes for a harmless
    flag costs one rebuild, one that misses a feature the compiler used costs a SIGILL.
    """
    first: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        k, _, v = line.partition(":")
        first.setdefault(k.strip(), v.strip())
    if not first:
        return ()
    head = (f"vendor={first.get('vendor_id', '?')}", f"family={first.get('cpu family', '?')}",
            f"model={first.get('model', '?')}")
    return head + tuple(sorted(set(first.get("flags", "").split())))


def host_cpu(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, ...]:
    """cpu_identity() of the CPU this process runs on (not an injected topology's)."""
    try:
        return cpu_identity(Path(cpuinfo).read_text())
    except OSError:
        return ()


def isa_difference(built: Any, here: tuple[str, ...]) -> str:
    """How a stale package's CPU differs from this one, shortly: the identity fields and flags that differ."""
    built_set = set(built or ())
    gone = sorted(set(here) - built_set)
    extra = sorted(built_set - set(here))
    parts = ([f"lacks {' '.join(gone[:8])}{' ...' if len(gone) > 8 else ''}"] if gone else []) + \
        ([f"had {' '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}"] if extra else [])
    return f"another CPU ({'; '.join(parts)})" if parts else "another CPU"


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """The model's identity, cheaply: every config, and per weights file its size, its safetensors
    header and 16 samples of its bytes (a full hash of 4 GB would add seconds to every start)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for sub in ("unet", "vae", "text_encoder"):
        for f in sorted((root / sub).iterdir()) if (root / sub).is_dir() else []:
            if f.name.endswith(".json"):
                h.update(f.name.encode() + f.read_bytes())
            elif f.name.endswith(".safetensors"):
                size = f.stat().st_size
                h.update(f"{sub}/{f.name}:{size}".encode())
                with f.open("rb") as fh:
                    head = fh.read(8)
                    n = int.from_bytes(head, "little") if len(head) == 8 else 0
                    h.update(fh.read(min(n, 1 << 20)))
                    for k in range(16):
                        fh.seek(size * k // 16)
                        h.update(fh.read(4096))
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class ArtifactKey:
    """Everything a package is valid for."""

    model: str  # model_fingerprint()
    part: str  # unet | vae_decoder | text_encoder
    height: int
    width: int
    batch: int  # the UNet's guided batch; 1 for the VAE and per prompt for the text encoder
    precision: str
    channels_last: bool
    options: Mapping[str, Any]  # compile options: freezing, max_autotune
    torch: str
    isa: tuple[str, ...]  # cpu_identity() of the CPU it is built on (vendor, family, model, every flag)
    recipe: int = RECIPE
    #: "none", or the int8 UNet's scheme and recipe (pipeline.quantize.INT8_KEY: "int8-pt2e/1")
    quantize: str = "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["options"] = dict(sorted(self.options.items()))
        if self.quantize == "none":
            del d["quantize"]  # a package's key (and digest) as before int8 packages existed
        return d

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:20]

    def label(self) -> str:
        q = "" if self.quantize == "none" else f" {self.quantize}"
        return f"{self.part} {self.height}x{self.width} batch {self.batch} {self.precision}{q}"


def quant_scheme(key: Mapping[str, Any]) -> str:
    """A key's quantization scheme without its recipe version ("none", "int8-pt2e"): an int8 package and an
    fp32 one of the same part are two artifacts, kept side by side; an int8 one of an older recipe is stale."""
    return str(key.get("quantize", "none")).split("/", 1)[0]


@dataclass(frozen=True)
class Artifact:
    key: ArtifactKey
    path: Path  # the package file (.pt2)
    built_s: float | None = None

    @property
    def id(self) -> str:
        return self.key.digest


@dataclass
class Lookup:
    """What the store holds for a key: the artifact, or why not (missing, or stale and why)."""

    artifact: Artifact | None
    stale: list[str] = field(default_factory=list)  # packages of the same model/part/shape built for others


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_store()

    def _dir(self, key: ArtifactKey) -> Path:
        return self.root / key.digest

    def lookup(self, key: ArtifactKey) -> Lookup:
        d = self._dir(key)
        manifest = self._manifest(d)
        if manifest is not None and manifest.get("key") == key.to_dict() and (d / manifest["file"]).is_file():
            return Lookup(Artifact(key, d / manifest["file"], manifest.get("built_s")))
        return Lookup(None, self.stale_for(key))

    def stale_for(self, key: ArtifactKey) -> list[str]:
        """Packages of the same model, part and shape built for another torch, CPU or recipe, and how they differ."""
        out = []
        if not self.root.is_dir():
            return out
        want = key.to_dict()
        for d in sorted(self.root.iterdir()):
            m = self._manifest(d)
            if not m or not isinstance(m.get("key"), dict) or d.name == key.digest:
                continue
            k = m["key"]
            same = all(k.get(f) == want[f] for f in ("model", "part", "height", "width", "batch", "precision")) \
                and quant_scheme(k) == quant_scheme(want)
            if same:
                diff = [isa_difference(k.get(f), key.isa) if f == "isa" else f"{f} {k.get(f)!r} (here {want.get(f)!r})"
                        for f in ("torch", "isa", "recipe", "options", "channels_last", "quantize")
                        if k.get(f) != want.get(f)]
                out.append(f"{d.name}: built for {', '.join(diff) or 'another key'}")
        return out

    @staticmethod
    def _manifest(d: Path) -> dict[str, Any] | None:
        try:
            m = json.loads((d / MANIFEST).read_text())
            return m if isinstance(m, dict) else None
        except (OSError, ValueError):
            return None

    def build(self, key: ArtifactKey, make_module: Callable[[], Any], example_inputs: tuple) -> Artifact:
        """Export `make_module()` on the example inputs and compile an AOTInductor package; into the store
        atomically (a temp directory renamed into place, the manifest written last), so a half-built one is never
        seen. One builder per key at a time (atomicio.building: a second waits, then finds the first's package;
        a killed builder's temp directory is removed), and the module is made only then (the int8 UNet
        calibrates in make_module)."""
        with atomicio.building(self.root, key.digest):
            done = self.lookup(key).artifact
            return done if done is not None else self._build(key, make_module(), example_inputs)

    def _build(self, key: ArtifactKey, module: Any, example_inputs: tuple) -> Artifact:
        import torch

        tmp = Path(tempfile.mkdtemp(prefix=f".{key.digest}.", dir=self.root))
        t0 = time.perf_counter()
        try:
            import torch._inductor.config as icfg

            with icfg.patch(freezing=True, max_autotune=bool(key.options.get("max_autotune"))), torch.no_grad():
                ep = torch.export.export(module, example_inputs)
                torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp / f"{key.part}.pt2"))
            built = round(time.perf_counter() - t0, 1)
            (tmp / MANIFEST).write_text(json.dumps({"format": "sdagent-artifact/1", "key": key.to_dict(),
                                                    "file": f"{key.part}.pt2", "built_s": built,
                                                    "built_at": time.time()}, indent=2))
            final = self._dir(key)
            atomicio.replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(key, final / f"{key.part}.pt2", built)

    def remove_stale(self, key: ArtifactKey) -> list[str]:
        """Delete the stale packages of this key's model/part/shape; what was removed."""
        gone = []
        for line in self.stale_for(key):
            d = self.root / line.split(":", 1)[0]
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d.name)
        return gone


def build_error(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a package build failed; for a C++ compile error, the compiler that ran and its
    first error line (inductor's CppCompileError carries "Command:" and "Output:" sections), since the
    exception's own first line ("C++ compile error") names neither."""
    from sdagent.errors import one_line
    from sdagent.host.cxx import first_error_line

    text = str(exc)
    if "C++ compile error" not in text:
        return one_line(exc, limit)
    cmd = text.partition("Command:")[2].strip().split(None, 1)
    out = text.partition("Output:")[2]
    compiler = cmd[0] if cmd else "the C++ compiler"
    return f"{compiler} failed to build inductor's code: {first_error_line(out, limit) or 'no output'}"


def check_store(root: str | os.PathLike[str]) -> Path:
    p = Path(root)
    if p.exists() and not p.is_dir():
        raise BadInput(f"artifact store is not a directory: {p}")
    return p
