"""Runs one of the collection's modules the way a playbook does, and returns its result as data."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from conftest import BIN, REPO, ansible_env


@dataclass
class ModuleRun:
    returncode: int
    result: dict[str, Any]
    output: str

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    def assert_ok(self) -> dict[str, Any]:
        assert self.returncode == 0 and not self.failed, self.output[-4000:]
        return self.result


def run_module(
    module: str,
    params: dict[str, Any],
    state_dir: Path,
    check: bool = False,
    diff: bool = False,
    timeout: int = 300,
) -> ModuleRun:
    """One task on localhost through ansible-playbook, with the JSON callback: the module's result and
    the whole output (to look for secrets in it)."""
    playbook = state_dir / f"run-{module.rsplit('.', 1)[-1]}.yml"
    task = {"name": "Run the module", module: params}
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    command = [str(BIN / "ansible-playbook"), str(playbook)]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else []
    env = {**ansible_env(state_dir), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = completed.stdout + completed.stderr
    try:
        document = json.loads(completed.stdout)
        result = document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = {"failed": True, "msg": "no result"}
    return ModuleRun(completed.returncode, result, output)
