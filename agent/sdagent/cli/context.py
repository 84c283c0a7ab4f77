"""State shared by the subcommands: the topology, host facts and plan, each computed once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdagent.hostfacts import HostFacts, gather_facts
from sdagent.plan import Plan, PlanRequest, load_plan_file, make_plan
from sdagent.topology import Topology, current_topology


@dataclass
class AgentContext:
    sysroot: str | None = None
    topology_file: str | None = None
    plan_file: str | None = None
    _topology: Topology | None = field(default=None, repr=False)
    _facts: HostFacts | None = field(default=None, repr=False)

    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = current_topology(self.sysroot, self.topology_file)
        return self._topology

    def facts(self) -> HostFacts:
        if self._facts is None:
            self._facts = gather_facts()
        return self._facts

    def plan(self, request: PlanRequest | None = None, overrides: dict[str, Any] | None = None) -> Plan:
        """The plan in force: the plan file's settings (if any), then `overrides`, on this topology."""
        base: dict[str, Any] = {}
        source = "derived"
        tuning = None
        if self.plan_file:
            loaded = load_plan_file(self.plan_file)
            base, source, tuning = dict(loaded.settings), loaded.source, loaded.tuning
            request = request or loaded.request
        return make_plan(
            self.topology(), self.facts(), request or PlanRequest(),
            file_settings=base, overrides=overrides or {}, source=source,
            plan_file=self.plan_file, tuning=tuning,
        )
