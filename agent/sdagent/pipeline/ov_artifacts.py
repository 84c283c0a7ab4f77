"""The OpenVINO export, built ahead of time: one per model, toolchain, shape, precision hint and CPU.

What an export is: optimum-intel's IR of the diffusers directory (`ir/`, written by
`optimum-cli export openvino --task text-to-image`, sdagent.pipeline.ov_export) plus the
CPU plugin's compiled blobs for one static shape and precision hint (`blobs/`,
OpenVINO's CACHE_DIR), and `manifest.json` naming the key it was built for, the
files it holds (size, and the sha256 of each .xml graph) and what the CPU plugin
resolved the precision hint to.

Why keyed like the AOTInductor packages (pipeline.artifacts): the IR changes with
the model's content and the exporter's versions; the blobs with OpenVINO's version,
the static shape (height, width, guided batch), the precision hint and the CPU. All
of that is the **key** (:class:`OvKey`); the store is addressed by its digest. An
export whose manifest names another key, whose files differ from the manifest, or
that lacks a file is **stale**: reported, never loaded, rebuilt and removed.

Built atomically: exported and compiled in a temp directory beside the store,
stamped with the manifest last, then renamed into place (sdagent.atomicio), so a
killed build leaves nothing that looks like an export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

from sdagent import atomicio
from sdagent.pipeline.artifacts import default_store, isa_difference, model_fingerprint

#: Bump when the way exports are built changes: older ones become stale.
RECIPE = 1
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sdagent-ov-artifact/1"
SUBDIR = "openvino"  # under the artifact store (default ~/.cache/sdagent/artifacts/openvino)

#: Versions that change the export: OpenVINO's runtime and GenAI (the blobs, the pipeline), and the
#: exporter's toolchain (the IR; sdagent.pipeline.ov_export.KEY_PACKAGES).
VERSION_PACKAGES: tuple[str, ...] = ("openvino", "openvino-genai", "openvino-tokenizers", "optimum", "optimum-intel",
                                     "nncf", "transformers", "diffusers", "torch")
#: Small files outside the weights whose content shapes the IR (the tokenizer is converted, the
#: scheduler config is copied): hashed whole.
MODEL_SMALL_DIRS: tuple[str, ...] = ("tokenizer", "scheduler")


def store_root(store_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the exports are kept: <artifact store>/openvino."""
    return (Path(store_dir) if store_dir else default_store()) / SUBDIR


def ov_model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """The model's identity for an export: the weights' fingerprint (pipeline.artifacts.model_fingerprint)
    plus the whole content of model_index.json, the tokenizer and the scheduler config."""
    root = Path(model_dir)
    h = hashlib.sha256(model_fingerprint(root).encode())
    small = [root / "model_index.json"] + [f for d in MODEL_SMALL_DIRS if (root / d).is_dir()
                                           for f in sorted((root / d).iterdir()) if f.is_file()]
    for f in small:
        if f.is_file():
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:24]


def toolchain_versions() -> dict[str, str | None]:
    """The versions of VERSION_PACKAGES in this process's environment (None: not installed)."""
    out: dict[str, str | None] = {}
    for n in VERSION_PACKAGES:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


@dataclass(frozen=True)
class OvKey:
    """Everything an export is valid for."""

    model: str  # ov_model_fingerprint()
    height: int
    width: int
    batch: int  # the UNet's guided batch (2 with classifier-free guidance)
    precision: str  # sdagent's name; INFERENCE_PRECISION_HINT bf16 | f32
    versions: Mapping[str, str | None]  # toolchain_versions()
    cpu: tuple[str, ...]  # pipeline.artifacts.cpu_identity(): vendor, family, model, every flag
    recipe: int = RECIPE
    #: the weights (planning.settings.OV_WEIGHTS): full | int8 | int8-hybrid (with ov_export.HYBRID_RECIPE)
    weights: str = "full"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["versions"] = dict(sorted(self.versions.items()))
        d["cpu"] = list(self.cpu)
        if self.weights == "full":
            del d["weights"]  # a full export's key (and digest) as before the int8 forms existed
        return d

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:20]

    def label(self) -> str:
        weights = "" if self.weights == "full" else f" {self.weights} weights"
        return f"OpenVINO export {self.height}x{self.width} batch {self.batch} {self.precision}{weights}"


def key_difference(built: Mapping[str, Any], want: OvKey) -> str:
    """How an export's key differs from the one wanted, in a few words (pure)."""
    w = want.to_dict()
    out = []
    for f in ("model", "height", "width", "batch", "precision", "recipe"):
        if built.get(f) != w[f]:
            out.append(f"{f} {built.get(f)!r} (here {w[f]!r})")
    if built.get("weights", "full") != w.get("weights", "full"):
        out.append(f"weights {built.get('weights', 'full')!r} (here {w.get('weights', 'full')!r})")
    vb = built.get("versions") if isinstance(built.get("versions"), Mapping) else {}
    out += [f"{n} {vb.get(n)} (here {v})" for n, v in w["versions"].items() if vb.get(n) != v]
    if built.get("cpu") != w["cpu"]:
        out.append(isa_difference(built.get("cpu"), want.cpu))
    return ", ".join(out) or "another key"


# ---------------------------------------------------------------------------
# Files: what the manifest records and what is checked on every lookup
# ---------------------------------------------------------------------------


def file_record(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under `root` (the IR): size, and the sha256 of each .xml graph (small, and what a copied
    or edited export changes first). The .bin weights are checked by size: hashing 3.4 GB would cost
    seconds at every start."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rec: dict[str, Any] = {"size": p.stat().st_size}
            if p.suffix == ".xml":
                rec["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.relative_to(root).as_posix()] = rec
    return out


def files_differ(recorded: Mapping[str, Any], root: Path) -> list[str]:
    """Files of the IR that are missing, resized or edited against the manifest (pure but for reading)."""
    bad = []
    for rel, rec in recorded.items():
        p = root / rel
        if not p.is_file():
            bad.append(f"{rel} missing")
        elif p.stat().st_size != rec.get("size"):
            bad.append(f"{rel} resized")
        elif "sha256" in rec and hashlib.sha256(p.read_bytes()).hexdigest() != rec["sha256"]:
            bad.append(f"{rel} changed")
    return bad


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OvArtifact:
    """A built export: its directory, what it was built for, and what the CPU plugin made of the hint."""

    key: OvKey
    path: Path
    built_s: float | None = None
    resolved_precision: str | None = None  # the UNet's INFERENCE_PRECISION_HINT after compile (bf16 | f32)

    @property
    def id(self) -> str:
        return self.key.digest

    @property
    def ir(self) -> Path:
        return self.path / "ir"

    @property
    def blobs(self) -> Path:
        return self.path / "blobs"


@dataclass
class OvLookup:
    artifact: OvArtifact | None
    stale: list[str] = field(default_factory=list)


#: (model_dir, temp dir, key) -> (resolved precision, extra manifest fields): exports and compiles into
#: tmp/ir and tmp/blobs. Injected so the store's bookkeeping is tested without OpenVINO.
Builder = Callable[[Path, Path, OvKey], tuple[str | None, dict[str, Any]]]


class OvStore:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else store_root()

    def _dir(self, key: OvKey) -> Path:
        return self.root / key.digest

    @staticmethod
    def manifest(d: Path) -> dict[str, Any] | None:
        try:
            m = json.loads((d / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT else None

    def check(self, d: Path, key: OvKey) -> str | None:
        """Why the export in `d` is not the one for `key` (None: it is)."""
        m = self.manifest(d)
        if m is None:
            return "no sdagent manifest"
        if m.get("key") != key.to_dict():
            return f"built for {key_difference(m.get('key') or {}, key)}"
        bad = files_differ(m.get("files") or {}, d / "ir")
        if bad or not m.get("files"):
            return f"its files differ from its manifest ({', '.join(bad[:4]) or 'none recorded'})"
        return None

    def lookup(self, key: OvKey) -> OvLookup:
        d = self._dir(key)
        if d.is_dir():
            why = self.check(d, key)
            if why is None:
                m = self.manifest(d) or {}
                return OvLookup(OvArtifact(key, d, m.get("built_s"), m.get("resolved_precision")))
            return OvLookup(None, [f"{d.name}: {why}"] + self.stale_for(key))
        return OvLookup(None, self.stale_for(key))

    def stale_for(self, key: OvKey) -> list[str]:
        """Exports of the same model, shape and weights built for another precision, toolchain, CPU or recipe
        (an export of other weights is another artifact, kept: a tune measures full and int8 side by side)."""
        out: list[str] = []
        if not self.root.is_dir():
            return out
        want = key.to_dict()
        for d in sorted(self.root.iterdir()):
            m = self.manifest(d) if d.is_dir() and d.name != key.digest else None
            k = m.get("key") if m else None
            if isinstance(k, dict) and all(k.get(f) == want[f] for f in ("model", "height", "width", "batch")) \
                    and k.get("weights", "full") == key.weights:
                out.append(f"{d.name}: built for {key_difference(k, key)}")
        return out

    def build(self, key: OvKey, model_dir: Path, builder: Builder) -> OvArtifact:
        """Export and compile into a temp directory, write the manifest last, rename into place. One builder per
        key at a time (atomicio.building: a second waits, then finds the first's export; a killed builder's
        temp directory, several GB for SD-1.5, is removed)."""
        with atomicio.building(self.root, key.digest):
            done = self.lookup(key).artifact
            return done if done is not None else self._build(key, model_dir, builder)

    def _build(self, key: OvKey, model_dir: Path, builder: Builder) -> OvArtifact:
        tmp = Path(tempfile.mkdtemp(prefix=f".{key.digest}.", dir=self.root))
        t0 = time.perf_counter()
        try:
            resolved, extra = builder(model_dir, tmp, key)
            built = round(time.perf_counter() - t0, 1)
            atomicio.write_json(tmp / MANIFEST, {
                "format": MANIFEST_FORMAT, "key": key.to_dict(), "model_dir": str(model_dir),
                "files": file_record(tmp / "ir"), "resolved_precision": resolved, "built_s": built,
                "built_at": time.time(), "python": sys.executable, **extra})
            final = self._dir(key)
            atomicio.replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return OvArtifact(key, final, built, resolved)

    def remove_stale(self, key: OvKey) -> list[str]:
        """Delete the stale exports of this key's model and shape (and a broken one at its own digest)."""
        gone = []
        for line in self.stale_for(key):
            name = line.split(":", 1)[0]
            shutil.rmtree(self.root / name, ignore_errors=True)
            gone.append(name)
        return gone
