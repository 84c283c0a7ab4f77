"""`sdagent topology`, `plan`, `env` and `exec`: the host side, no torch needed."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import click

from sdagent import atomicio
from sdagent.cli import cli
from sdagent.cli.context import AgentContext
from sdagent.cli.options import OutputFile, PlanArgs, pass_agent, plan_options, resolve_plan
from sdagent.errors import BadInput, Exit
from sdagent.host.hostclass import host_class, installed_software
from sdagent.host.topology import format_cpulist
from sdagent.envvars import PLAN_ENV
from sdagent.planning.launch import build_exec
from sdagent.planning.render import FORMATS, render
from sdagent.planning.settings import list_settings, settings_table


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the topology as JSON (what --topology-file reads).")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Write the JSON topology to this file (atomically).")
@pass_agent
def topology(agent: AgentContext, as_json: bool, output: str | None) -> None:
    """Show this host's CPU topology: sockets, cores, SMT siblings, NUMA, limits, ISA.

    \b
    Read from /proc and /sys (or --sysroot DIR, or --topology-file FILE).
    The JSON form can be saved and injected elsewhere with --topology-file.
    Its `host_class` is the class fingerprint (what decides speed: CPU, ISA,
    layout, cgroup budget, torch/OpenVINO/IPEX/agent versions) and its id:
    hosts with the same id share one tuned plan.
    """
    t = agent.topology()
    hc = host_class(t, installed_software())
    d = {**t.to_dict(), "host_class": hc.to_dict()}
    if output:
        atomicio.write_json(output, d)
    if as_json:
        _echo_json(d)
        return
    s = d["summary"]
    click.echo(f"CPU         {t.model_name} ({t.vendor}, family {t.family}, model {t.model})")
    click.echo(f"sockets     {s['sockets']}")
    click.echo(f"cores       {s['physical_cores']} physical, {s['logical_cpus']} logical "
               f"({s['threads_per_core']} thread(s) per core)")
    for n in t.nodes:
        mem = f", {n.mem_total_kb // 1024} MiB" if n.mem_total_kb else (", no memory" if not n.has_memory else "")
        click.echo(f"NUMA node {n.id} CPUs {format_cpulist(n.cpus)}{mem}")
    if s["core_types"]:
        click.echo(f"core types  P-cores {s['core_types']['P']}, E-cores {s['core_types']['E']}")
    click.echo(f"allowed     {s['allowed_cpus']}")
    if t.isolated_cpus:
        click.echo(f"isolated    {s['isolated_cpus']} (isolcpus/nohz_full: left out of plans)")
    click.echo(f"budget      {s['cpu_budget']} (quota: a CFS quota over a shared mask; cpuset: a mask of its own)")
    click.echo(f"cgroup      {f'{t.cgroup.cpus:g} CPUs (v{t.cgroup.version})' if t.cgroup else 'no CPU quota'}")
    if t.mem_total_kb:
        click.echo(f"memory      {t.mem_total_kb // 1024} MiB")
    click.echo(f"ISA         {' '.join(t.flags) or '(none of interest)'}")
    click.echo(f"source      {t.source}")
    click.echo(f"host class  {hc.id} ({hc.describe()})")


@cli.command()
@plan_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Write the plan file (JSON, atomically) for --plan-file, the roles and exec.")
@click.option("--list-settings", "list_settings_", is_flag=True,
              help="List the settings that --set accepts (with --json: each one's kind, choices and the "
                   "regex a value must match), and exit.")
@pass_agent
def plan(agent: AgentContext, plan_args: PlanArgs, as_json: bool, output: str | None, list_settings_: bool) -> None:
    """Derive the tuning plan for this host, every choice with its reason.

    \b
    The plan is a hypothesis from the topology: `sdagent tune` measures it
    against the stock environment and alternatives on this host.
    \b
    Examples:
      sdagent plan
      sdagent plan --instances 4 --json
      sdagent plan --set binding=taskset --set kmp_blocktime=1 -o plan.json
    """
    if list_settings_:
        if as_json:  # each setting with its kind, choices and the character set a value must match
            _echo_json(settings_table())
        else:
            click.echo("\n".join(list_settings()))
        return
    p = resolve_plan(agent, plan_args)
    d = p.to_dict()
    if output:
        atomicio.write_json(output, d)
    if as_json:
        _echo_json(d)
        return
    click.echo(f"host: {p.topology_summary}")
    click.echo(f"plan source: {p.source}")
    click.echo("")
    width = max(len(x.key) for x in p.decisions)
    for x in p.decisions:
        val = str(x.value).lower() if isinstance(x.value, bool) else ("unset" if x.value is None else x.value)
        click.echo(f"  {x.key:<{width}}  {val}")
        click.echo(f"  {'':<{width}}    {x.reason}")
    click.echo("")
    for i in p.instances:
        launcher = " ".join(p.launcher(i.index)) or "(no binding)"
        where = f"node {i.node}" if i.node is not None else "several nodes"
        mem = f", memory on node(s) {i.mem_nodelist}" if p.membind and i.mem_nodes else ""
        click.echo(f"instance {i.index}: CPUs {i.cpulist}, {where}{mem}, "
                   f"{p.settings['omp_num_threads']} threads, {launcher}")
    if p.preload:
        click.echo(f"LD_PRELOAD: {':'.join(p.preload)}")
    if p.missing_libraries:
        click.echo(f"missing on this host: {', '.join(p.missing_libraries)}")


@cli.command()
@plan_options
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="env", show_default=True,
              help="env: systemd EnvironmentFile; shell: sourceable snippet; systemd: unit drop-in.")
@click.option("--instance", type=int, default=0, show_default=True, help="Which instance of the plan.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Write to this file (atomically) instead of stdout.")
@pass_agent
def env(agent: AgentContext, plan_args: PlanArgs, fmt: str, instance: int, output: str | None) -> None:
    """Render the plan's environment for one instance.

    \b
    The result is scoped to the processes that read it (an EnvironmentFile,
    a snippet you source, a unit drop-in): never install it globally.
    \b
    Examples:
      sdagent env -o /etc/sdagent/tuned.env
      sdagent env --format systemd > /etc/systemd/system/sd.service.d/tuned.conf
    """
    p = resolve_plan(agent, plan_args)
    text = render(p, fmt, instance)
    if output:
        atomicio.write_text(output, text)
    else:
        click.echo(text, nl=False)


def check_command(name: str, path: str | None) -> None:
    """Refuse COMMAND as a POSIX shell would: 127 when not found, 126 when found but not executable.

    Raises BadInput with Exit.COMMAND_NOT_FOUND / Exit.NOT_EXECUTABLE (wrappers and units read the
    shell's codes: `env`, `nice`, `timeout` and `numactl` answer the same).
    """
    if shutil.which(name, path=path) is not None:
        return
    if os.sep in name and os.path.exists(name):
        raise BadInput(f"command not executable: {name}", exit_code=Exit.NOT_EXECUTABLE)
    raise BadInput(f"command not found: {name}", exit_code=Exit.COMMAND_NOT_FOUND)


@cli.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@plan_options
@click.option("--instance", type=int, default=0, show_default=True, help="Which instance of the plan.")
@click.option("--dry-run", is_flag=True, help="Print the environment and command instead of running it.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_agent
def exec_(agent: AgentContext, plan_args: PlanArgs, instance: int, dry_run: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND under the plan: preloads, threads, KMP_*, numactl/taskset binding.

    \b
    The tuning is scoped to COMMAND and its children. Put `--` before COMMAND:
      sdagent exec -- python serve.py --port 8000
      sdagent --plan-file /etc/sdagent/plan.json exec --instance 1 -- sdagent verify ...
    The exit status is COMMAND's (127 when it is not found, 126 when it cannot
    be executed, as a shell says). When the plan preloads libiomp5, exec stays
    COMMAND's parent: if COMMAND aborts (two OpenMP runtimes in one process,
    "OMP: Error #15"), one line names both runtimes and the remedy.
    """
    p = resolve_plan(agent, plan_args)
    argv, env = build_exec(p, instance, list(command), dict(os.environ))
    if dry_run:
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v and k != PLAN_ENV}
        for k, v in changed.items():
            click.echo(f"{k}={shlex.quote(v)}")
        click.echo(shlex.join(argv))
        return
    check_command(argv[0], env.get("PATH"))
    from sdagent.host.supervise import exec_command

    exec_command(argv, env, list(command))
