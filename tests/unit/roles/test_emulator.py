"""Which requests the local emulator journals (roles/local_emulator/files/emulator.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "local_emulator" / "files" / "emulator.py"
spec = importlib.util.spec_from_file_location("tenantforge_emulator", SCRIPT)
assert spec and spec.loader
emulator = importlib.util.module_from_spec(spec)
sys.modules["tenantforge_emulator"] = emulator
spec.loader.exec_module(emulator)

FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body", "expected"),
    [
        # Query protocol (EC2, IAM, STS): the Action in the form body or the query string.
        ("POST", "/", "", FORM, b"Action=CreateVpc&Version=2016-11-15", True),
        ("POST", "/", "", FORM, b"Action=DescribeVpcs&Version=2016-11-15", False),
        ("GET", "/", "Action=ListRoles&Version=2010-05-08", {}, b"", False),
        ("POST", "/", "", FORM, b"Action=GetCallerIdentity", False),
        # JSON protocol: X-Amz-Target.
        ("POST", "/", "", {"x-amz-target": "secretsmanager.CreateSecret"}, b"{}", True),
        ("POST", "/", "", {"x-amz-target": "secretsmanager.GetSecretValue"}, b"{}", False),
        ("POST", "/", "", {"x-amz-target": "secretsmanager.BatchGetSecretValue"}, b"{}", False),
        ("POST", "/", "", {"x-amz-target": "Logs_20140328.PutRetentionPolicy"}, b"{}", True),
        # Smithy RPC v2 (CloudWatch): the operation in the path.
        ("POST", "/service/GraniteServiceVersion20100801/operation/PutMetricAlarm", "", {}, b"", True),
        ("POST", "/service/GraniteServiceVersion20100801/operation/DescribeAlarms", "", {}, b"", False),
        # REST (S3): the method decides.
        ("PUT", "/bucket", "", {}, b"", True),
        ("DELETE", "/bucket/key", "", {}, b"", True),
        ("GET", "/bucket", "lifecycle", {}, b"", False),
        ("HEAD", "/bucket", "", {}, b"", False),
        # moto's own API (reset, seed) is never replayed.
        ("POST", "/moto-api/reset", "", {}, b"", False),
    ],
)
def test_only_state_changing_requests_are_journaled(method, path, query, headers, body, expected) -> None:
    assert emulator.changes_state(method, path, query, headers, body) is expected
