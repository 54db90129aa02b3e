# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Starting processes that outlive the module (standard library only).

``AnsibleModule.run_command`` runs a command to completion; a service started by a module has to keep
running after the module exits, so it is started here instead.
"""

from __future__ import annotations

import subprocess


def spawn_detached(
    command: list[str], output_fd: int, cwd: str | None, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``command`` (an argv list, no shell) in a new session and return without waiting.

    Standard input is /dev/null; standard output and error go to ``output_fd``, which the caller
    opened and closes. Raises OSError when the command cannot be started.
    """
    return subprocess.Popen(  # noqa: S603 - argv list, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=output_fd,
        stderr=output_fd,
        cwd=cwd,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
