"""Shared fixtures: the repository, a private AWS emulator, and a way to run playbooks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COLLECTIONS = REPO / ".local" / "collections"
AMIS_FILE = REPO / "roles" / "local_emulator" / "files" / "amis.json"
EMULATOR_SCRIPT = REPO / "roles" / "local_emulator" / "files" / "emulator.py"

# The collection resolves as tenantforge.platform for imports in unit tests.
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Emulator:
    port: int
    pid: int

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A moto server of the tests' own, on a free port, stopped at the end of the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("emulator") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(EMULATOR_SCRIPT), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_AMIS_PATH": str(AMIS_FILE), "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
            start_new_session=True,
        )
    try:
        wait_for_port(port)
        yield Emulator(port=port, pid=process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def recap(self) -> dict[str, int]:
        """The PLAY RECAP counters of localhost."""
        match = re.search(r"^localhost\s+:\s+(.*)$", self.output, re.MULTILINE)
        assert match, f"no PLAY RECAP in output:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    @property
    def changed(self) -> int:
        return self.recap()["changed"]

    def assert_ok(self) -> None:
        assert self.returncode == 0, self.output[-6000:]


def ansible_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "TENANTFORGE_STATE_DIR": str(state_dir),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def run_playbook(
    playbook: str,
    state_dir: Path,
    extra_vars: dict | None = None,
    args: tuple[str, ...] = (),
    timeout: int = 900,
) -> PlaybookRun:
    command = [str(BIN / "ansible-playbook"), playbook, *args]
    if extra_vars:
        command += ["--extra-vars", json.dumps(extra_vars)]
    result = subprocess.run(
        command,
        cwd=REPO,
        env=ansible_env(state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(result.returncode, result.stdout + result.stderr)


def platform_resources(emulator: Emulator) -> dict[str, list[str]]:
    """Everything of the platform that exists in the emulator, by kind (empty lists when clean).

    Asked of each service's own list/describe calls: moto's EC2 DescribeTags keeps the tags of
    deleted resources, so it cannot tell what is left.
    """
    ec2 = emulator.client("ec2")
    managed = [{"Name": "tag:ManagedBy", "Values": ["tenantforge"]}]
    instances = [
        instance["InstanceId"]
        for reservation in ec2.describe_instances(Filters=managed)["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    ]
    iam = emulator.client("iam")
    trails = emulator.client("cloudtrail").describe_trails()["trailList"]
    groups = emulator.client("logs").describe_log_groups(logGroupNamePrefix="/tenantforge/")["logGroups"]
    secrets = emulator.client("secretsmanager").list_secrets(IncludePlannedDeletion=True)["SecretList"]
    alarms = emulator.client("cloudwatch").describe_alarms()["MetricAlarms"]
    return {
        "vpcs": [vpc["VpcId"] for vpc in ec2.describe_vpcs(Filters=managed)["Vpcs"]],
        "subnets": [subnet["SubnetId"] for subnet in ec2.describe_subnets(Filters=managed)["Subnets"]],
        "internet_gateways": [
            gateway["InternetGatewayId"]
            for gateway in ec2.describe_internet_gateways(Filters=managed)["InternetGateways"]
        ],
        "route_tables": [
            table["RouteTableId"] for table in ec2.describe_route_tables(Filters=managed)["RouteTables"]
        ],
        "security_groups": [
            group["GroupId"] for group in ec2.describe_security_groups(Filters=managed)["SecurityGroups"]
        ],
        "key_pairs": [key["KeyName"] for key in ec2.describe_key_pairs()["KeyPairs"]],
        "instances": instances,
        "iam_roles": [
            role["RoleName"]
            for role in iam.list_roles()["Roles"]
            if role["RoleName"].startswith("tenantforge")
        ],
        "instance_profiles": [
            profile["InstanceProfileName"] for profile in iam.list_instance_profiles()["InstanceProfiles"]
        ],
        "alarms": [alarm["AlarmName"] for alarm in alarms],
        "buckets": [bucket["Name"] for bucket in emulator.client("s3").list_buckets()["Buckets"]],
        "trails": [trail["Name"] for trail in trails],
        "log_groups": [group["logGroupName"] for group in groups],
        "secrets": [secret["Name"] for secret in secrets],
    }


def assert_nothing_exists(emulator: Emulator) -> None:
    left = {kind: names for kind, names in platform_resources(emulator).items() if names}
    assert left == {}


def assert_jwk_verifies(private_key_pem: str, jwk: dict[str, Any]) -> None:
    """A signature made with the private PEM verifies with the public key rebuilt from the JWK alone."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    from ansible_collections.tenantforge.platform.plugins.module_utils.secret_material import (
        public_key_from_jwk,
    )

    private_key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    public_key = public_key_from_jwk(jwk)
    message = b"eyJhbGciOi.eyJzdWIiOi"
    if isinstance(private_key, rsa.RSAPrivateKey):
        assert isinstance(public_key, rsa.RSAPublicKey)
        signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
