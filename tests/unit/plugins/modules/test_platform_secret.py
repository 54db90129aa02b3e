"""platform_secret against a real moto server: the module run as Ansible runs it, and its core function.

A module-scoped fixture starts ``moto_server`` on a free port of 127.0.0.1 and stops it at the end.
Most cases run ``ansible localhost -m tenantforge.platform.platform_secret`` (argument spec, check
mode, diff mode and no_log handling included); a few drive :func:`platform_secret.ensure` directly.
Every result is checked for leaks: no generated value may appear anywhere in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry, RetryingBotoClientWrapper
from botocore.exceptions import ClientError
from conftest import Emulator, assert_jwk_verifies

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material
from ansible_collections.tenantforge.platform.plugins.modules import platform_secret

REPO_ROOT = Path(__file__).resolve().parents[4]
COLLECTIONS_PATH = REPO_ROOT / ".local" / "collections"
VENV_BIN = Path(sys.executable).parent
REGION = "us-east-1"
MODULE = "tenantforge.platform.platform_secret"

Runner = Callable[..., dict]


@pytest.fixture(scope="module")
def moto_url(emulator: Emulator) -> str:
    return emulator.endpoint_url


@pytest.fixture(scope="module")
def aws(emulator: Emulator) -> Any:
    """A plain boto3 client, to inspect what the module stored."""
    return emulator.client("secretsmanager")


@pytest.fixture(scope="module")
def run(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Runs the module through ``ansible`` ad hoc and returns the host's result."""
    home = tmp_path_factory.mktemp("ansible")
    config = home / "ansible.cfg"
    config.write_text("[defaults]\nretry_files_enabled = false\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "AWS_"))}
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_NOCOLOR="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )

    def runner(args: dict, check: bool = False, diff: bool = False, fails: bool = False) -> dict:
        command = [
            str(VENV_BIN / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            MODULE,
            "-a",
            json.dumps({"endpoint_url": moto_url, "region": REGION, **args}),
        ]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=home, timeout=300)
        try:
            output = json.loads(completed.stdout)
            result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            pytest.fail(f"ansible rc={completed.returncode}\n{completed.stdout}\n{completed.stderr}")
        assert bool(result.get("failed")) == fails, result.get("msg", result)
        return result

    return runner


@pytest.fixture(scope="module")
def core(moto_url: str) -> Runner:
    """Calls platform_secret.ensure() with the module's defaults, as main() does."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    manager = platform_secret.SecretsManager(RetryingBotoClientWrapper(client, AWSRetry.jittered_backoff()))
    defaults = {name: spec.get("default") for name, spec in platform_secret.argument_spec().items()}

    def runner(args: dict, check: bool = False) -> dict:
        return platform_secret.ensure(manager, {**defaults, **args}, check_mode=check)

    return runner


def unique(suffix: str) -> str:
    return f"tenantforge/test-{uuid.uuid4().hex[:10]}/{suffix}"


def value(aws: Any, name: str) -> dict:
    return json.loads(aws.get_secret_value(SecretId=name)["SecretString"])


def current_version(aws: Any, name: str) -> str:
    stages = aws.describe_secret(SecretId=name)["VersionIdsToStages"]
    return next(version for version, labels in stages.items() if "AWSCURRENT" in labels)


def missing(aws: Any, name: str) -> bool:
    try:
        aws.describe_secret(SecretId=name)
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "ResourceNotFoundException"
    return False


def assert_no_leak(result: dict, *secrets: str) -> None:
    text = json.dumps(result)
    for secret in secrets:
        assert secret, "nothing to look for"
        for fragment in [secret] + [line for line in secret.splitlines() if len(line) >= 16]:
            assert fragment not in text


def pem_body(pem: str) -> str:
    """The base64 body of a PEM, without headers, for leak checks."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


# --------------------------------------------------------------------------------------- creation


def test_credentials_created_once_and_kept(run: Runner, aws: Any) -> None:
    name = unique("postgres/superuser")
    args = {"name": name, "kind": "credentials", "username": "postgres", "extra": {"database": "tenantforge"}}

    created = run(args)
    assert created["changed"] is True
    assert created["secret"]["name"] == name
    assert created["secret"]["arn"].startswith("arn:aws:secretsmanager:")
    assert created["secret"]["version_id"] == current_version(aws, name)
    stored = value(aws, name)
    assert list(stored) == ["username", "password", "database"]
    assert stored["username"] == "postgres" and stored["database"] == "tenantforge"
    assert len(stored["password"]) == 32 and stored["password"].isalnum()

    again = run(args)
    assert again["changed"] is False
    assert again["secret"]["version_id"] == created["secret"]["version_id"]
    assert value(aws, name) == stored
    assert_no_leak(created, stored["password"])
    assert_no_leak(again, stored["password"])


def test_erlang_cookie_created_once_and_kept(run: Runner, aws: Any) -> None:
    name = unique("rabbitmq/erlang-cookie")
    created = run({"name": name, "kind": "erlang_cookie"})
    assert created["changed"] is True
    stored = value(aws, name)
    assert list(stored) == ["cookie"]
    assert (
        len(stored["cookie"]) == 48
        and stored["cookie"].isalnum()
        and stored["cookie"].upper() == stored["cookie"]
    )

    again = run({"name": name, "kind": "erlang_cookie"})
    assert again["changed"] is False
    assert again["secret"]["version_id"] == created["secret"]["version_id"]
    assert_no_leak(created, stored["cookie"])
    assert_no_leak(again, stored["cookie"])


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwt_signing_key_created_rotated_and_kept(run: Runner, aws: Any, algorithm: str) -> None:
    name, jwks_name = unique("tokens/signing-key"), unique("tokens/jwks")
    args = {"name": name, "jwks_name": jwks_name, "kind": "jwt_signing_key", "algorithm": algorithm}

    created = run(args)
    assert created["changed"] is True
    private = value(aws, name)
    jwks = value(aws, jwks_name)
    assert list(private) == ["kid", "alg", "private_key_pem"]
    assert private["alg"] == algorithm and private["kid"] == created["kid"]
    assert private["private_key_pem"].splitlines()[0].strip("-") == "BEGIN PRIVATE KEY"  # PKCS#8
    assert list(jwks) == ["keys"] and len(jwks["keys"]) == 1
    assert jwks["keys"][0]["kid"] == created["kid"] and jwks["keys"][0]["use"] == "sig"
    assert_jwk_verifies(private["private_key_pem"], jwks["keys"][0])
    assert created["jwks"]["name"] == jwks_name and created["jwks"]["version_id"] == current_version(
        aws, jwks_name
    )

    again = run(args)
    assert again["changed"] is False
    assert again["kid"] == created["kid"]
    assert again["secret"]["version_id"] == created["secret"]["version_id"]
    assert again["jwks"]["version_id"] == created["jwks"]["version_id"]

    rotated = run({**args, "rotate": True})
    assert rotated["changed"] is True and rotated["kid"] != created["kid"]
    new_private = value(aws, name)
    new_jwks = value(aws, jwks_name)
    assert new_private["kid"] == rotated["kid"]
    assert [key["kid"] for key in new_jwks["keys"]] == [rotated["kid"], created["kid"]]
    assert_jwk_verifies(new_private["private_key_pem"], new_jwks["keys"][0])
    assert_jwk_verifies(private["private_key_pem"], new_jwks["keys"][1])  # old tokens still verify

    for result in (created, again, rotated):
        assert_no_leak(result, private["private_key_pem"], new_private["private_key_pem"])
        assert_no_leak(result, pem_body(private["private_key_pem"]), pem_body(new_private["private_key_pem"]))


# ------------------------------------------------------------------------------------- check mode


def test_check_mode_on_missing_secret_changes_nothing(run: Runner, aws: Any) -> None:
    name = unique("postgres/app")
    result = run({"name": name, "kind": "credentials", "username": "app"}, check=True, diff=True)
    assert result["changed"] is True
    assert result["secret"] == {"arn": None, "name": name, "version_id": None}
    assert result["diff"]["before"][name] == {"state": "absent"}
    assert result["diff"]["after"][name]["keys"] == ["password", "username"]
    assert missing(aws, name)

    name, jwks_name = unique("tokens/key"), unique("tokens/jwks")
    jwt = run({"name": name, "jwks_name": jwks_name, "kind": "jwt_signing_key"}, check=True)
    assert jwt["changed"] is True and jwt["kid"] is None and jwt["jwks"]["version_id"] is None
    assert missing(aws, name) and missing(aws, jwks_name)


def test_check_mode_on_existing_secret(run: Runner, aws: Any) -> None:
    name = unique("postgres/app")
    args = {"name": name, "kind": "credentials", "username": "app", "extra": {"database": "app"}}
    created = run(args)
    version = created["secret"]["version_id"]

    unchanged = run(args, check=True)
    assert unchanged["changed"] is False
    assert unchanged["secret"]["version_id"] == version

    would_change = run({**args, "extra": {"database": "other"}}, check=True)
    assert would_change["changed"] is True
    assert would_change["secret"]["version_id"] is None
    assert current_version(aws, name) == version
    assert value(aws, name)["database"] == "app"


# -------------------------------------------------------------------------------- updates, rotate


def test_extra_change_keeps_password_and_diff_shows_no_value(run: Runner, aws: Any) -> None:
    name = unique("pgbouncer/auth")
    args = {"name": name, "kind": "credentials", "username": "pgbouncer", "extra": {"database": "a"}}
    created = run(args)
    before = value(aws, name)

    changed = run({**args, "extra": {"database": "b", "host": "127.0.0.1"}}, diff=True)
    assert changed["changed"] is True
    assert changed["secret"]["version_id"] != created["secret"]["version_id"]
    after = value(aws, name)
    assert after["password"] == before["password"]
    assert after == {
        "username": "pgbouncer",
        "password": before["password"],
        "database": "b",
        "host": "127.0.0.1",
    }
    diff_before, diff_after = changed["diff"]["before"][name], changed["diff"]["after"][name]
    assert diff_before["keys"] == ["database", "password", "username"]
    assert diff_after["keys"] == ["database", "host", "password", "username"]
    assert diff_before["value_sha256"] != diff_after["value_sha256"]
    assert diff_after["version_id"] == changed["secret"]["version_id"]
    assert_no_leak(changed, before["password"])

    assert run({**args, "extra": {"database": "b", "host": "127.0.0.1"}})["changed"] is False


def test_rotate_replaces_password_only(run: Runner, aws: Any) -> None:
    name = unique("rabbitmq/admin")
    args = {"name": name, "kind": "credentials", "username": "admin", "extra": {"vhost": "/"}}
    run(args)
    before = value(aws, name)
    rotated = run({**args, "rotate": True, "password_length": 48})
    after = value(aws, name)
    assert rotated["changed"] is True
    assert after["password"] != before["password"] and len(after["password"]) == 48
    assert (after["username"], after["vhost"]) == ("admin", "/")
    assert_no_leak(rotated, before["password"], after["password"])


# ---------------------------------------------------------------------------- absent and restore


def test_absent_with_recovery_window_zero(run: Runner, aws: Any) -> None:
    name = unique("postgres/old")
    run({"name": name, "kind": "credentials", "username": "old"})
    removed = run({"name": name, "state": "absent", "recovery_window_in_days": 0})
    assert removed["changed"] is True
    assert missing(aws, name)
    again = run({"name": name, "state": "absent", "recovery_window_in_days": 0})
    assert again["changed"] is False


def test_absent_jwt_deletes_the_jwks_too(run: Runner, aws: Any) -> None:
    name, jwks_name = unique("tokens/key"), unique("tokens/jwks")
    args = {"name": name, "jwks_name": jwks_name, "kind": "jwt_signing_key", "algorithm": "ES256"}
    run(args)
    checked = run({**args, "state": "absent", "recovery_window_in_days": 0}, check=True)
    assert checked["changed"] is True and not missing(aws, name) and not missing(aws, jwks_name)
    removed = run({**args, "state": "absent", "recovery_window_in_days": 0})
    assert removed["changed"] is True
    assert missing(aws, name) and missing(aws, jwks_name)


def test_scheduled_for_deletion_is_restored(run: Runner, aws: Any) -> None:
    name = unique("postgres/restored")
    args = {"name": name, "kind": "credentials", "username": "restored"}
    run(args)
    before = value(aws, name)
    scheduled = run({"name": name, "state": "absent"})  # default recovery window: 7 days
    assert scheduled["changed"] is True
    assert "DeletedDate" in aws.describe_secret(SecretId=name)
    assert run({"name": name, "state": "absent"})["changed"] is False

    checked = run(args, check=True)
    assert checked["changed"] is True
    assert "DeletedDate" in aws.describe_secret(SecretId=name)

    restored = run(args)
    assert restored["changed"] is True
    assert "DeletedDate" not in aws.describe_secret(SecretId=name)
    assert value(aws, name) == before
    assert run(args)["changed"] is False


# ----------------------------------------------------------------------------------------- errors


def test_invalid_username_fails_naming_the_option(run: Runner) -> None:
    failed = run({"name": unique("x"), "kind": "credentials", "username": "Bad-Name"}, fails=True)
    assert "username" in failed["msg"]


def test_malformed_value_fails_without_writing(run: Runner, aws: Any) -> None:
    name = unique("postgres/imported")
    aws.create_secret(
        Name=name, SecretString=json.dumps({"username": "imported", "pass": "HAND-TYPED-VALUE"})
    )
    version = current_version(aws, name)
    failed = run({"name": name, "kind": "credentials", "username": "imported"}, fails=True)
    assert name in failed["msg"] and "'password'" in failed["msg"]
    assert "HAND-TYPED-VALUE" not in json.dumps(failed)
    assert current_version(aws, name) == version

    rotated = run({"name": name, "kind": "credentials", "username": "imported", "rotate": True})
    assert rotated["changed"] is True
    assert set(value(aws, name)) == {"username", "password"}


# ------------------------------------------------------------------------------- core function


def test_core_repairs_missing_jwks_without_new_key(core: Runner, aws: Any) -> None:
    name, jwks_name = unique("tokens/key"), unique("tokens/jwks")
    args = {"name": name, "jwks_name": jwks_name, "kind": "jwt_signing_key", "rsa_key_size": 2048}
    created = core(args)
    aws.delete_secret(SecretId=jwks_name, ForceDeleteWithoutRecovery=True)

    checked = core(args, check=True)
    assert checked["changed"] is True and missing(aws, jwks_name)

    repaired = core(args)
    assert repaired["changed"] is True
    assert repaired["kid"] == created["kid"]
    assert repaired["secret"]["version_id"] == created["secret"]["version_id"]
    assert [key["kid"] for key in value(aws, jwks_name)["keys"]] == [created["kid"]]
    assert core(args)["changed"] is False

    # a JWKS that lost the current key is repaired too, keeping the other published key
    other = secret_material.plan(
        secret_material.Desired(name="n", kind="jwt_signing_key", jwks_name="j", rsa_key_size=2048), None
    )
    aws.put_secret_value(SecretId=jwks_name, SecretString=other.jwks_string)
    fixed = core(args)
    assert fixed["changed"] is True
    assert [key["kid"] for key in value(aws, jwks_name)["keys"]] == [created["kid"], other.kid]


def test_core_syncs_description_and_tags(core: Runner, aws: Any) -> None:
    name = unique("rabbitmq/cookie")
    args = {"name": name, "kind": "erlang_cookie", "description": "first", "tags": {"team": "core"}}
    created = core(args)
    described = aws.describe_secret(SecretId=name)
    assert described["Description"] == "first"
    assert described["Tags"] == [{"Key": "team", "Value": "core"}]

    updated = core({**args, "description": "second", "tags": {"env": "test"}})
    assert updated["changed"] is True
    assert updated["secret"]["version_id"] == created["secret"]["version_id"]  # metadata only
    described = aws.describe_secret(SecretId=name)
    assert described["Description"] == "second"
    assert {t["Key"]: t["Value"] for t in described["Tags"]} == {"env": "test"}

    kept = core({**args, "description": "second", "tags": {"extra": "1"}, "purge_tags": False})
    assert kept["changed"] is True
    assert {t["Key"] for t in aws.describe_secret(SecretId=name)["Tags"]} == {"env", "extra"}
    assert core({**args, "description": "second", "tags": None})["changed"] is False


def test_core_rejects_bad_recovery_window(core: Runner) -> None:
    with pytest.raises(secret_material.SecretError, match="recovery_window_in_days"):
        core({"name": unique("x"), "state": "absent", "recovery_window_in_days": 3})
