"""Evidence records for tests: the planner's rules read the evidence, so a test states which it plans from.

`POSITIVE` says the demo's levers (jemalloc, tcmalloc, libiomp5), native bf16, compile and channels_last measured
faster on every ISA class: the plan then keeps them, as the planner did before issue 21, which is what
the tests of preload paths, KMP_* and fallbacks exercise. The shipped evidence (planning/evidence.json)
drops the preloads; `shipped_keeps` says what it keeps on a host, for tests that plan from it.
"""

from __future__ import annotations

from sdagent.host.hostclass import isa_class
from sdagent.planning.evidence import ISA_CLASSES, Evidence, Measurement, Ratio, default_evidence, lever_finding

POSITIVE_LEVERS = ("jemalloc", "tcmalloc", "libiomp5", "native_bf16", "compile", "channels_last")

POSITIVE = Evidence(tuple(
    Measurement(f"{lever}-{cls}", "test host", cls, 2, "2.13.0", (lever,), "fp32", "stock",
                Ratio(1.2, 1.1, 1.3, 3), "test workload", "test", "tests")
    for lever in POSITIVE_LEVERS for cls in ISA_CLASSES), "tests/evidence_fixtures.py")


def shipped_keeps(flags, lever: str) -> bool:
    """Whether the shipped evidence keeps `lever` on a host with these CPU flags."""
    return lever_finding(default_evidence(), lever, isa_class(tuple(flags))).keep
