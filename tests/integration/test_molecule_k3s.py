"""The k3s role: its Molecule scenario (molecule/k3s) end to end, and its preflight against bad input.

The scenario runs in a local Debian 12 container booted by systemd (scripts/docker.sh installs Docker,
starts it and builds the image). It is skipped only when Docker cannot be started on this machine.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run_playbook
from molecule_run import run_molecule

pytestmark = pytest.mark.integration

DOCKER_SCRIPT = REPO / "scripts" / "docker.sh"
# scripts/docker.sh: Docker cannot be started on this machine (not root and no sudo, or no daemon).
DOCKER_UNAVAILABLE = 3
FIRST, SECOND = "v1.33.5+k3s1", "v1.33.6+k3s1"


def test_molecule_scenario_installs_upgrades_and_stays_idempotent() -> None:
    docker = subprocess.run(
        [str(DOCKER_SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=1800, check=False
    )
    if docker.returncode == DOCKER_UNAVAILABLE:
        pytest.skip(f"Docker cannot be started here: {docker.stderr.strip()}")
    assert docker.returncode == 0, docker.stdout + docker.stderr

    run = run_molecule("k3s")
    output = run.output
    assert run.returncode == 0, output[-8000:]

    # Every step of the sequence ran and succeeded, idempotence twice (first release, then upgraded).
    steps = run.steps()
    assert run.successful_steps() == [
        "destroy",
        "syntax",
        "create",
        "prepare",
        "converge",
        "idempotence",
        "side_effect",
        "idempotence",
        "verify",
        "destroy",
    ], steps
    # The upgrade ran the second release's stand-in through the role's air-gap path.
    assert "Copy the air-gap binary" in output
    assert f"{SECOND}/k3s" in output and f"{FIRST}/k3s" in output


def preflight(tmp_path: Path, overrides: dict[str, Any]) -> Any:
    """Runs only the role's validation (entry point `preflight`) on this machine."""
    playbook = tmp_path / "k3s_preflight.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Validate the k3s settings",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Validate",
                            "ansible.builtin.include_role": {
                                "name": "tenantforge.platform.k3s",
                                "tasks_from": "preflight",
                            },
                        }
                    ],
                }
            ]
        )
    )
    # This machine has no systemd: the good case installs files only.
    extra_vars = {"k3s_public_address": "203.0.113.10", "k3s_manage_service": False, **overrides}
    return run_playbook(str(playbook), tmp_path, extra_vars)


def failure_of(output: str) -> str:
    """The output from the first failed task on (`fatal:`, or `failed:` for an item of a loop)."""
    match = re.search(r"^(fatal|failed): \[", output, re.MULTILINE)
    assert match, output[-3000:]
    return output[match.start() :]


def test_preflight_accepts_good_input(tmp_path: Path) -> None:
    binary = tmp_path / "k3s"
    binary.write_bytes(b"a k3s binary")
    run = preflight(
        tmp_path,
        {
            "k3s_airgap_binary": str(binary),
            "k3s_airgap_binary_sha256": hashlib.sha256(b"a k3s binary").hexdigest(),
            "k3s_tls_san_extra": ["k3s.example.test", "2001:db8::10"],
            "k3s_disable": ["traefik"],
        },
    )
    run.assert_ok()
    assert run.recap()["failed"] == 0


@pytest.mark.parametrize(
    ("overrides", "variable", "message"),
    [
        ({"k3s_version": "1.33.5"}, "k3s_version", "must name a k3s release"),
        ({"k3s_version": "latest"}, "k3s_version", "must name a k3s release"),
        ({"k3s_public_address": ""}, "k3s_public_address", "is empty"),
        ({"k3s_public_address": "not an address!"}, "k3s_public_address", "must be a DNS name or an IP"),
        ({"k3s_disable": ["kube-proxy"]}, "k3s_disable", "kube-proxy"),
        ({"k3s_api_port": "https"}, "k3s_api_port", "https"),
        ({"k3s_extra_config": {"secrets-encryption": False}}, "k3s_extra_config", "secrets-encryption"),
        ({"k3s_node_name": "Node_1"}, "k3s_node_name", "Node_1"),
        (
            {"k3s_release_checksums": {"v1.33.5+k3s1": {"amd64": "abc"}}},
            "k3s_release_checksums",
            "64 lower-case hex",
        ),
    ],
    ids=[
        "version without v and k3s build",
        "floating version",
        "missing public address",
        "public address not a name",
        "unknown component to disable",
        "port not a number",
        "managed setting in extra config",
        "node name with capitals",
        "malformed pinned checksum",
    ],
)
def test_preflight_rejects_bad_input_naming_the_variable(
    tmp_path: Path, overrides: dict[str, Any], variable: str, message: str
) -> None:
    run = preflight(tmp_path, overrides)

    assert run.returncode != 0
    failure = failure_of(run.output)
    assert variable in failure
    assert message in failure


def test_preflight_refuses_an_airgap_binary_with_another_sha256(tmp_path: Path) -> None:
    binary = tmp_path / "k3s"
    binary.write_bytes(b"not the release")
    run = preflight(
        tmp_path,
        {
            "k3s_airgap_binary": str(binary),
            "k3s_airgap_binary_sha256": hashlib.sha256(b"release").hexdigest(),
        },
    )

    assert run.returncode != 0
    failure = failure_of(run.output)
    assert "k3s_airgap_binary" in failure
    assert hashlib.sha256(b"not the release").hexdigest() in failure
