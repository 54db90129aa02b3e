"""Runs a Molecule scenario of molecule/ as its README does, and reads back the steps it executed."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from conftest import BIN, REPO


@dataclass
class MoleculeRun:
    scenario: str
    returncode: int
    # stdout and stderr, without colour codes.
    output: str

    def steps(self) -> list[tuple[str, str]]:
        """(step, result) of each step, in order, from Molecule's closing summary."""
        pattern = rf"^{re.escape(self.scenario)} (?:➜|>) (\w+): Executed: (.+)$"
        return re.findall(pattern, self.output, re.MULTILINE)

    def successful_steps(self) -> list[str]:
        return [step for step, result in self.steps() if result.startswith("Successful")]


def run_molecule(scenario: str, env: dict[str, str] | None = None, timeout: int = 3600) -> MoleculeRun:
    """`molecule test` of one scenario from the checkout, with the venv's tools first on PATH.

    ANSIBLE_CONFIG is dropped: Molecule writes an ansible.cfg of its own for the scenario.
    """
    run_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        **(env or {}),
    }
    run_env.pop("ANSIBLE_CONFIG", None)
    result = subprocess.run(
        [str(BIN / "molecule"), "test", "--scenario-name", scenario],
        cwd=REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    return MoleculeRun(scenario, result.returncode, output)
