#!/usr/bin/env python3
"""Run a oneshot unit's Exec lines the way systemd would, without systemd.

The test containers have no systemd as PID 1, so this stands in for
`systemctl start UNIT@INSTANCE`: ExecStartPre, ExecStart, ExecStartPost and
ExecStopPost run in order, as User=/Group= with the unit's Environment=, except
that a "+" prefix runs the line as root (full privileges) and "-" ignores its
failure, as in systemd.exec(5). Specifiers: %i, %I and %% only.
Prints one JSON line per command run: {"line", "as_root", "rc"}.
"""

import json
import os
import pwd
import grp
import shlex
import subprocess
import sys


def main() -> int:
    unit_path, instance = sys.argv[1], sys.argv[2]
    lines = [line.rstrip("\n") for line in open(unit_path, encoding="utf-8")]
    keys: dict[str, list[str]] = {}
    for line in lines:
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v)

    def spec(s: str) -> str:
        return s.replace("%%", "\0").replace("%i", instance).replace("%I", instance).replace("\0", "%")

    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for e in keys.get("Environment", []):
        for word in shlex.split(spec(e)):
            k, _, v = word.partition("=")
            env[k] = v
    user = keys.get("User", ["root"])[-1]
    group = keys.get("Group", [user])[-1]
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid
    rc_all = 0
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStopPost"):
        for cmd in keys.get(key, []):
            prefixes = ""
            while cmd and cmd[0] in "-+!@:":
                prefixes += cmd[0]
                cmd = cmd[1:]
            argv = shlex.split(spec(cmd))
            as_root = "+" in prefixes

            def drop() -> None:
                if not as_root:
                    os.setgroups([])
                    os.setgid(gid)
                    os.setuid(pw.pw_uid)

            proc = subprocess.run(argv, env=env, preexec_fn=drop, cwd="/", capture_output=True, text=True)
            print(json.dumps({"key": key, "line": cmd, "as_root": as_root, "rc": proc.returncode,
                              "stderr_tail": proc.stderr.strip().splitlines()[-3:]}))
            if proc.returncode != 0 and "-" not in prefixes:
                rc_all = rc_all or proc.returncode
                if key != "ExecStopPost":
                    break
    return rc_all


if __name__ == "__main__":
    sys.exit(main())
