# containers.podman's podman connection, with Ansible's pipelining: the CI's transport to the Molecule
# targets. Molecule's podman driver names the connection `podman`; .ci/ansible.sh exports
# ANSIBLE_CONNECTION_PLUGINS=.ci/ansible/connection_plugins and ANSIBLE_PIPELINING=True, so this file
# answers to that name for every ansible-playbook of a scenario, nested ones included. Run without them
# (molecule by hand), the upstream plugin answers: the same results, slower.
#
# Why: the upstream plugin sets has_pipelining = False because its `podman exec` has no --interactive,
# so a module sent on stdin never arrives. Without pipelining every task costs six podman processes
# (mount, `echo ~`, mkdir, chmod, the module, rm: measured with -vvv on this CI's containers), each a
# fraction of a CPU-second on the 2-core CI machine, where the scenarios' thousands of tasks made
# Ansible's own transport a large part of the run. Here a task with a module costs one `podman exec -i`,
# and the container's filesystem is mounted only when a file is copied in or out. Measured here on a
# scenario's container, the CI otherwise busy (2026-12-01): 20 `stat` tasks took 17.2 CPU-seconds of
# ansible-playbook and podman processes and 107 s upstream, 6.3 CPU-seconds and 55 s with this plugin.
#
# What the roles see is unchanged (the module runs in the container, as root or --user); pipelining is
# what this repository's ansible.cfg turns on for the SSH hosts of a real fleet, so the CI now runs the
# roles the way a fleet does.
from __future__ import annotations

import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection
from ansible_collections.containers.podman.plugins.connection.podman import DOCUMENTATION as _PODMAN_DOC

DOCUMENTATION = _PODMAN_DOC.replace(
    "short_description: Interact with an existing podman container",
    "short_description: containers.podman.podman with pipelining (podman exec -i), for this CI", 1)


#: podman's own exit codes: 125, podman failed (no such container); 255, the container is not running.
PODMAN_FAILED = (125, 255)


class Connection(PodmanConnection):
    """containers.podman.podman, pipelined: stdin reaches the command, the mount is made on first use."""

    transport = "podman"
    has_pipelining = True

    def _connect(self):
        # the parent mounts the container on every connection (one per task); put_file/fetch_file do it here
        ConnectionBase._connect(self)
        self._connected = True
        self._mounted = False

    def _mount(self):
        if not self._mounted:
            PodmanConnection._connect(self)
            self._mounted = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        """Run `cmd` in the container; with in_data (a pipelined module), podman exec --interactive."""
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec"] + (["--interactive"] if in_data is not None else [])
        if self.user:
            args += ["--user", self.user]
        rc, out, err = self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
        if rc in PODMAN_FAILED and err.startswith(b"Error: "):
            # podman itself failed (a stopped container: 255, "container state improper"; a removed one:
            # 125), not the command: the host is unreachable, as SSH reports a dead host (rc 255). The
            # upstream plugin gets there through its temporary-directory step, which pipelining skips.
            raise AnsibleConnectionFailure(f"podman exec in {self._container_id}: {to_native(err).strip()}")
        return rc, out, err

    def put_file(self, in_path, out_path):
        self._mount()
        super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._mount()
        super().fetch_file(in_path, out_path)
