"""The two targets of secrets_sync.

Directory target: real files under tmp_path (modes, atomic replacement, removal of vanished keys,
managed/unmanaged detection), driven through the shared planner.

Kubernetes target: no API server can run here, so
* the Secret bodies are checked against the Kubernetes v1 Secret JSON schema offline, with
  ``kubernetes-validate`` (strict schemas of 1.31 and of the newest release it ships);
* the target class is driven against ``RecordingCoreV1Api``, a fake that only records which
  CoreV1Api methods are called with which namespace, name and body, and answers reads from a dict.
  It has no API server semantics: those tests check the call sequence, nothing more;
* the client configuration is built from kubeconfig files and dicts.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException

from ansible_collections.tenantforge.platform.plugins.module_utils import secrets_sync as ss
from ansible_collections.tenantforge.platform.plugins.module_utils import secrets_sync_targets as targets

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/postgres/app-AbCdEf"
OLD_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/old-GhIjKl"
SCHEMA_VERSIONS = ["1.31", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())]


def spec(
    name: str = "postgres-app", namespace: str = "apps", arn: str = ARN, version: str = "v1", **kw: Any
) -> ss.TargetSpec:
    source = ss.Source(name=ss.source_name_from_arn(arn), arn=arn, version_id=version, filtered=True)
    return ss.TargetSpec(source=source, namespace=namespace, name=name, **kw)


def desired(data: dict[str, bytes], **kw: Any) -> ss.Desired:
    return ss.Desired(spec(**kw), data)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


DATA = {"username": b"app_user", "password": b"pw-Lr4Vt9Xc2Bn6", "ca.crt": b"\x00\x01binary"}


# ---------------------------------------------------------------------------------- directory


def sync_directory(target: targets.DirectoryTarget, wanted: list[ss.Desired], **kw: Any) -> ss.Plan:
    """One run: read, plan, apply (what the module does around the planner)."""
    refs = [(item.spec.namespace, item.spec.name) for item in wanted]
    namespaces = kw.pop("namespaces", sorted({ns for ns, _ in refs}))
    current = target.read(refs, namespaces)
    result = ss.plan(wanted, current, namespaces=namespaces, **kw)
    if not result.failures:
        target.apply(result.writes)
    return result


def test_directory_create_layout_modes_and_metadata(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    target = targets.DirectoryTarget(str(root))
    result = sync_directory(target, [desired(DATA)])
    assert [step.action for step in result.steps] == ["created"]

    secret_dir = root / "apps" / "postgres-app"
    assert sorted(os.listdir(secret_dir)) == ["..metadata.json", "ca.crt", "password", "username"]
    assert mode(root) == 0o700 and mode(root / "apps") == 0o700 and mode(secret_dir) == 0o700
    for key, value in DATA.items():
        assert (secret_dir / key).read_bytes() == value
        assert mode(secret_dir / key) == 0o600
    assert mode(secret_dir / "..metadata.json") == 0o600
    metadata = json.loads((secret_dir / "..metadata.json").read_text())
    assert metadata == {
        "type": "Opaque",
        "labels": {"app.kubernetes.io/managed-by": "tenantforge"},
        "annotations": {
            "tenantforge.io/source-arn": ARN,
            "tenantforge.io/source-version-id": "v1",
            "tenantforge.io/content-hash": ss.content_hash(DATA),
            "tenantforge.io/mapping-hash": spec().mapping_hash,
        },
    }
    text = (secret_dir / "..metadata.json").read_text()
    assert "pw-Lr4Vt9Xc2Bn6" not in text and "app_user" not in text


def test_directory_read_back_is_up_to_date_and_second_run_unchanged(tmp_path: Path) -> None:
    target = targets.DirectoryTarget(str(tmp_path))
    sync_directory(target, [desired(DATA)])
    current = target.read([("apps", "postgres-app")], ["apps"])
    found = current["apps/postgres-app"]
    assert found.managed is True and found.intact is True
    assert found.data == DATA and found.type == "Opaque"
    assert ss.up_to_date(spec(), found) is True
    again = sync_directory(target, [ss.Desired(spec())])
    assert [step.action for step in again.steps] == ["unchanged"] and again.changed is False


def test_directory_update_replaces_files_atomically_and_removes_vanished_keys(tmp_path: Path) -> None:
    target = targets.DirectoryTarget(str(tmp_path))
    sync_directory(target, [desired(DATA)])
    secret_dir = tmp_path / "apps" / "postgres-app"
    before_inode = (secret_dir / "password").stat().st_ino
    reader = (secret_dir / "password").open("rb")  # a workload holding the old file open

    new = {"username": b"app_user", "password": b"pw-rotated-7Yy"}
    result = sync_directory(target, [desired(new, version="v2")])
    assert [step.action for step in result.steps] == ["updated"]
    assert sorted(os.listdir(secret_dir)) == ["..metadata.json", "password", "username"]
    assert (secret_dir / "password").read_bytes() == b"pw-rotated-7Yy"
    # os.replace put a new file in place: the open handle still reads the complete old content
    assert (secret_dir / "password").stat().st_ino != before_inode
    assert reader.read() == b"pw-Lr4Vt9Xc2Bn6"
    reader.close()
    assert mode(secret_dir / "password") == 0o600
    metadata = json.loads((secret_dir / "..metadata.json").read_text())
    assert metadata["annotations"]["tenantforge.io/source-version-id"] == "v2"
    assert metadata["annotations"]["tenantforge.io/content-hash"] == ss.content_hash(new)


def test_write_atomically_failure_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_bytes(b"old")

    def failing_replace(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(targets.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        targets.write_atomically(str(tmp_path), "password", b"new")
    assert os.listdir(tmp_path) == ["password"]
    assert (tmp_path / "password").read_bytes() == b"old"


def test_directory_drift_is_repaired(tmp_path: Path) -> None:
    target = targets.DirectoryTarget(str(tmp_path))
    sync_directory(target, [desired(DATA)])
    secret_dir = tmp_path / "apps" / "postgres-app"

    (secret_dir / "password").chmod(0o644)
    (secret_dir / "..tmp-leftover").write_bytes(b"half")
    found = target.read([("apps", "postgres-app")], ["apps"])["apps/postgres-app"]
    assert found.intact is False and ss.up_to_date(spec(), found) is False
    result = sync_directory(target, [desired(DATA)])
    assert [step.action for step in result.steps] == ["updated"]
    assert mode(secret_dir / "password") == 0o600
    assert "..tmp-leftover" not in os.listdir(secret_dir)

    (secret_dir / "password").write_bytes(b"edited by hand")  # content drift: hash no longer matches
    found = target.read([("apps", "postgres-app")], ["apps"])["apps/postgres-app"]
    assert ss.up_to_date(spec(), found) is False
    sync_directory(target, [desired(DATA)])
    assert (secret_dir / "password").read_bytes() == DATA["password"]


def test_directory_unmanaged_is_refused_then_adopted(tmp_path: Path) -> None:
    secret_dir = tmp_path / "apps" / "postgres-app"
    secret_dir.mkdir(parents=True)
    (secret_dir / "password").write_bytes(b"hand-made")
    (secret_dir / "notes.txt").write_bytes(b"keep me?")
    target = targets.DirectoryTarget(str(tmp_path))

    found = target.read([("apps", "postgres-app")], ["apps"])["apps/postgres-app"]
    assert found.managed is False and found.data == {"password": b"hand-made", "notes.txt": b"keep me?"}
    refused = sync_directory(target, [desired(DATA)])
    assert [step.action for step in refused.steps] == ["skipped"] and refused.failures
    assert sorted(os.listdir(secret_dir)) == ["notes.txt", "password"]

    adopted = sync_directory(target, [desired(DATA)], adopt=True)
    assert [(step.action, step.reason) for step in adopted.steps] == [("updated", "adopted")]
    assert sorted(os.listdir(secret_dir)) == ["..metadata.json", "ca.crt", "password", "username"]
    assert mode(secret_dir) == 0o700


def test_directory_read_lists_managed_for_pruning_and_only_wanted_unmanaged(tmp_path: Path) -> None:
    target = targets.DirectoryTarget(str(tmp_path))
    sync_directory(target, [desired(DATA), desired({"a": b"1"}, name="old", arn=OLD_ARN)])
    (tmp_path / "apps" / "hand-made").mkdir()
    (tmp_path / "apps" / "a-file").write_bytes(b"not a Secret")
    current = target.read([("apps", "postgres-app")], ["apps"])
    assert sorted(current) == ["apps/old", "apps/postgres-app"]

    result = sync_directory(target, [ss.Desired(spec())], prune=True, namespaces=["apps"], gone={OLD_ARN})
    assert [(step.action, step.ref, step.reason) for step in result.steps] == [
        ("unchanged", "apps/postgres-app", None),
        ("pruned", "apps/old", "the source secret no longer exists"),
    ]
    assert sorted(os.listdir(tmp_path / "apps")) == ["a-file", "hand-made", "postgres-app"]


def test_directory_refuses_a_file_or_symlink_in_place_of_a_secret(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "apps" / "postgres-app").symlink_to(elsewhere)
    target = targets.DirectoryTarget(str(tmp_path))
    with pytest.raises(targets.TargetError, match=r"postgres-app exists and is not a directory"):
        target.read([("apps", "postgres-app")], ["apps"])
    step = ss.plan([desired(DATA)], {}).steps[0]
    with pytest.raises(targets.TargetError, match=r"is a symbolic link; refusing to write"):
        target.apply([step])
    assert os.listdir(elsewhere) == []


def test_directory_apply_reports_what_was_done_before_a_failure(tmp_path: Path) -> None:
    target = targets.DirectoryTarget(str(tmp_path))
    steps = ss.plan([desired(DATA, name="first"), desired(DATA, name="second")], {}).writes
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "second").symlink_to(tmp_path)
    with pytest.raises(targets.TargetError) as raised:
        target.apply(steps)
    assert raised.value.done == ["apps/first"]


# ------------------------------------------------------------------------------ Kubernetes bodies


def k8s_secret(**kw: Any) -> ss.TargetSecret:
    return ss.desired_secret(spec(**kw), DATA, None)


EXPECTED_BODY: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {
        "name": "postgres-app",
        "namespace": "apps",
        "labels": {"app.kubernetes.io/managed-by": "tenantforge"},
        "annotations": {
            "tenantforge.io/source-arn": ARN,
            "tenantforge.io/source-version-id": "v1",
            "tenantforge.io/content-hash": ss.content_hash(DATA),
            "tenantforge.io/mapping-hash": spec().mapping_hash,
        },
    },
    "type": "Opaque",
    "data": {"ca.crt": "AAFiaW5hcnk=", "password": "cHctTHI0VnQ5WGMyQm42", "username": "YXBwX3VzZXI="},
}


def test_secret_body() -> None:
    assert targets.secret_body(k8s_secret()) == EXPECTED_BODY
    with_revision = k8s_secret()
    with_revision.revision = "4711"
    assert targets.secret_body(with_revision)["metadata"]["resourceVersion"] == "4711"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_secret_bodies_match_the_kubernetes_schema(version: str) -> None:
    tls = ss.desired_secret(spec(type="kubernetes.io/tls"), {"tls.crt": b"CERT", "tls.key": b"KEY"}, None)
    with_revision = k8s_secret()
    with_revision.revision = "12"
    for secret in (k8s_secret(), tls, with_revision):
        assert kubernetes_validate.validate(targets.secret_body(secret), version, strict=True) == version


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_the_schema_check_rejects_a_malformed_body(version: str) -> None:
    broken = json.loads(json.dumps(EXPECTED_BODY))
    broken["metadata"]["labels"]["count"] = 3  # label values are strings
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = json.loads(json.dumps(EXPECTED_BODY))
    broken["stringdata"] = {}  # not a field of a Secret (strict schema)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_secret_from_object_reads_back_a_body() -> None:
    obj = {**EXPECTED_BODY, "metadata": {**EXPECTED_BODY["metadata"], "resourceVersion": "99"}}
    secret = targets.secret_from_object(obj)
    assert (secret.namespace, secret.name, secret.type, secret.revision) == (
        "apps",
        "postgres-app",
        "Opaque",
        "99",
    )
    assert secret.data == DATA
    assert secret.managed is True
    assert ss.up_to_date(spec(), secret) is True
    with pytest.raises(targets.TargetError, match=r"Secret apps/x: key k is not base64"):
        targets.secret_from_object({"metadata": {"name": "x", "namespace": "apps"}, "data": {"k": "%%%"}})


# ------------------------------------------------------------------- Kubernetes call sequence (fake)


class RecordingCoreV1Api:
    """Records the CoreV1Api calls the target makes; reads are answered from ``stored``.

    Not an API server: no validation, no versions, no admission. Only for the call sequence.
    """

    def __init__(
        self, stored: dict[str, dict] | None = None, fail: dict[str, ApiException] | None = None
    ) -> None:
        self.stored = stored or {}
        self.fail = fail or {}
        self.calls: list[tuple] = []

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def list_namespaced_secret(self, namespace: str, label_selector: str | None = None) -> dict:
        self.calls.append(("list", namespace, label_selector))
        self._maybe_fail("list")
        key, value = (label_selector or "=").split("=", 1)
        items = [
            obj
            for ref, obj in sorted(self.stored.items())
            if ref.startswith(namespace + "/") and obj["metadata"].get("labels", {}).get(key) == value
        ]
        return {"items": items}

    def read_namespaced_secret(self, name: str, namespace: str) -> dict:
        self.calls.append(("read", namespace, name))
        self._maybe_fail("read")
        if f"{namespace}/{name}" not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        return self.stored[f"{namespace}/{name}"]

    def create_namespaced_secret(self, namespace: str, body: dict) -> dict:
        self.calls.append(("create", namespace, body["metadata"]["name"], body))
        self._maybe_fail("create")
        return body

    def replace_namespaced_secret(self, name: str, namespace: str, body: dict) -> dict:
        self.calls.append(("replace", namespace, name, body))
        return body

    def delete_namespaced_secret(self, name: str, namespace: str, body: dict | None = None) -> dict:
        self.calls.append(("delete", namespace, name, body))
        return {}


def stored_object(secret: ss.TargetSecret, revision: str) -> dict:
    body = targets.secret_body(secret)
    body["metadata"]["resourceVersion"] = revision
    return body


def test_fake_api_call_sequence_for_read() -> None:
    managed = stored_object(k8s_secret(name="managed"), "5")
    foreign = stored_object(ss.TargetSecret(namespace="apps", name="foreign", data={"k": b"v"}), "6")
    api = RecordingCoreV1Api({"apps/managed": managed, "apps/foreign": foreign})
    found = targets.KubernetesTarget(api).read(
        [("apps", "managed"), ("apps", "foreign"), ("apps", "missing"), ("data", "db")], ["apps", "data"]
    )
    assert api.calls == [
        ("list", "apps", "app.kubernetes.io/managed-by=tenantforge"),
        ("list", "data", "app.kubernetes.io/managed-by=tenantforge"),
        ("read", "apps", "foreign"),
        ("read", "apps", "missing"),
        ("read", "data", "db"),
    ]
    assert sorted(found) == ["apps/foreign", "apps/managed"]
    assert found["apps/managed"].managed is True and found["apps/managed"].revision == "5"
    assert found["apps/foreign"].managed is False and found["apps/foreign"].data == {"k": b"v"}


def test_fake_api_call_sequence_for_create_update_type_change_and_prune() -> None:
    old_update = k8s_secret(name="update")
    old_retype = k8s_secret(name="retype")
    old_gone = ss.desired_secret(spec(name="gone", arn=OLD_ARN), {"a": b"1"}, None)
    api = RecordingCoreV1Api(
        {
            "apps/update": stored_object(old_update, "10"),
            "apps/retype": stored_object(old_retype, "11"),
            "apps/gone": stored_object(old_gone, "12"),
        }
    )
    target = targets.KubernetesTarget(api)
    wanted = [
        desired(DATA, name="create"),
        desired({**DATA, "password": b"new"}, name="update", version="v2"),
        desired({"username": b"u", "password": b"p"}, name="retype", type="kubernetes.io/basic-auth"),
    ]
    refs = [(item.spec.namespace, item.spec.name) for item in wanted]
    current = target.read(refs, ["apps"])
    result = ss.plan(wanted, current, prune=True, namespaces=["apps"])
    assert [(step.action, step.ref) for step in result.steps] == [
        ("created", "apps/create"),
        ("updated", "apps/retype"),
        ("updated", "apps/update"),
        ("pruned", "apps/gone"),
    ]
    api.calls.clear()
    assert target.apply(result.writes) == ["apps/create", "apps/retype", "apps/update", "apps/gone"]

    sent = [(call[0], call[1], call[2]) for call in api.calls]
    assert sent == [
        ("create", "apps", "create"),
        ("delete", "apps", "retype"),  # the type is immutable: delete, then create
        ("create", "apps", "retype"),
        ("replace", "apps", "update"),
        ("delete", "apps", "gone"),
    ]
    bodies = {(call[0], call[2]): call[3] for call in api.calls}
    assert bodies[("delete", "retype")] == {"preconditions": {"resourceVersion": "11"}}
    assert "resourceVersion" not in bodies[("create", "retype")]["metadata"]
    assert bodies[("create", "retype")]["type"] == "kubernetes.io/basic-auth"
    assert bodies[("replace", "update")]["metadata"]["resourceVersion"] == "10"
    assert bodies[("replace", "update")]["data"]["password"] == base64.b64encode(b"new").decode()
    assert bodies[("delete", "gone")] == {"preconditions": {"resourceVersion": "12"}}
    assert bodies[("create", "create")] == EXPECTED_BODY | {
        "metadata": {
            **EXPECTED_BODY["metadata"],
            "name": "create",
            "annotations": {
                **EXPECTED_BODY["metadata"]["annotations"],
                "tenantforge.io/mapping-hash": spec(name="create").mapping_hash,
            },
        },
    }
    for (verb, _), body in bodies.items():
        if verb != "delete":
            kubernetes_validate.validate(body, SCHEMA_VERSIONS[-1], strict=True)


def test_fake_api_errors_become_target_errors_without_values() -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"message": 'secrets is forbidden: User "ci" cannot list resource "secrets"'})
    api = RecordingCoreV1Api(fail={"list": forbidden})
    with pytest.raises(targets.TargetError) as raised:
        targets.KubernetesTarget(api).read([], ["apps"])
    assert str(raised.value) == (
        'listing Secrets in namespace apps: 403 Forbidden: secrets is forbidden: User "ci" cannot list '
        'resource "secrets"'
    )
    api = RecordingCoreV1Api(fail={"create": ApiException(status=404, reason="Not Found")})
    steps = ss.plan([desired(DATA, name="a"), desired(DATA, name="b")], {}).writes
    with pytest.raises(targets.TargetError) as raised:
        targets.KubernetesTarget(api).apply(steps)
    assert str(raised.value) == "writing Secret apps/a: 404 Not Found"
    assert raised.value.done == []


# ----------------------------------------------------------------------- Kubernetes configuration


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "first",
    "clusters": [
        {"name": "one", "cluster": {"server": "https://one.example.invalid:6443"}},
        {
            "name": "two",
            "cluster": {"server": "https://two.example.invalid:6443", "insecure-skip-tls-verify": True},
        },
    ],
    "users": [
        {"name": "alice", "user": {"token": "token-of-alice"}},
        {"name": "bob", "user": {"token": "token-of-bob"}},
    ],
    "contexts": [
        {"name": "first", "context": {"cluster": "one", "user": "alice"}},
        {"name": "second", "context": {"cluster": "two", "user": "bob"}},
    ],
}


def bearer(configuration: Any) -> str:
    """The Authorization header the client would send."""
    return str(configuration.auth_settings()["BearerToken"]["value"])


def test_configuration_from_kubeconfig_dict_and_context() -> None:
    first = targets.kubernetes_configuration({"kubeconfig": KUBECONFIG})
    assert first.host == "https://one.example.invalid:6443"
    assert bearer(first) == "Bearer token-of-alice"
    second = targets.kubernetes_configuration({"kubeconfig": KUBECONFIG, "context": "second"})
    assert second.host == "https://two.example.invalid:6443"
    assert bearer(second) == "Bearer token-of-bob"
    assert second.verify_ssl is False


def test_configuration_from_kubeconfig_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(KUBECONFIG))
    ca = tmp_path / "ca.crt"
    ca.write_text("not read until a connection is made")
    configuration = targets.kubernetes_configuration(
        {
            "kubeconfig": str(path),
            "context": "second",
            "host": "https://override.example.invalid/",
            "api_key": "explicit-token",
            "validate_certs": True,
            "ca_cert": str(ca),
        }
    )
    assert configuration.host == "https://override.example.invalid"
    assert bearer(configuration) == "Bearer explicit-token"
    assert configuration.verify_ssl is True
    assert configuration.ssl_ca_cert == str(ca)


def test_configuration_from_host_and_token_reads_no_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    configuration = targets.kubernetes_configuration(
        {"host": "https://k3s.example.invalid:6443", "api_key": "t", "validate_certs": False}
    )
    assert (configuration.host, bearer(configuration), configuration.verify_ssl) == (
        "https://k3s.example.invalid:6443",
        "Bearer t",
        False,
    )
    with pytest.raises(targets.TargetError, match=r"^cannot configure the Kubernetes client: "):
        targets.core_v1_api({"kubeconfig": KUBECONFIG, "context": "third"})
