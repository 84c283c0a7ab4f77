"""Compiled artifacts: AOTInductor packages of the pipeline's parts, built once, loaded in seconds.

Why ahead of time: a torch.compile of SD-1.5's UNet takes minutes in every
fresh process, even with a warm cache (the frozen graph's prepacked oneDNN
weights cannot be pickled, so inductor's FX-graph cache is bypassed). An
AOTInductor package holds the compiled kernels and the frozen, prepacked
weights in one shared object: a fresh process loads it in seconds.

A package is only valid for what it was built for: the model's weights, the
part, the input shapes (resolution, guided batch), precision and memory
format, the compile options, the torch version and the CPU's ISA. All of that
is its **key**; the store is addressed by the key's digest, and each package
carries its key in `manifest.json`. A package built for another torch or
another CPU is never loaded: it is reported stale and rebuilt.
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
from typing import Any, Mapping

from sdagent import atomicio
from sdagent.errors import BadInput

#: Bump when the way parts are wrapped or built changes: older packages become stale.
RECIPE = 1
PARTS = ("unet", "vae_decoder", "text_encoder")
MANIFEST = "manifest.json"


def default_store() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdagent" / "artifacts"


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
    isa: tuple[str, ...]
    recipe: int = RECIPE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["options"] = dict(sorted(self.options.items()))
        return d

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:20]

    def label(self) -> str:
        return f"{self.part} {self.height}x{self.width} batch {self.batch} {self.precision}"


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
            same = all(k.get(f) == want[f] for f in ("model", "part", "height", "width", "batch", "precision"))
            if same:
                diff = [f"{f} {k.get(f)!r} (here {want[f]!r})" for f in ("torch", "isa", "recipe", "options",
                                                                        "channels_last") if k.get(f) != want[f]]
                out.append(f"{d.name}: built for {', '.join(diff) or 'another key'}")
        return out

    @staticmethod
    def _manifest(d: Path) -> dict[str, Any] | None:
        try:
            m = json.loads((d / MANIFEST).read_text())
            return m if isinstance(m, dict) else None
        except (OSError, ValueError):
            return None

    def build(self, key: ArtifactKey, module: Any, example_inputs: tuple) -> Artifact:
        """Export `module` on the example inputs and compile an AOTInductor package; into the store atomically
        (a temp directory renamed into place, the manifest written last), so a half-built one is never seen."""
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
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
