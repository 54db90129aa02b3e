#!/usr/bin/env python3
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Run a server program for the local target as an unprivileged user, and stay its parent.

PostgreSQL (postgres, initdb) and PgBouncer refuse to run as root. Started by root, the program runs
in a new user namespace under an unprivileged uid that maps to root outside: it owns the root-owned
0700 state directory (PostgreSQL requires that of its data directory), reads the 0600 files in it and
binds the loopback ports of the host's network, without a system account or wider permissions on the
state directory. Started by anyone else, the program simply runs as that user.

The runner stays the parent, so the pid file of tenantforge.platform.local_service names a process
whose command line does not change. SIGTERM is passed on as the signal given with --stop-signal (for
PostgreSQL SIGINT, its fast shutdown: open sessions are ended and the data is checkpointed); SIGHUP
(reload) and the other forwarded signals are passed on as they are.

    unprivileged_runner.py [--stop-signal SIGINT] PROGRAM [ARG...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# Any non-zero id: inside the namespace only this one exists, mapped to the caller's root.
UNPRIVILEGED_ID = 1000
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
USAGE = "usage: unprivileged_runner.py [--stop-signal SIGNAME] PROGRAM [ARG...]\n"


class UsageError(Exception):
    pass


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


def parse(argv: list[str]) -> tuple[signal.Signals, list[str]]:
    """The signal SIGTERM becomes, and the program's command line."""
    stop_signal = signal.SIGTERM
    if argv[:1] == ["--stop-signal"]:
        if len(argv) < 2:
            raise UsageError("--stop-signal needs a signal name")
        try:
            stop_signal = signal.Signals[argv[1]]
        except KeyError:
            raise UsageError(f"--stop-signal: unknown signal {argv[1]!r}") from None
        argv = argv[2:]
    if not argv:
        raise UsageError("no program given")
    return stop_signal, argv


def main(argv: list[str]) -> int:
    try:
        stop_signal, program = parse(argv)
    except UsageError as error:
        sys.stderr.write(f"unprivileged_runner.py: {error}\n{USAGE}")
        return 2
    # unshare execs the program: the child's pid is the program's own.
    child = subprocess.Popen(command_for(program, os.geteuid()))  # noqa: S603 - argv list, no shell

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(stop_signal if signum == signal.SIGTERM else signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
