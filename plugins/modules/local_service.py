#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: local_service
short_description: Run a long-lived local process for the local target, tracked by a pid file
version_added: 0.1.0
description:
  - Starts a command as a detached background process, records its pid in O(pidfile), sends its
    output to O(logfile) and waits until a TCP port answers.
  - A process is considered running when the pid file names a live process whose command line still
    starts with the same executable and first argument; a stale pid file (the process died, or the
    pid was reused) is replaced.
  - A second start of a running service changes nothing. Stopping sends SIGTERM, then SIGKILL after
    O(stop_timeout) seconds, and removes the pid file.
  - Used by the local target of the platform (the AWS emulator, and later the database and broker).
    It never runs anything on a remote host other than the one the task targets.
author:
  - Tenantforge engineering (@tenantforge)
options:
  name:
    description: A name for the service, used in messages.
    type: str
    required: true
  command:
    description:
      - The executable and its arguments. Not run through a shell.
      - Required when O(state=started).
    type: list
    elements: str
  environment:
    description: Extra environment variables for the process, added to the module's own environment.
    type: dict
    default: {}
  chdir:
    description: Working directory of the process.
    type: path
  pidfile:
    description: Where the pid is recorded. Its directory is created with mode 0700 when missing.
    type: path
    required: true
  logfile:
    description: File that receives the process' standard output and error (appended, mode 0600).
    type: path
  host:
    description: Address the readiness check connects to.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port the service listens on. Start waits until it accepts connections, and refuses to start
        when another process already listens there.
    type: int
  start_timeout:
    description: Seconds to wait for O(port) to accept connections after a start.
    type: int
    default: 60
  stop_timeout:
    description: Seconds to wait after SIGTERM before sending SIGKILL.
    type: int
    default: 15
  state:
    description: Whether the service should be running.
    type: str
    choices: [started, stopped]
    default: started
notes:
  - Supports check mode and diff mode.
attributes:
  check_mode:
    description: Can run in check mode and report whether it would start or stop the service.
    support: full
  diff_mode:
    description: Returns the service state before and after the task when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Start the local AWS emulator
  tenantforge.platform.local_service:
    name: moto
    command: [/opt/venv/bin/moto_server, -H, 127.0.0.1, -p, "4566"]
    pidfile: /srv/state/moto.pid
    logfile: /srv/state/moto.log
    port: 4566

- name: Stop it
  tenantforge.platform.local_service:
    name: moto
    pidfile: /srv/state/moto.pid
    state: stopped
"""

RETURN = r"""
pid:
  description: Pid of the running process; null when it is not running.
  returned: always
  type: int
  sample: 41234
state:
  description: State of the service after the task (in check mode, the state it would have).
  returned: always
  type: str
  sample: started
"""

import contextlib
import os
import signal
import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tenantforge.platform.plugins.module_utils.processes import spawn_detached


class ServiceError(Exception):
    pass


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def process_matches(pid: int, command: list[str] | None) -> bool:
    """True when pid is alive and, if command is given, its command line starts like it.

    Comparing the executable's name and its first argument guards against a pid reused by another
    program after the service died.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = [os.path.basename(arg) for arg in handle.read().split(b"\0") if arg]
    except OSError:
        return False
    if not command:
        return True
    wanted = [os.path.basename(arg).encode() for arg in command[:2]]
    return cmdline[: len(wanted)] == wanted


def running_pid(pidfile: str, command: list[str] | None) -> int | None:
    pid = read_pid(pidfile)
    if pid is not None and process_matches(pid, command):
        return pid
    return None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start(params: dict, check_mode: bool) -> tuple[bool, int | None]:
    command = params["command"]
    pid = running_pid(params["pidfile"], command)
    if pid is not None:
        return False, pid
    host, port = params["host"], params["port"]
    if port and port_open(host, port):
        raise ServiceError(
            f"{params['name']}: port {port} on {host} is already in use by a process this pid file "
            f"({params['pidfile']}) does not track; stop it or choose another port"
        )
    if check_mode:
        return True, None

    os.makedirs(os.path.dirname(params["pidfile"]) or ".", mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.update({key: str(value) for key, value in params["environment"].items()})
    log_path = params["logfile"] or os.devnull
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = spawn_detached(command, log_fd, params["chdir"], env)
    except OSError as exc:
        raise ServiceError(f"{params['name']}: cannot run {command[0]}: {exc}") from exc
    finally:
        os.close(log_fd)
    with open(params["pidfile"], "w", encoding="ascii") as handle:
        handle.write(f"{process.pid}\n")

    if port:
        deadline = time.monotonic() + params["start_timeout"]
        while not port_open(host, port):
            if process.poll() is not None:
                os.unlink(params["pidfile"])
                raise ServiceError(
                    f"{params['name']}: exited with status {process.returncode} before listening on "
                    f"{host}:{port}; see {log_path}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{params['name']}: not listening on {host}:{port} after "
                    f"{params['start_timeout']}s; see {log_path}"
                )
            time.sleep(0.2)
    return True, process.pid


def stop(params: dict, check_mode: bool) -> bool:
    command = params["command"]
    pid = running_pid(params["pidfile"], command)
    if pid is None:
        if os.path.exists(params["pidfile"]) and not check_mode:
            os.unlink(params["pidfile"])
        return False
    if check_mode:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + params["stop_timeout"]
    while process_matches(pid, command) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_matches(pid, command):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    os.unlink(params["pidfile"])
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            environment=dict(type="dict", default={}),
            chdir=dict(type="path"),
            pidfile=dict(type="path", required=True),
            logfile=dict(type="path"),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int"),
            start_timeout=dict(type="int", default=60),
            stop_timeout=dict(type="int", default=15),
            state=dict(type="str", choices=["started", "stopped"], default="started"),
        ),
        required_if=[("state", "started", ["command"])],
        supports_check_mode=True,
    )
    params = module.params
    if params["port"] is not None and not 0 < params["port"] < 65536:
        module.fail_json(msg=f"port: {params['port']} is not a TCP port (1-65535)")
    try:
        if params["state"] == "started":
            changed, pid = start(params, module.check_mode)
        else:
            changed, pid = stop(params, module.check_mode), None
    except ServiceError as exc:
        module.fail_json(msg=str(exc))
    opposite = {"started": "stopped", "stopped": "started"}
    before = opposite[params["state"]] if changed else params["state"]
    diff = {"before": {"state": before}, "after": {"state": params["state"]}}
    module.exit_json(changed=changed, pid=pid, state=params["state"], diff=diff)


if __name__ == "__main__":
    main()
