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
