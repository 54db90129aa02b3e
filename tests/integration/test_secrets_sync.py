"""secrets_sync against the tests' AWS emulator, with the directory target in tmp_path.

Most cases run ``ansible-playbook`` with a one-task playbook and the json callback: argument spec,
check mode, diff mode and no_log masking are Ansible's own. Each test creates its secrets under a
prefix of its own and checks the files written, their modes, the results and ``changed``, normally,
in check mode and again for idempotency.

API calls are counted in the module's own process: the runs get a ``sitecustomize`` (on PYTHONPATH,
tests/api_calls.py) that appends the name of every botocore operation to a file, so a test can say
"this run made one ListSecrets call and no GetSecretValue call". The last tests drive the module's core function
in-process, with a counting wrapper around the boto3 client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random
import stat
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from api_calls import CALL_LOG, install_call_logger, logged_calls
from botocore.stub import Stubber
from conftest import Emulator

from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync import SyncError
from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync_targets import DirectoryTarget
from ansible_collections.tenantforge.platform.plugins.modules import secrets_sync

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO / ".local" / "collections"
VENV_BIN = Path(sys.executable).parent
REGION = "us-east-1"
MODULE = "tenantforge.platform.secrets_sync"
MANAGED = {"app.kubernetes.io/managed-by": "tenantforge"}


class Unsafe(str):
    """A string written with YAML's ``!unsafe`` tag, so that Ansible leaves the template to the module."""


class PlaybookDumper(yaml.SafeDumper):
    pass


PlaybookDumper.add_representer(Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


@dataclass
class Run:
    returncode: int
    output: str
    result: dict[str, Any]
    calls: Counter[str]

    @property
    def actions(self) -> dict[str, str]:
        return {entry["target"]: entry["action"] for entry in self.result.get("secrets", [])}


Runner = Callable[..., Run]


@pytest.fixture(scope="module")
def aws(emulator: Emulator) -> Any:
    return emulator.client("secretsmanager")


@pytest.fixture(scope="module")
def run(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Runs the module in a one-task playbook; returns the task result and the API calls it made."""
    home = tmp_path_factory.mktemp("ansible")
    (home / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    counter = iter(range(1_000_000))
    base_env = {
        key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "AWS_", "K8S_"))
    }
    base_env.update(
        ANSIBLE_CONFIG=str(home / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONPATH=install_call_logger(home / "hooks"),
    )

    def runner(
        args: dict, check: bool = False, diff: bool = False, fails: bool = False, verbose: bool = False
    ) -> Run:
        number = next(counter)
        playbook = home / f"playbook-{number}.yml"
        task = {
            "name": "Sync secrets",
            MODULE: {"endpoint_url": emulator.endpoint_url, "region": REGION, **args},
        }
        play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]}
        playbook.write_text(yaml.dump([play], Dumper=PlaybookDumper, sort_keys=False))
        calls_log = home / f"calls-{number}.log"
        env = {
            **base_env,
            "ANSIBLE_STDOUT_CALLBACK": "default" if verbose else "json",
            CALL_LOG: str(calls_log),
        }
        command = [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ]
        command += ["--check"] * check + ["--diff"] * diff + ["-vvv"] * verbose
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=home, timeout=300)
        output = completed.stdout + completed.stderr
        calls = logged_calls(calls_log)
        if verbose:
            assert (completed.returncode != 0) == fails, output[-4000:]
            return Run(completed.returncode, output, {}, calls)
        try:
            result = json.loads(completed.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            pytest.fail(f"ansible-playbook rc={completed.returncode}\n{output[-4000:]}")
        assert bool(result.get("failed")) == fails, result.get("msg", result)
        return Run(completed.returncode, output, result, calls)

    return runner


def unique_prefix() -> str:
    return f"tf-sync-{uuid.uuid4().hex[:8]}/"


def secret_value(length: int = 24) -> str:
    """A value nothing else in the output can contain by chance."""
    return "v" + random.token_hex(length)


def create(aws: Any, name: str, value: dict | str | bytes, tags: dict[str, str] | None = None) -> str:
    kwargs: dict[str, Any] = {"Name": name}
    if isinstance(value, bytes):
        kwargs["SecretBinary"] = value
    else:
        kwargs["SecretString"] = value if isinstance(value, str) else json.dumps(value)
    if tags:
        kwargs["Tags"] = [{"Key": key, "Value": item} for key, item in tags.items()]
    return str(aws.create_secret(**kwargs)["ARN"])


def current_version(aws: Any, name: str) -> str:
    stages = aws.describe_secret(SecretId=name)["VersionIdsToStages"]
    return next(version for version, labels in stages.items() if "AWSCURRENT" in labels)


def checksum(data: dict[str, bytes]) -> str:
    """The content hash as documented: sha256 of {key: base64(value)} as sorted compact JSON."""
    canonical = json.dumps(
        {key: base64.b64encode(item).decode() for key, item in data.items()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def short(item: bytes) -> str:
    return hashlib.sha256(item).hexdigest()[:12]


def keys_of(directory: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.name != "..metadata.json"
    }


def metadata_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "..metadata.json").read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under root with its mode and content: compares 'nothing was written'."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): (mode(path), path.read_bytes() if path.is_file() else b"")
        for path in sorted(root.rglob("*"))
    }


def directory_args(root: Path, **args: Any) -> dict[str, Any]:
    return {"target": "directory", "directory": str(root), "namespace": "apps", **args}


# ------------------------------------------------------------------------ create, check, idempotent


def test_create_in_check_mode_then_for_real_then_idempotent(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    app: dict[str, Any] = {"username": "app_" + secret_value(4), "password": secret_value(), "port": 5432}
    admin = {"username": "admin_" + secret_value(4), "password": secret_value()}
    app_arn = create(aws, prefix + "postgres/app", app)
    admin_arn = create(aws, prefix + "rabbitmq/admin", admin)
    root = tmp_path / "secrets"
    args = directory_args(root, name_prefix=prefix)
    app_data = {"username": app["username"].encode(), "password": app["password"].encode(), "port": b"5432"}
    admin_data = {"username": admin["username"].encode(), "password": admin["password"].encode()}
    expected_checksums = {
        "apps/postgres-app": checksum(app_data),
        "apps/rabbitmq-admin": checksum(admin_data),
    }

    checked = run(args, check=True, diff=True)
    assert checked.result["changed"] is True
    assert checked.actions == {"apps/postgres-app": "created", "apps/rabbitmq-admin": "created"}
    assert checked.result["checksums"] == expected_checksums
    assert checked.result["diff"]["before"] == {
        "apps/postgres-app": {"state": "absent"},
        "apps/rabbitmq-admin": {"state": "absent"},
    }
    assert checked.result["diff"]["after"]["apps/postgres-app"]["keys"] == {
        key: short(item) for key, item in sorted(app_data.items())
    }
    assert checked.calls == Counter({"ListSecrets": 1, "GetSecretValue": 2})
    assert not root.exists()

    created = run(args)
    assert created.result["changed"] is True
    assert created.result["secrets"] == [
        {
            "source": prefix + "postgres/app",
            "arn": app_arn,
            "version_id": current_version(aws, prefix + "postgres/app"),
            "target": "apps/postgres-app",
            "action": "created",
            "checksum": checksum(app_data),
        },
        {
            "source": prefix + "rabbitmq/admin",
            "arn": admin_arn,
            "version_id": current_version(aws, prefix + "rabbitmq/admin"),
            "target": "apps/rabbitmq-admin",
            "action": "created",
            "checksum": checksum(admin_data),
        },
    ]
    assert created.result["checksums"] == expected_checksums
    app_dir = root / "apps" / "postgres-app"
    assert keys_of(app_dir) == app_data
    assert keys_of(root / "apps" / "rabbitmq-admin") == admin_data
    assert mode(root) == mode(root / "apps") == mode(app_dir) == 0o700
    assert {mode(path) for path in app_dir.iterdir()} == {0o600}
    assert metadata_of(app_dir) == {
        "type": "Opaque",
        "labels": MANAGED,
        "annotations": {
            "tenantforge.io/source-arn": app_arn,
            "tenantforge.io/source-version-id": current_version(aws, prefix + "postgres/app"),
            "tenantforge.io/content-hash": checksum(app_data),
            "tenantforge.io/mapping-hash": metadata_of(app_dir)["annotations"]["tenantforge.io/mapping-hash"],
        },
    }
    assert len(metadata_of(app_dir)["annotations"]["tenantforge.io/mapping-hash"]) == 64
    written = tree(root)

    again = run(args)
    assert again.result["changed"] is False
    assert again.actions == {"apps/postgres-app": "unchanged", "apps/rabbitmq-admin": "unchanged"}
    assert again.result["checksums"] == expected_checksums
    assert again.calls == Counter({"ListSecrets": 1})  # the warm run reads no secret value
    assert tree(root) == written

    checked_again = run(args, check=True)
    assert checked_again.result["changed"] is False
    assert checked_again.calls["GetSecretValue"] == 0


# -------------------------------------------------------------------------- update and rotation


def test_new_version_updates_and_rotation_follows_awscurrent(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    name = prefix + "api/key"
    first = {"token": secret_value()}
    create(aws, name, first)
    root = tmp_path / "secrets"
    args = directory_args(root, name_prefix=prefix)
    created = run(args)
    old_checksum = created.result["checksums"]["apps/api-key"]
    old_version = current_version(aws, name)

    # A rotation in progress: the new value is AWSPENDING, applications still use AWSCURRENT.
    rotated = {"token": secret_value()}
    pending = aws.put_secret_value(
        SecretId=name, SecretString=json.dumps(rotated), VersionStages=["AWSPENDING"]
    )
    during = run(args)
    assert during.result["changed"] is False and during.actions == {"apps/api-key": "unchanged"}
    assert during.calls["GetSecretValue"] == 0

    aws.update_secret_version_stage(
        SecretId=name,
        VersionStage="AWSCURRENT",
        MoveToVersionId=pending["VersionId"],
        RemoveFromVersionId=old_version,
    )
    # The rotation finishes: AWSPENDING is removed, as Secrets Manager does after the final step.
    aws.update_secret_version_stage(
        SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=pending["VersionId"]
    )
    checked = run(args, check=True, diff=True)
    assert checked.result["changed"] is True and checked.actions == {"apps/api-key": "updated"}
    new_checksum = checksum({"token": rotated["token"].encode()})
    assert checked.result["checksums"] == {"apps/api-key": new_checksum} != {"apps/api-key": old_checksum}
    assert checked.result["diff"]["before"]["apps/api-key"]["keys"] == {
        "token": short(first["token"].encode())
    }
    assert checked.result["diff"]["after"]["apps/api-key"]["keys"] == {
        "token": short(rotated["token"].encode())
    }
    assert (root / "apps" / "api-key" / "token").read_bytes() == first["token"].encode()

    updated = run(args)
    assert updated.result["changed"] is True
    [entry] = updated.result["secrets"]
    assert (entry["action"], entry["version_id"], entry["checksum"]) == (
        "updated",
        pending["VersionId"],
        new_checksum,
    )
    assert (root / "apps" / "api-key" / "token").read_bytes() == rotated["token"].encode()
    assert updated.calls == Counter({"ListSecrets": 1, "GetSecretValue": 1})

    assert run(args).result["changed"] is False


def test_new_version_with_the_same_content_updates_the_marks_only(
    run: Runner, aws: Any, tmp_path: Path
) -> None:
    # (Not after update_secret_version_stage: moto then labels two versions AWSCURRENT on the next put.)
    prefix = unique_prefix()
    name = prefix + "api/key"
    value = {"token": secret_value()}
    create(aws, name, value)
    root = tmp_path / "secrets"
    args = directory_args(root, name_prefix=prefix)
    created = run(args)
    same = aws.put_secret_value(SecretId=name, SecretString=json.dumps(value))

    checked = run(args, check=True)
    assert checked.result["changed"] is True and checked.actions == {"apps/api-key": "updated"}
    assert (
        metadata_of(root / "apps" / "api-key")["annotations"]["tenantforge.io/source-version-id"]
        != same["VersionId"]
    )
    remarked = run(args)
    assert remarked.result["changed"] is True
    assert remarked.result["secrets"][0]["checksum"] == created.result["secrets"][0]["checksum"]
    assert remarked.result["secrets"][0]["version_id"] == same["VersionId"]
    annotations = metadata_of(root / "apps" / "api-key")["annotations"]
    assert annotations["tenantforge.io/source-version-id"] == same["VersionId"]
    idle = run(args)
    assert idle.result["changed"] is False and idle.calls["GetSecretValue"] == 0


# ----------------------------------------------------------------------------------------- prune


def test_prune_deleted_and_deselected_sources(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    keep = {"keep": "yes"}
    for part in ("a", "b", "c"):
        create(aws, prefix + part, {"value": secret_value()}, tags=keep)
    root = tmp_path / "secrets"
    (root / "apps" / "hand-made").mkdir(parents=True)
    (root / "apps" / "hand-made" / "file").write_bytes(b"not ours")
    args = directory_args(root, name_prefix=prefix, tags=keep, prune=True)
    assert run(args).actions == {"apps/a": "created", "apps/b": "created", "apps/c": "created"}

    b_arn = aws.describe_secret(SecretId=prefix + "b")["ARN"]
    c_arn = aws.describe_secret(SecretId=prefix + "c")["ARN"]
    aws.delete_secret(SecretId=prefix + "b", ForceDeleteWithoutRecovery=True)
    aws.untag_resource(SecretId=prefix + "c", TagKeys=["keep"])

    without_prune = run({**args, "prune": False})
    assert without_prune.result["changed"] is False
    assert without_prune.actions == {"apps/a": "unchanged"}
    assert (root / "apps" / "b").is_dir() and (root / "apps" / "c").is_dir()

    checked = run(args, check=True, diff=True)
    assert checked.result["changed"] is True
    pruned = [entry for entry in checked.result["secrets"] if entry["action"] == "pruned"]
    assert [(e["target"], e["source"], e["arn"], e["reason"]) for e in pruned] == [
        ("apps/b", prefix + "b", b_arn, "the source secret no longer exists"),
        ("apps/c", prefix + "c", c_arn, "the source secret is no longer selected"),
    ]
    assert checked.result["diff"]["after"] == {"apps/b": {"state": "absent"}, "apps/c": {"state": "absent"}}
    assert checked.result["checksums"] == {"apps/a": checked.result["secrets"][0]["checksum"]}
    assert (root / "apps" / "b").is_dir() and (root / "apps" / "c").is_dir()

    pruned_run = run(args)
    assert pruned_run.result["changed"] is True
    assert pruned_run.actions == {"apps/a": "unchanged", "apps/b": "pruned", "apps/c": "pruned"}
    assert sorted(path.name for path in (root / "apps").iterdir()) == ["a", "hand-made"]
    assert (root / "apps" / "hand-made" / "file").read_bytes() == b"not ours"

    again = run(args)
    assert again.result["changed"] is False and again.actions == {"apps/a": "unchanged"}


# ------------------------------------------------------------------------------------ adoption


def test_refuses_an_unmanaged_secret_and_writes_nothing_then_adopts(
    run: Runner, aws: Any, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    taken = {"password": secret_value()}
    other = {"password": secret_value()}
    create(aws, prefix + "taken", taken)
    create(aws, prefix + "other", other)
    root = tmp_path / "secrets"
    hand_made = root / "apps" / "taken"
    hand_made.mkdir(parents=True)
    (hand_made / "password").write_bytes(b"typed-by-hand")
    (hand_made / "stale-key").write_bytes(b"old")
    before = tree(root)
    args = directory_args(root, name_prefix=prefix)

    for check in (True, False):
        refused = run(args, check=check, fails=True)
        assert (
            "the Secret apps/taken (for secret " + prefix + "taken) exists and is not managed by tenantforge"
            in refused.result["msg"]
        )
        assert "set adopt: true to take it over" in refused.result["msg"]
        assert refused.result["msg"].endswith("Nothing was written.")
        assert {(e["target"], e["action"]) for e in refused.result["secrets"]} == {
            ("apps/other", "skipped"),
            ("apps/taken", "skipped"),
        }
        assert tree(root) == before  # not even the other secret

    checked = run({**args, "adopt": True}, check=True)
    assert checked.result["changed"] is True
    assert {(e["target"], e["action"], e.get("reason")) for e in checked.result["secrets"]} == {
        ("apps/other", "created", None),
        ("apps/taken", "updated", "adopted"),
    }
    assert tree(root) == before

    adopted = run({**args, "adopt": True})
    assert adopted.result["changed"] is True
    assert keys_of(hand_made) == {"password": taken["password"].encode()}
    assert metadata_of(hand_made)["labels"] == MANAGED
    assert mode(hand_made) == 0o700 and mode(hand_made / "password") == 0o600

    managed_now = run(args)
    assert managed_now.result["changed"] is False
    assert managed_now.actions == {"apps/other": "unchanged", "apps/taken": "unchanged"}


# ----------------------------------------------------------------------------------- selection


def test_selection_by_tags_prefix_and_names(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix, elsewhere = unique_prefix(), unique_prefix()
    team = "team-" + uuid.uuid4().hex[:6]
    create(aws, prefix + "x", {"v": secret_value()}, tags={"team": team, "tier": "db"})
    create(aws, prefix + "y", {"v": secret_value()}, tags={"team": team})
    create(aws, prefix + "z", {"v": secret_value()})
    other_arn = create(aws, elsewhere + "w", {"v": secret_value()}, tags={"team": team, "tier": "db"})
    root = tmp_path / "secrets"
    full = {name: name.lower().replace("/", "-") for name in (prefix + "x", prefix + "z", elsewhere + "w")}

    by_tags = run(directory_args(root, tags={"team": team, "tier": "db"}), check=True)
    assert by_tags.actions == {
        f"apps/{full[prefix + 'x']}": "created",
        f"apps/{full[elsewhere + 'w']}": "created",
    }
    assert by_tags.calls == Counter({"ListSecrets": 1, "GetSecretValue": 2})

    by_prefix_and_tag = run(directory_args(root, name_prefix=prefix, tags={"team": team}), check=True)
    assert by_prefix_and_tag.actions == {"apps/x": "created", "apps/y": "created"}

    # The prefix is stripped only from the names of the secrets that the prefix and tags select:
    # "z" is listed by name but has no tier tag, "w" is listed by ARN.
    mixed_args = directory_args(
        root, name_prefix=prefix, tags={"tier": "db"}, secrets=[other_arn, prefix + "z"]
    )
    mixed = run(mixed_args)
    assert mixed.actions == {
        f"apps/{full[elsewhere + 'w']}": "created",
        "apps/x": "created",
        f"apps/{full[prefix + 'z']}": "created",
    }
    assert mixed.calls == Counter({"ListSecrets": 1, "DescribeSecret": 2, "GetSecretValue": 3})
    assert sorted(path.name for path in (root / "apps").iterdir()) == sorted(
        [full[elsewhere + "w"], "x", full[prefix + "z"]]
    )
    again = run(mixed_args)
    assert again.result["changed"] is False
    assert again.calls == Counter({"ListSecrets": 1, "DescribeSecret": 2})


def test_nothing_selected_and_invalid_names_fail_before_writing(
    run: Runner, aws: Any, tmp_path: Path
) -> None:
    root = tmp_path / "secrets"
    nothing = run(directory_args(root), fails=True)
    assert nothing.result["msg"].startswith(
        "nothing selects a secret: give secrets (names or ARNs), name_prefix"
    )
    assert nothing.calls == Counter()

    prefix = unique_prefix()
    create(aws, prefix + "_private", {"v": secret_value()})
    create(aws, prefix + "fine", {"v": secret_value()})
    bad = run(directory_args(root, name_prefix=prefix), fails=True)
    assert bad.result["msg"] == (
        f"secret {prefix}_private: the derived Secret name '-private' is not valid (it must be a DNS-1123 "
        "subdomain: lower case letters, digits, '-' and '.', starting and ending with a letter or digit); "
        "set mappings[].name for it"
    )
    missing = run(directory_args(root, secrets=[prefix + "absent"]), fails=True)
    assert missing.result["msg"] == f"secrets: the secret {prefix}absent does not exist"
    assert not root.exists()

    named = run(
        directory_args(
            root, name_prefix=prefix, mappings=[{"source": prefix + "_private", "name": "private"}]
        )
    )
    assert named.actions == {"apps/fine": "created", "apps/private": "created"}


# ------------------------------------------------------------------- binary, plain and templates


def test_binary_and_plain_string_secrets(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    binary = b"\x00\x01\xfe\xff" + random.token_bytes(16)
    plain = secret_value()
    create(aws, prefix + "keystore", binary)
    create(aws, prefix + "token", plain)
    root = tmp_path / "secrets"
    args = directory_args(
        root, name_prefix=prefix, mappings=[{"source": prefix + "token", "key": "token.txt"}]
    )

    checked = run(args, check=True)
    assert checked.actions == {"apps/keystore": "created", "apps/token": "created"}
    assert not root.exists()
    created = run(args)
    assert created.result["changed"] is True
    assert keys_of(root / "apps" / "keystore") == {"value": binary}
    assert keys_of(root / "apps" / "token") == {"token.txt": plain.encode()}
    assert created.result["checksums"] == {
        "apps/keystore": checksum({"value": binary}),
        "apps/token": checksum({"token.txt": plain.encode()}),
    }
    assert run(args).result["changed"] is False
    assert run(args, check=True).result["changed"] is False


def test_fields_rename_templates_and_a_changed_mapping(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    value = {"username": "u_" + secret_value(4), "password": "p@ss/" + secret_value(), "host": "db.internal"}
    create(aws, prefix + "postgres", value)
    root = tmp_path / "secrets"
    mapping = {
        "source": prefix + "postgres",
        "name": "db",
        "fields": ["username", "password"],
        "rename": {"username": "user"},
        "templates": {
            "url": Unsafe("postgresql://{{ username }}:{{ password | urlencode }}@{{ host }}:5432/app")
        },
    }
    args = directory_args(root, name_prefix=prefix, mappings=[mapping])
    url = f"postgresql://{value['username']}:{value['password'].replace('@', '%40')}@db.internal:5432/app"
    expected = {
        "user": value["username"].encode(),
        "password": value["password"].encode(),
        "url": url.encode(),
    }

    assert run(args, check=True).actions == {"apps/db": "created"}
    created = run(args)
    assert created.actions == {"apps/db": "created"}
    assert keys_of(root / "apps" / "db") == expected
    assert run(args).result["changed"] is False

    # A changed mapping forces a re-read even though the source did not change.
    changed_args = directory_args(
        root, name_prefix=prefix, mappings=[{**mapping, "fields": ["username", "password", "host"]}]
    )
    checked = run(changed_args, check=True)
    assert checked.actions == {"apps/db": "updated"} and checked.calls["GetSecretValue"] == 1
    updated = run(changed_args)
    assert updated.actions == {"apps/db": "updated"}
    assert keys_of(root / "apps" / "db") == {**expected, "host": b"db.internal"}
    idle = run(changed_args)
    assert idle.result["changed"] is False and idle.calls["GetSecretValue"] == 0


@pytest.mark.parametrize(
    ("stored", "mapping", "message"),
    [
        (
            {"username": "u"},
            {"fields": ["username", "password"]},
            "secret {name}: field 'password' does not exist in the SecretString",
        ),
        (
            "not-json-{secret}",
            {"fields": ["password"]},
            "secret {name}: fields: field 'password' cannot be read: the SecretString is not a JSON object",
        ),
        (
            {"username": "u"},
            {"templates": {"url": Unsafe("{{ username }}:{{ pasword }}")}},
            "secret {name}: templates.url: 'pasword' is undefined (the template sees only the secret's fields)",
        ),
    ],
    ids=["missing-field", "not-json", "template-error"],
)
def test_malformed_source_fails_naming_it_and_writes_nothing(
    run: Runner, aws: Any, tmp_path: Path, stored: Any, mapping: dict, message: str
) -> None:
    prefix = unique_prefix()
    secret = secret_value()
    create(aws, prefix + "good", {"password": secret_value()})
    bad_value = stored.format(secret=secret) if isinstance(stored, str) else {**stored, "other": secret}
    create(aws, prefix + "bad", bad_value)
    root = tmp_path / "secrets"
    args = directory_args(root, name_prefix=prefix, mappings=[{"source": prefix + "bad", **mapping}])
    expected = message.format(name=prefix + "bad") + ". Nothing was written."
    for check in (True, False):
        failed = run(args, check=check, fails=True)
        assert failed.result["msg"] == expected
        assert failed.result["changed"] is False
        assert [(e["target"], e["action"]) for e in failed.result["secrets"]] == [
            ("apps/bad", "skipped"),
            ("apps/good", "skipped"),
        ]
        assert failed.result["secrets"][1]["reason"] == "not written: another secret of this task failed"
        assert secret not in failed.output
        assert not root.exists()


# ------------------------------------------------------------------------------------ no leaks


def test_no_value_in_verbose_output(run: Runner, aws: Any, tmp_path: Path) -> None:
    prefix = unique_prefix()
    json_secret = {"username": "user_" + secret_value(6), "password": secret_value(), "api": secret_value()}
    plain = secret_value()
    binary = random.token_hex(20).encode()
    create(aws, prefix + "json", json_secret)
    create(aws, prefix + "plain", plain)
    create(aws, prefix + "binary", binary)
    root = tmp_path / "secrets"
    hand_made = root / "apps" / "plain"
    hand_made.mkdir(parents=True)
    previous = secret_value()
    (hand_made / "value").write_text(previous)  # read from the target when adopting
    mapping = {
        "source": prefix + "json",
        "templates": {"url": Unsafe("https://{{ username }}:{{ password }}@api/{{ api }}")},
    }
    args = directory_args(root, name_prefix=prefix, adopt=True, mappings=[mapping])
    values = [*json_secret.values(), plain, binary.decode(), previous]
    values += [base64.b64encode(item.encode()).decode() for item in values]
    values.append(f"https://{json_secret['username']}:{json_secret['password']}@api/{json_secret['api']}")

    outputs = [run(args, check=True, diff=True, verbose=True), run(args, diff=True, verbose=True)]
    aws.put_secret_value(
        SecretId=prefix + "json", SecretString=json.dumps({**json_secret, "api": secret_value()})
    )
    outputs.append(run(args, diff=True, verbose=True))
    outputs.append(
        run({**args, "mappings": [{**mapping, "fields": ["missing"]}]}, diff=True, verbose=True, fails=True)
    )
    assert keys_of(root / "apps" / "plain") == {"value": plain.encode()}
    for output in outputs:
        assert "secrets_sync" in output.output and "apps/json" in output.output
        for value in values:
            assert value not in output.output


# ------------------------------------------------------------------------- the core, in-process


class CountingClient:
    """A boto3 client that counts the operations called on it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not callable(method) or name.startswith("_") or name in ("can_paginate", "get_paginator"):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def core(emulator: Emulator, tmp_path: Path) -> Iterator[Callable[..., tuple[dict, Counter[str]]]]:
    """Calls secrets_sync.sync() as main() does; returns the result and the calls it made."""
    defaults = {name: spec.get("default") for name, spec in secrets_sync.argument_spec().items()}

    def call(args: dict, check: bool = False) -> tuple[dict, Counter[str]]:
        counting = CountingClient(emulator.client("secretsmanager"))
        source = secrets_sync.SecretsManagerSource(
            RetryingBotoClientWrapper(counting, secrets_sync.retry_decorator())
        )
        params = {**defaults, **directory_args(tmp_path / "secrets"), **args}
        result = secrets_sync.sync(source, DirectoryTarget(params["directory"]), params, check)
        return result, counting.calls

    yield call


def test_core_reads_only_what_changed(core: Callable[..., tuple[dict, Counter[str]]], aws: Any) -> None:
    prefix = unique_prefix()
    for index in range(5):
        create(aws, f"{prefix}s{index}", {"v": secret_value()})
    args = {"name_prefix": prefix}

    result, calls = core(args)
    assert result["changed"] is True and len(result["checksums"]) == 5
    assert calls == Counter({"list_secrets": 1, "get_secret_value": 5})

    result, calls = core(args)
    assert result["changed"] is False
    assert calls == Counter({"list_secrets": 1})

    aws.put_secret_value(SecretId=f"{prefix}s3", SecretString=json.dumps({"v": secret_value()}))
    result, calls = core(args, check=True)
    assert calls == Counter({"list_secrets": 1, "get_secret_value": 1})
    result, calls = core(args)
    assert [entry["action"] for entry in result["secrets"]] == ["unchanged"] * 3 + ["updated", "unchanged"]
    assert calls == Counter({"list_secrets": 1, "get_secret_value": 1})

    # Names given explicitly: DescribeSecret tells the versions (and the names keep the prefix).
    named = {"secrets": [f"{prefix}s{index}" for index in range(5)], "namespace": "named"}
    result, calls = core(named)
    assert sorted(result["checksums"]) == [f"named/{prefix[:-1]}-s{index}" for index in range(5)]
    assert calls == Counter({"describe_secret": 5, "get_secret_value": 5})
    result, calls = core(named)
    assert result["changed"] is False
    assert calls == Counter({"describe_secret": 5})


def test_core_retries_throttled_calls(emulator: Emulator, tmp_path: Path, aws: Any) -> None:
    prefix = unique_prefix()
    arn = create(aws, prefix + "one", {"v": "1"})
    version = current_version(aws, prefix + "one")
    client = boto3.client(
        "secretsmanager",
        endpoint_url=emulator.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    throttled = {
        "service_error_code": "ThrottlingException",
        "service_message": "Rate exceeded",
        "http_status_code": 400,
    }
    entry = {"ARN": arn, "Name": prefix + "one", "SecretVersionsToStages": {version: ["AWSCURRENT"]}}
    with Stubber(client) as stub:
        stub.add_client_error("list_secrets", **throttled)
        stub.add_response("list_secrets", {"SecretList": [entry]})
        stub.add_client_error("get_secret_value", **throttled)
        stub.add_response(
            "get_secret_value",
            {"ARN": arn, "Name": prefix + "one", "VersionId": version, "SecretString": '{"v": "1"}'},
        )
        source = secrets_sync.SecretsManagerSource(
            RetryingBotoClientWrapper(client, secrets_sync.retry_decorator(delay=0.01))
        )
        defaults = {name: spec.get("default") for name, spec in secrets_sync.argument_spec().items()}
        params = {**defaults, **directory_args(tmp_path), "name_prefix": prefix}
        result = secrets_sync.sync(source, DirectoryTarget(str(tmp_path)), params, False)
        stub.assert_no_pending_responses()
    assert result["secrets"][0]["action"] == "created"
    assert (tmp_path / "apps" / "one" / "v").read_bytes() == b"1"

    with Stubber(client) as stub:
        stub.add_client_error(
            "list_secrets", service_error_code="AccessDeniedException", service_message="no"
        )
        source = secrets_sync.SecretsManagerSource(
            RetryingBotoClientWrapper(client, secrets_sync.retry_decorator())
        )
        with pytest.raises(
            SyncError, match=r"^ListSecrets failed for the selection: AccessDeniedException: no$"
        ):
            secrets_sync.sync(source, DirectoryTarget(str(tmp_path)), params, False)


def test_core_list_filters_respect_the_api_limits(emulator: Emulator, tmp_path: Path) -> None:
    """ListSecrets filters: the name prefix, and at most 10 tag keys of the filter alphabet."""
    client = emulator.client("secretsmanager")
    tags = {f"k{index:02d}": "v" for index in range(12)} | {"clé": "v"}
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:p/one-AbCdEf"
    listed = {"ARN": arn, "Name": "p/one", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    expected = {
        "MaxResults": 100,
        "Filters": [
            {"Key": "name", "Values": ["p/"]},
            {"Key": "tag-key", "Values": [f"k{index:02d}" for index in range(10)]},
        ],
    }
    with Stubber(client) as stub:
        stub.add_response("list_secrets", {"SecretList": [listed], "NextToken": "page-2"}, expected)
        stub.add_response("list_secrets", {"SecretList": []}, {**expected, "NextToken": "page-2"})
        source = secrets_sync.SecretsManagerSource(
            RetryingBotoClientWrapper(client, secrets_sync.retry_decorator())
        )
        selected = source.select(secrets_sync.make_selection([], "p/", tags))
        stub.assert_no_pending_responses()
    assert selected == [secrets_sync.Source("p/one", arn, None, filtered=True)]
    with Stubber(client) as stub:
        stub.add_response("list_secrets", {"SecretList": [{**listed, "Tags": listed["Tags"][:-1]}]}, expected)
        source = secrets_sync.SecretsManagerSource(
            RetryingBotoClientWrapper(client, secrets_sync.retry_decorator())
        )
        assert source.select(secrets_sync.make_selection([], "p/", tags)) == []  # "clé" checked here
