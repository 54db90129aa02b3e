"""The local_emulator role and the local_service module, with a real moto server process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import free_port, run_playbook

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def services(state_dir: Path, port: int, state: str = "started", args: tuple[str, ...] = ()):
    return run_playbook(
        "playbooks/local_services.yml",
        state_dir,
        {"local_emulator_port": port, "tenantforge_local_services_state": state},
        args,
    )


def test_start_is_recorded_then_a_no_op_and_stop_cleans_up(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "moto.pid"
    try:
        first = services(tmp_path, port)
        first.assert_ok()
        assert first.changed == 1
        pid = int(pidfile.read_text())
        assert alive(pid) and listening(port)

        second = services(tmp_path, port)
        second.assert_ok()
        assert second.changed == 0
        assert int(pidfile.read_text()) == pid

        checked = services(tmp_path, port, "stopped", ("--check",))
        checked.assert_ok()
        assert checked.changed == 1
        assert alive(pid), "check mode stopped the emulator"

        stopped = services(tmp_path, port, "stopped")
        stopped.assert_ok()
        assert stopped.changed == 1
        assert not pidfile.exists()
        assert not listening(port)

        again = services(tmp_path, port, "stopped")
        again.assert_ok()
        assert again.changed == 0
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_check_mode_start_reports_a_change_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    run = services(tmp_path, port, args=("--check",))
    run.assert_ok()
    assert run.changed == 1
    assert not (tmp_path / "moto.pid").exists()
    assert not listening(port)


def test_a_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "moto.pid").write_text(f"{dead.pid}\n")
    try:
        run = services(tmp_path, port)
        run.assert_ok()
        assert run.changed == 1
        assert int((tmp_path / "moto.pid").read_text()) != dead.pid
        assert listening(port)
    finally:
        services(tmp_path, port, "stopped").assert_ok()


def test_a_port_held_by_another_process_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = services(tmp_path, port)
    assert run.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in run.output
    assert not (tmp_path / "moto.pid").exists()


def test_a_non_loopback_address_is_refused(tmp_path: Path) -> None:
    run = run_playbook("playbooks/local_services.yml", tmp_path, {"local_emulator_host": "0.0.0.0"})
    assert run.returncode != 0
    assert "local_emulator_host must be a loopback address" in run.output


def test_the_real_aws_inventory_never_starts_the_emulator(tmp_path: Path) -> None:
    port = free_port()
    run = run_playbook(
        "playbooks/local_services.yml",
        tmp_path,
        {"local_emulator_port": port},
        ("-i", "inventories/aws/hosts.yml"),
    )
    run.assert_ok()
    assert "skipping: no hosts matched" in run.output
    assert not (tmp_path / "moto.pid").exists()
    assert not listening(port)


def emulator_client(service: str, port: int):
    import boto3

    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_state_survives_a_stop_and_start_with_the_same_identifiers(tmp_path: Path) -> None:
    port = free_port()
    journal = tmp_path / "emulator-journal.jsonl"
    try:
        services(tmp_path, port).assert_ok()
        ec2 = emulator_client("ec2", port)
        ec2.describe_vpcs()
        vpc = ec2.create_vpc(
            CidrBlock="10.77.0.0/16",
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "kept"}]}],
        )["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
        secrets = emulator_client("secretsmanager", port)
        created = secrets.create_secret(Name="tenantforge/test/kept", SecretString='{"password": "p4ss"}')
        secrets.get_secret_value(SecretId=created["ARN"])
        assert journal.stat().st_mode & 0o777 == 0o600
        # Only what changed state is journaled: the two reads are not.
        assert len(journal.read_text().splitlines()) == 3

        services(tmp_path, port, "stopped").assert_ok()
        assert not listening(port)
        restarted = services(tmp_path, port)
        restarted.assert_ok()
        assert restarted.changed == 1

        ec2 = emulator_client("ec2", port)
        kept = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["kept"]}])["Vpcs"]
        assert [found["VpcId"] for found in kept] == [vpc]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        assert [found["SubnetId"] for found in subnets] == [subnet]
        value = emulator_client("secretsmanager", port).get_secret_value(SecretId="tenantforge/test/kept")
        assert (value["ARN"], value["VersionId"]) == (created["ARN"], created["VersionId"])
        assert value["SecretString"] == '{"password": "p4ss"}'
        assert "replayed 3 requests" in (tmp_path / "moto.log").read_text()
    finally:
        services(tmp_path, port, "stopped")


def test_an_empty_journal_setting_keeps_the_state_in_memory(tmp_path: Path) -> None:
    port = free_port()
    extra = {"local_emulator_port": port, "local_emulator_journal": ""}
    try:
        run_playbook("playbooks/local_services.yml", tmp_path, extra).assert_ok()
        emulator_client("ec2", port).create_vpc(CidrBlock="10.78.0.0/16")
        assert not list(tmp_path.glob("*journal*"))
    finally:
        run_playbook(
            "playbooks/local_services.yml", tmp_path, {**extra, "tenantforge_local_services_state": "stopped"}
        )
