"""The few-step ladder (issue 23 item 5): FastSD CPU's workloads as data, each run as one `sdagent ladder`.

Why these: people who serve images on CPUs today mostly run distilled few-step models with the tiny
autoencoder, and the best-known CPU tool, FastSD CPU (OpenVINO + few-step models + TAESD), publishes
its figures for exactly these shapes: SD-Turbo 1 step and SDXL-Turbo 1 step at 512x512 with
TAESD/TAESDXL, and LCM on SD 1.5 at 4 steps. The SD-Turbo workload runs twice, with TAESD and with the
model's full VAE, since at one step the VAE decode is most of an image's cost.

How: `bash scripts/ladder.sh --few-step` writes each workload's model directory once (`sdagent model
create --preset PRESET`, and the tiny autoencoder's preset into MODEL/vae_tiny, pipeline/vae.py's
place for it), a plan with the workload's `vae` on top of the plan in force, and runs `sdagent ladder`
on it into OUT/<workload>/; the OpenVINO GenAI peer rung runs in the same ladder where the peer runs
the family. `python -m sdagent.measuring.ladder_fewstep table OUT` then writes OUT/few-step.md: per
workload the shipped plan's s/image, images/min, start to first image and the peer's, from each
ladder.json.

Pure here but for :func:`main`'s reading and writing: the workload list, the runs for a model root and
an output root, the check of the ladder arguments the user adds, and the table.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdagent.errors import BadInput

#: FastSD CPU's published figures, quoted as published (never measured here). Source: FastSD CPU
#: (rupeshs/fastsdcpu), published on a 12-core Core i7-12700, 512x512 with TAESD/TAESDXL (shared notes,
#: anchors.md: "SDXS-512 1 step 0.82 s, SD-Turbo 1 step 1.7 s, SDXL-Turbo 1 step 2.5 s"). Keyed by the
#: workload each corresponds to (SDXS-512 has no workload here).
FASTSD_HOST = "FastSD CPU (rupeshs/fastsdcpu), published on a 12-core Core i7-12700, 512x512 with TAESD/TAESDXL"
FASTSD_PUBLISHED: Mapping[str, str] = {
    "sd-turbo-taesd": "SD-Turbo 1 step 1.7 s",
    "sdxl-turbo-taesdxl": "SDXL-Turbo 1 step 2.5 s",
}

#: Families OpenVINO GenAI's Text2ImagePipeline runs (its supported-models list: SD 1.5, SD 2.x, SDXL and
#: LCM; the Turbo models are SD 2.1 / SDXL architectures). A workload of another family runs without the peer.
PEER_FAMILIES = frozenset({"sd1", "sd2", "sd2-v", "sd-turbo", "sdxl", "sdxl-turbo", "lcm"})


@dataclass(frozen=True)
class FewStepWorkload:
    """One few-step workload: the model preset, the tiny autoencoder (None: the model's own VAE only),
    the plan's `vae`, the shape and steps. Guidance is the family's default (Turbo 0, LCM's embedding)."""

    name: str
    preset: str  # pipeline.modelgen preset of the model directory
    family: str  # pipeline.family name the preset is
    tae_preset: str | None  # pipeline.modelgen_tae preset written into MODEL/vae_tiny
    vae: str  # the plan's vae setting: tiny | full
    height: int
    width: int
    steps: int
    description: str

    @property
    def peer(self) -> bool:
        """Whether the OpenVINO GenAI peer runs this family (PEER_FAMILIES)."""
        return self.family in PEER_FAMILIES

    @property
    def published(self) -> str | None:
        return FASTSD_PUBLISHED.get(self.name)


#: The workloads, in the order they run, the heaviest (SDXL: 3.5 B parameters, its export the longest)
#: last. Source: issue 23 item 5 (FastSD CPU's shapes).
FEW_STEP: tuple[FewStepWorkload, ...] = (
    FewStepWorkload("sd-turbo-taesd", "sd-turbo", "sd-turbo", "taesd", "tiny", 512, 512, 1,
                    "SD-Turbo architecture, 512x512, 1 step, TAESD"),
    FewStepWorkload("sd-turbo-full-vae", "sd-turbo", "sd-turbo", None, "full", 512, 512, 1,
                    "SD-Turbo architecture, 512x512, 1 step, the full VAE"),
    FewStepWorkload("lcm-sd15", "lcm", "lcm", None, "full", 512, 512, 4,
                    "LCM on the SD 1.5 architecture, 512x512, 4 steps"),
    FewStepWorkload("sdxl-turbo-taesdxl", "sdxl-turbo", "sdxl-turbo", "taesdxl", "tiny", 512, 512, 1,
                    "SDXL-Turbo architecture, 512x512, 1 step, TAESDXL"),
)

#: The rungs each few-step ladder measures unless the user gives --rungs: stock (the baseline), the shipped
#: plan, the OpenVINO GenAI peer and the openvino backend (what `sdagent tune`'s backend axis can ship).
#: Why not every rung: at 512x512 one process takes a minute or more on a small host (SDXL more), and the
#: few-step table reads these (few_step_row).
DEFAULT_RUNGS = "vanilla,shipped,openvino,backend: openvino fp32"

#: Ladder options the workloads fix: the user may not give them beside --few-step.
FIXED_OPTIONS = ("--model", "--steps", "--height", "--width", "--quick", "--out-dir", "--json")


@dataclass(frozen=True)
class FewStepRun:
    """One workload's run: where its model, tiny autoencoder and results go, and the ladder's arguments."""

    workload: FewStepWorkload
    model_dir: Path
    tae_dir: Path | None
    out_dir: Path

    def shell_line(self) -> str:
        """The fields scripts/ladder.sh reads, shell-quoted: name preset model tae_preset tae_dir out vae
        steps height width ('-' for no tiny autoencoder)."""
        w = self.workload
        return shlex.join([w.name, w.preset, str(self.model_dir), w.tae_preset or "-",
                           str(self.tae_dir) if self.tae_dir else "-", str(self.out_dir), w.vae, str(w.steps),
                           str(w.height), str(w.width), "openvino" if w.peer else "no-openvino"])


def check_extra_args(extra: Sequence[str]) -> None:
    """The ladder options a user may add to --few-step: anything but the ones the workloads fix
    (FIXED_OPTIONS, also in their --opt=value form). BadInput names the first one given."""
    for a in extra:
        opt = a.split("=", 1)[0]
        if opt in FIXED_OPTIONS:
            raise BadInput(f"invalid {opt} with --few-step: each workload sets "
                           f"{', '.join(o for o in FIXED_OPTIONS if o != '--json')} itself")


def few_step_runs(model_root: str | Path, out_root: str | Path,
                  workloads: Sequence[FewStepWorkload] = FEW_STEP, only: Sequence[str] = ()) -> list[FewStepRun]:
    """The runs under `model_root` (MODEL_ROOT/<preset>, its tiny autoencoder in <preset>/vae_tiny) and
    `out_root` (OUT/<workload>). `only`: workload names to keep (empty: all); an unknown one is BadInput."""
    from sdagent.pipeline.vae import TINY_SUBDIR

    names = [w.name for w in workloads]
    for n in only:
        if n not in names:
            raise BadInput(f"unknown few-step workload {n!r}: choose from {', '.join(names)}")
    out = []
    for w in workloads:
        if only and w.name not in only:
            continue
        model = Path(model_root) / w.preset
        out.append(FewStepRun(w, model, model / TINY_SUBDIR if w.tae_preset else None, Path(out_root) / w.name))
    return out


# ---------------------------------------------------------------------------
# The table across workloads (pure: each workload's ladder.json record in, Markdown out)
# ---------------------------------------------------------------------------


def _median(d: Mapping[str, Any] | None) -> float | None:
    return None if not d else d.get("median")


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def few_step_row(w: FewStepWorkload, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """One workload's figures from its ladder.json (None: not run): the shipped plan's rung and the peer's."""
    row: dict[str, Any] = {"workload": w.name, "description": w.description, "published": w.published}
    if report is None:
        return {**row, "missing": "not run"}
    rungs = {r["rung"]: r for r in report.get("rungs") or ()}
    shipped = rungs.get(report.get("shipped_rung", ""), {})
    peer = rungs.get("openvino", {})
    s = _median(shipped.get("latency_s"))
    p = _median(peer.get("latency_s"))
    return {**row, "rung": report.get("shipped_rung"), "s_per_image": s,
            "images_per_min": 60 / s if s else None, "first_image_s": _median(shipped.get("first_image_s")),
            "openvino_s_per_image": p, "openvino_images_per_min": 60 / p if p else None,
            "openvino_first_image_s": _median(peer.get("first_image_s")),
            "vs_openvino": _median(shipped.get("speedup_vs_openvino")),
            "failed": shipped.get("failed"), "openvino_failed": peer.get("failed") if peer else "not run",
            "host": (report.get("machine") or {}).get("cpu_model")}


def few_step_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The few-step table: per workload the shipped plan and the OpenVINO GenAI peer, images/min (one
    process: 60 / s per image) beside latency, and start to first image; FastSD CPU's figure as published."""
    lines = ["# Few-step ladder", "",
             "The shipped plan's rung and the OpenVINO GenAI peer of each workload's `sdagent ladder` (median over "
             "rounds; images/min of one process, 60 / s per image; start to first image: process start to the "
             f"end of its first whole image). Published column: {FASTSD_HOST}; quoted as published, not measured "
             "here.", "",
             "| workload | rung | s / image | images/min | start to first image, s | OpenVINO s / image "
             "| OpenVINO images/min | OpenVINO start, s | × vs OpenVINO (> 1: faster) | FastSD CPU published |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("missing"):
            lines.append(f"| {r['workload']} | {r['missing']} | – | – | – | – | – | – | – | {r['published'] or '–'} |")
            continue
        lines.append(f"| {r['workload']} | {r['rung']}{' (failed)' if r['failed'] else ''} | {_f(r['s_per_image'])} "
                     f"| {_f(r['images_per_min'], '{:.1f}')} | {_f(r['first_image_s'])} "
                     f"| {_f(r['openvino_s_per_image'])} | {_f(r['openvino_images_per_min'], '{:.1f}')} "
                     f"| {_f(r['openvino_first_image_s'])} | {_f(r['vs_openvino'])} | {r['published'] or '–'} |")
    hosts = sorted({r["host"] for r in rows if r.get("host")})
    if hosts:
        lines += ["", f"Measured on: {', '.join(hosts)}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sdagent.measuring.ladder_fewstep runs MODEL_ROOT OUT_ROOT [LADDER ARGS...]`: the runs, one
    shell-quoted line each (exit 2 on a ladder option the workloads fix); `... rungs`: DEFAULT_RUNGS, the
    --rungs scripts/ladder.sh gives where the user gives none; `... table OUT_ROOT`: write
    OUT_ROOT/few-step.md (and .json) from each workload's ladder.json and print it."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["rungs"]:
            print(DEFAULT_RUNGS)
            return 0
        if len(args) >= 3 and args[0] == "runs":
            check_extra_args(args[3:])
            for r in few_step_runs(args[1], args[2]):
                print(r.shell_line())
            return 0
        if len(args) == 2 and args[0] == "table":
            root = Path(args[1])
            rows = []
            for r in few_step_runs(root / "models-unused", root):
                f = r.out_dir / "ladder.json"
                rows.append(few_step_row(r.workload, json.loads(f.read_text()) if f.is_file() else None))
            from sdagent import atomicio

            text = few_step_markdown(rows)
            atomicio.write_text(root / "few-step.md", text)
            atomicio.write_json(root / "few-step.json", {"format": "sdagent-few-step/1", "rows": rows})
            print(text, end="")
            return 0
    except BadInput as exc:
        print(f"sdagent: error: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m sdagent.measuring.ladder_fewstep runs MODEL_ROOT OUT_ROOT [LADDER ARGS...] | rungs | "
          "table OUT_ROOT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
