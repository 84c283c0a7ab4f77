"""State shared by the subcommands: the topology, host facts and plan, each computed once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from sdagent.hostfacts import HostFacts, gather_facts
from sdagent.errors import BadInput
from sdagent.plan import PLAN_ENV, LoadedPlan, Plan, PlanRequest, load_plan_file, make_plan, parse_plan_data
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
        """The plan in force, then `overrides`, on this topology.

        In force: the plan `sdagent exec` ran this process under (SDAGENT_PLAN_JSON), else
        --plan-file, else none (derived from the topology).
        """
        loaded: LoadedPlan | None = None
        inherited = os.environ.get(PLAN_ENV)
        data = None
        if inherited:
            try:
                data = json.loads(inherited)
            except ValueError as exc:
                raise BadInput(f"${PLAN_ENV} is not valid JSON: {exc}") from None
        # exec's record wins unless this call names a different plan file.
        same_file = isinstance(data, dict) and self.plan_file and data.get("plan_file") and \
            os.path.abspath(str(data["plan_file"])) == os.path.abspath(self.plan_file)
        if data is not None and (not self.plan_file or same_file):
            loaded = parse_plan_data(data, f"${PLAN_ENV} (set by sdagent exec)")
        elif self.plan_file:
            loaded = load_plan_file(self.plan_file)
        if loaded is None:
            return make_plan(self.topology(), self.facts(), request or PlanRequest(),
                             overrides=overrides or {})
        # A new layout request re-lays instances; otherwise the saved layout stands.
        keep_layout = request is None or request == loaded.request
        return make_plan(
            self.topology(), self.facts(), request or loaded.request,
            file_settings=loaded.settings, overrides=overrides or {}, source=loaded.source,
            plan_file=self.plan_file or (data or {}).get("plan_file"), tuning=loaded.tuning,
            instances=loaded.instances if keep_layout else (),
        )
