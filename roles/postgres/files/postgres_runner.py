#!/usr/bin/env python3
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Run a PostgreSQL program (postgres, initdb) for the local target and stay its parent.

PostgreSQL refuses to run as root. Started by root, the program runs in a new user namespace under an
unprivileged uid that maps to root outside: it owns the root-owned 0700 state directory as PostgreSQL
requires, without a system account or wider permissions on the state directory.

The runner stays the parent, so the pid file of tenantforge.platform.local_service names a process
whose command line does not change. SIGTERM becomes PostgreSQL's fast shutdown (SIGINT: open sessions
are ended and the data is checkpointed); SIGHUP (reload) and the others are passed on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# Any non-zero id: inside the namespace only this one exists, mapped to the caller's root.
UNPRIVILEGED_ID = 1000
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)


def command_for(argv: list[str], euid: int) -> list[str]:
    if euid != 0:
        return argv
    return [
        "unshare",
        "--user",
        f"--map-user={UNPRIVILEGED_ID}",
        f"--map-group={UNPRIVILEGED_ID}",
        *argv,
    ]


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: postgres_runner.py PROGRAM [ARG...]\n")
        return 2
    # unshare execs the program: the child's pid is PostgreSQL's own.
    child = subprocess.Popen(command_for(argv, os.geteuid()))  # noqa: S603 - argv list, no shell

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signal.SIGINT if signum == signal.SIGTERM else signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
