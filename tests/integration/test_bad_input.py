"""Bad input fails before any AWS call, with a message that names the variable, and creates nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Emulator, PlaybookRun, assert_nothing_exists, run_playbook

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


# --- the platform services (playbooks/platform.yml) ------------------------------------------------
# Refused by the validation play, which checks every selected component before any is set up.


def run_platform(
    tmp_path: Path, components: list[str], target: str, overrides: dict[str, Any]
) -> PlaybookRun:
    extra_vars = {
        "tenantforge_platform_components": components,
        "tenantforge_platform_target": target,
        **overrides,
    }
    return run_playbook("playbooks/platform.yml", tmp_path, extra_vars)


def assert_stopped_by_the_checks(run: PlaybookRun) -> None:
    """The playbook failed in its validation play, before the play that sets the components up."""
    assert run.returncode != 0
    assert "PLAY [Check the platform settings]" in run.output
    assert "PLAY [Set up the platform services]" not in run.output


def assert_refused(run: PlaybookRun, variable: str) -> str:
    """Stopped by the checks, with an error that names `variable`; returns the error's text."""
    assert_stopped_by_the_checks(run)
    # The error itself, not the loop items around it (a loop of checks names every variable it checks).
    error = re.search(r"^\[ERROR\]: (.*?)^Origin:", run.output, re.MULTILINE | re.DOTALL)
    assert error, run.output[-3000:]
    assert variable in error.group(1)
    return error.group(1)


# The fluent_bit role (render target): nothing is rendered.
FLUENT_BIT_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "fluent bit log group the AWS layer does not create",
        {"fluent_bit_journal_log_group": "k3s"},
        "fluent_bit_journal_log_group",
    ),
    (
        "fluent bit floating image tag",
        {"fluent_bit_image": "cr.fluentbit.io/fluent/fluent-bit:latest"},
        "fluent_bit_image",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [case[1:] for case in FLUENT_BIT_CASES],
    ids=[case[0] for case in FLUENT_BIT_CASES],
)
def test_bad_fluent_bit_input_fails_before_anything_is_rendered(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    rendered = tmp_path / "rendered"
    run = run_platform(
        tmp_path, ["fluent_bit"], "render", {"fluent_bit_render_directory": str(rendered), **overrides}
    )

    assert_stopped_by_the_checks(run)
    # The error line itself names the variable (a failed loop item is reported as `failed:`).
    errors = [line for line in run.output.splitlines() if line.startswith("[ERROR]: ")]
    assert any(variable in line for line in errors), run.output[-3000:]
    assert not rendered.exists()


# The rabbitmq role (local target): no node, epmd or state directory exists.
RABBITMQ_NODES = [
    {"name": "tenantforge-1", "amqp_port": 5673, "management_port": 15673, "dist_port": 25673},
    {"name": "tenantforge-2", "amqp_port": 5674, "management_port": 15674, "dist_port": 25674},
    {"name": "tenantforge-3", "amqp_port": 5675, "management_port": 15675, "dist_port": 25675},
]
RABBITMQ_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("rabbitmq with two local nodes", {"rabbitmq_local_nodes": RABBITMQ_NODES[:2]}, "rabbitmq_local_nodes"),
    (
        "rabbitmq node without its ports",
        {"rabbitmq_local_nodes": [*RABBITMQ_NODES[:2], {"name": "tenantforge-3"}]},
        "rabbitmq_local_nodes",
    ),
    (
        "rabbitmq port beyond 65535",
        {"rabbitmq_local_nodes": [*RABBITMQ_NODES[:2], {**RABBITMQ_NODES[2], "amqp_port": 70000}]},
        "rabbitmq_local_nodes",
    ),
    (
        "rabbitmq nodes sharing a port",
        {"rabbitmq_local_nodes": [*RABBITMQ_NODES[:2], {**RABBITMQ_NODES[2], "management_port": 15673}]},
        "rabbitmq_local_nodes",
    ),
    ("rabbitmq on a public address", {"rabbitmq_local_host": "0.0.0.0"}, "rabbitmq_local_host"),
    (
        "rabbitmq unknown plugin",
        {"rabbitmq_plugins": ["rabbitmq_management", "rabbitmq_peer_discovery_k8s", "rabbitmq_tea"]},
        "rabbitmq_plugins",
    ),
    ("rabbitmq without peer discovery", {"rabbitmq_plugins": ["rabbitmq_management"]}, "rabbitmq_plugins"),
    (
        "rabbitmq image before 4.1",
        {"rabbitmq_image": "docker.io/library/rabbitmq:4.0.9-management"},
        "rabbitmq_image",
    ),
    (
        "rabbitmq floating image tag",
        {"rabbitmq_image": "docker.io/library/rabbitmq:management"},
        "rabbitmq_image",
    ),
    ("rabbitmq task type with a dot", {"rabbitmq_task_types": ["echo", "http.check"]}, "rabbitmq_task_types"),
    ("rabbitmq delivery limit zero", {"rabbitmq_delivery_limit": 0}, "rabbitmq_delivery_limit"),
    (
        "rabbitmq memory alarm above 0.9",
        {"rabbitmq_memory_high_watermark": 1.5},
        "rabbitmq_memory_high_watermark",
    ),
    (
        "access job floating image tag",
        {"rabbitmq_access_image": "docker.io/library/python:slim"},
        "rabbitmq_access_image",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "variable"), [case[1:] for case in RABBITMQ_CASES], ids=[case[0] for case in RABBITMQ_CASES]
)
def test_bad_rabbitmq_input_fails_before_anything_starts(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    run = run_platform(tmp_path, ["rabbitmq"], "local", overrides)

    assert_refused(run, variable)
    assert not (tmp_path / "rabbitmq").exists()


# The postgres and pgbouncer roles (local target): no server is started and nothing is written to
# the state directory.

PLATFORM_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("pool size not a number", {"pgbouncer_default_pool_size": "twenty"}, "pgbouncer_default_pool_size"),
    ("statement pooling", {"pgbouncer_pool_mode": "statement"}, "pgbouncer_pool_mode"),
    ("pgbouncer beyond loopback", {"pgbouncer_local_host": "0.0.0.0"}, "pgbouncer_local_host"),
    ("min pool above the pool", {"pgbouncer_min_pool_size": 30}, "pgbouncer_min_pool_size"),
    ("db connections below the pool", {"pgbouncer_max_db_connections": 5}, "pgbouncer_max_db_connections"),
    ("no client connections", {"pgbouncer_max_client_conn": 0}, "pgbouncer_max_client_conn"),
    ("pgbouncer port out of range", {"pgbouncer_local_port": 70000}, "pgbouncer_local_port"),
    (
        "floating pgbouncer image",
        {"pgbouncer_image": "docker.io/edoburu/pgbouncer:latest"},
        "pgbouncer_image",
    ),
    (
        "extra setting replacing the auth",
        {"pgbouncer_extra_settings": {"auth_type": "trust"}},
        "pgbouncer_extra_settings",
    ),
    (
        "bootstrap job without a memory limit",
        {"postgres_bootstrap_resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
        "postgres_bootstrap_resources",
    ),
    ("bootstrap job without time", {"postgres_bootstrap_timeout": 0}, "postgres_bootstrap_timeout"),
]


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [case[1:] for case in PLATFORM_CASES],
    ids=[case[0] for case in PLATFORM_CASES],
)
def test_bad_platform_input_fails_before_any_service_starts(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    run = run_platform(tmp_path, ["postgres", "pgbouncer"], "local", overrides)

    assert_refused(run, variable)
    assert sorted(path.name for path in tmp_path.iterdir()) == []
