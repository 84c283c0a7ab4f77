"""The order `sdagent tune` tries its axes in: by expected effect, so a short budget covers what matters first.

Why: the axes run one after another from the best so far, and the budget is a
hard ceiling, so the ones left at the end are the ones skipped. What decides
speed most goes first: the precision and backend change the kernels every FLOP
runs through, and the compiled packages remove the eager per-op overhead of the
UNet, the VAE decoder and the text encoder; then the instance split (throughput)
and the preloads, which changed the result in both directions on the hosts
measured (docs/results); the allocator's and the OpenMP runtime's variants, the
spin time and the thread count change the overhead around the kernels and come
last. A name not in the table keeps its place after the known ones.

The axes themselves are tuning.axes's (what each varies); this module only orders them.
"""

from __future__ import annotations

from typing import Sequence

from sdagent.tuning.search import Axis

#: (axis name, why it is there): first = the largest expected effect. The names are tuning.axes's.
EXPECTED_EFFECT: tuple[tuple[str, str], ...] = (
    ("precision/backend", "bf16 (AMX, AVX512-BF16) or IPEX: other kernels under every FLOP"),
    ("torch.compile", "AOTInductor packages: fused kernels, no eager per-op overhead"),
    ("OpenVINO weights", "int8 weights (and int8 UNet activations, hybrid): the next factor, lossy, gated on "
                         "fidelity"),
    ("UNet int8", "the native compiled UNet in int8 (PT2E): int8 kernels for its convolutions and matmuls, "
                  "lossy, gated on fidelity"),
    ("VAE", "the tiny autoencoder: the decode is most of an image's cost at one or few steps (Turbo, LCM), a "
            "few percent at 20; lossy, so its fidelity gate comes first and rejects it without a measurement"),
    ("layout", "throughput: how many instances share the host's cores; latency: one sub-NUMA node or the "
               "socket (SNC/NPS), P-cores alone or with the E-cores (hybrid)"),
    ("preloads", "jemalloc and libiomp5 together: measured faster and slower than stock by host"),
    ("memory format", "channels_last: the convolutions' memory layout"),
    ("threads", "intra-op threads: the OpenMP team's size"),
    ("pinning", "numactl/taskset binding: where the threads run"),
    ("KMP_AFFINITY", "compact thread pinning inside the binding (off by default: it confines children)"),
    ("OpenVINO", "backend openvino's own thread pinning (ENABLE_CPU_PINNING)"),
    ("OpenMP runtime", "libiomp5 or libgomp alone"),
    ("KMP_BLOCKTIME", "how long idle OpenMP threads spin"),
    ("allocator", "allocator variants (jemalloc's MALLOC_CONF, tcmalloc, glibc): overhead around the kernels"),
)


def order_axes(axes: Sequence[Axis]) -> list[Axis]:
    """The axes by expected effect (EXPECTED_EFFECT), stable; unknown names after the known ones."""
    rank = {name: i for i, (name, _) in enumerate(EXPECTED_EFFECT)}
    return sorted(axes, key=lambda a: rank.get(a.name, len(rank)))
