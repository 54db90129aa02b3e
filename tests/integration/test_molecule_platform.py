"""The Molecule scenarios of the platform roles (molecule/postgres, pgbouncer, rabbitmq, fluent_bit) end
to end: the render and local targets through playbooks/platform.yml, converge, idempotence, verify.

The local target runs the services on this machine, as `make run` does; each scenario gets free ports
here, never those of `make run` or of Debian's packages, and must leave nothing listening.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
from conftest import free_port
from molecule_run import run_molecule

pytestmark = pytest.mark.integration

# The port variables each scenario's molecule.yml reads.
PORT_VARIABLES = {
    "postgres": ["MOLECULE_POSTGRES_PORT"],
    "pgbouncer": ["MOLECULE_POSTGRES_PORT", "MOLECULE_PGBOUNCER_PORT"],
    "rabbitmq": [
        f"MOLECULE_RABBITMQ_{kind}_PORT_{node}"
        for node in (1, 2, 3)
        for kind in ("AMQP", "MANAGEMENT", "DIST")
    ]
    + ["MOLECULE_RABBITMQ_EPMD_PORT"],
    "fluent_bit": [],
}
WITH_SIDE_EFFECT = [
    "cleanup",
    "syntax",
    "prepare",
    "converge",
    "idempotence",
    "side_effect",
    "verify",
    "cleanup",
]
WITHOUT_SIDE_EFFECT = ["cleanup", "syntax", "prepare", "converge", "idempotence", "verify", "cleanup"]
SUCCESSFUL_STEPS = {
    "postgres": WITH_SIDE_EFFECT,
    "pgbouncer": WITH_SIDE_EFFECT,
    "rabbitmq": WITH_SIDE_EFFECT,
    # The local target of fluent_bit starts nothing: no side effect to provoke.
    "fluent_bit": WITHOUT_SIDE_EFFECT,
}


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def summary_lines(scenario: str, ports: dict[str, int]) -> list[str]:
    """Lines of the platform summary that the local target prints, naming the ports given."""
    if scenario == "rabbitmq":
        management = ports["MOLECULE_RABBITMQ_MANAGEMENT_PORT_1"]
        return [f'"127.0.0.1:{ports[f"MOLECULE_RABBITMQ_AMQP_PORT_{node}"]}"' for node in (1, 2, 3)] + [
            f'"management_url": "http://127.0.0.1:{management}"'
        ]
    return [f'"port": {port}' for port in ports.values()]


@pytest.mark.parametrize("scenario", list(PORT_VARIABLES))
def test_molecule_scenario_converges_idempotently_and_verifies(scenario: str) -> None:
    ports = dict(
        zip(PORT_VARIABLES[scenario], distinct_free_ports(len(PORT_VARIABLES[scenario])), strict=True)
    )

    run = run_molecule(scenario, {name: str(port) for name, port in ports.items()})

    assert run.returncode == 0, run.output[-8000:]
    assert run.successful_steps() == SUCCESSFUL_STEPS[scenario], run.steps()
    # Nothing to create or destroy: Molecule's default driver, unmanaged, runs on this machine.
    assert {result for step, result in run.steps() if step in ("create", "destroy")} == {
        "Missing playbook (Remove from test_sequence to suppress)"
    }
    # The services ran on the ports given here, and cleanup stopped every one of them.
    assert [line for line in summary_lines(scenario, ports) if line not in run.output] == []
    assert [port for port in ports.values() if listening(port)] == []
