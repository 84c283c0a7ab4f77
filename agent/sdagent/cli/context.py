"""State shared by the subcommands: the topology, host facts and plan, each computed once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sdagent.host.software import HostFacts, gather_facts
from sdagent.host.topology import Topology, current_topology
from sdagent.planning.layout import PlanRequest
from sdagent.planning.plan import Plan
from sdagent.planning.planfile import plan_in_force


@dataclass
class AgentContext:
    sysroot: str | None = None
    topology_file: str | None = None
    plan_file: str | None = None
    lock_timeout: float = 1800.0
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

    def bench_lock(self, what: str):
        """The host's benchmark lock (host.lock), waiting up to --lock-timeout and saying so."""
        import click

        from sdagent.host.lock import bench_lock

        return bench_lock(what, self.lock_timeout, on_wait=lambda msg: click.echo(f"sdagent: {msg}", err=True))

    def plan(self, request: PlanRequest | None = None, overrides: dict[str, Any] | None = None) -> Plan:
        """The plan in force (planning.planfile.plan_in_force), then `overrides`."""
        return plan_in_force(self.topology(), self.facts(), plan_file=self.plan_file, environ=os.environ,
                             request=request, overrides=overrides)
