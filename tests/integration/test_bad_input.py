"""Bad input fails before any AWS call, with a message that names the variable, and creates nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Emulator, assert_nothing_exists, run_playbook

pytestmark = pytest.mark.integration

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("prefix beyond /28", {"aws_network_vpc_cidr": "10.42.0.0/29"}, "aws_network_vpc_cidr"),
    ("malformed vpc cidr", {"aws_network_vpc_cidr": "10.42.0.0/33"}, "aws_network_vpc_cidr"),
    ("host bits set", {"aws_network_vpc_cidr": "10.42.0.1/16"}, "aws_network_vpc_cidr"),
    (
        "subnet outside the vpc",
        {"aws_network_public_subnet_cidrs": ["10.42.0.0/24", "10.43.1.0/24"]},
        "aws_network_public_subnet_cidrs",
    ),
    (
        "overlapping subnets",
        {"aws_network_public_subnet_cidrs": ["10.42.0.0/24", "10.42.0.128/25"]},
        "aws_network_public_subnet_cidrs",
    ),
    (
        "a single subnet",
        {"aws_network_public_subnet_cidrs": ["10.42.0.0/24"]},
        "aws_network_public_subnet_cidrs",
    ),
    ("empty admin cidrs", {"aws_network_admin_cidrs": []}, "aws_network_admin_cidrs"),
    (
        "admin address without prefix",
        {"aws_network_admin_cidrs": ["198.51.100.7"]},
        "aws_network_admin_cidrs",
    ),
    ("admin open to the world", {"aws_network_admin_cidrs": ["0.0.0.0/0"]}, "aws_network_allow_world_admin"),
    ("instance type format", {"aws_host_instance_type": "t3-medium"}, "aws_host_instance_type"),
    ("volume size not a number", {"aws_host_root_volume_size": "big"}, "aws_host_root_volume_size"),
    ("unknown image family", {"aws_host_ami_family": "centos7"}, "aws_host_ami_family"),
    ("negative retention", {"aws_logs_retention_days": -1}, "aws_logs_retention_days"),
    ("retention CloudWatch rejects", {"aws_logs_retention_days": 10}, "aws_logs_retention_days"),
    ("environment with capitals", {"tenantforge_environment": "Prod_1"}, "tenantforge_environment"),
    ("environment too long", {"tenantforge_environment": "a" * 17}, "tenantforge_environment"),
    ("cpu threshold over 100", {"aws_idle_stop_cpu_threshold": 150}, "aws_idle_stop_cpu_threshold"),
    ("idle window not whole periods", {"aws_idle_stop_minutes": 7}, "aws_idle_stop_minutes"),
    ("zero log expiry", {"aws_audit_log_expiration_days": 0}, "aws_audit_log_expiration_days"),
    (
        "recovery window AWS rejects",
        {"aws_secrets_recovery_window_days": 3},
        "aws_secrets_recovery_window_days",
    ),
    ("key inside the repository", {"aws_keypair_directory": str(REPO / "keys")}, "aws_keypair_directory"),
]


@pytest.mark.parametrize(
    ("overrides", "variable"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_input_fails_before_anything_is_created(
    emulator: Emulator, tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    emulator.reset()
    extra_vars = {
        "local_emulator_port": emulator.port,
        "aws_keypair_directory": str(tmp_path / "ssh"),
        **overrides,
    }
    run = run_playbook("playbooks/infrastructure.yml", tmp_path, extra_vars)

    assert run.returncode != 0
    failure = run.output[run.output.index("fatal:") :] if "fatal:" in run.output else run.output
    assert variable in failure
    assert "Validate the AWS layer's settings" in run.output
    assert "Provision the AWS layer" not in run.output
    assert_nothing_exists(emulator)
    assert not (tmp_path / "ssh").exists()
