"""Shared by the tests of every role's render target: rendering one role, the synced secret files it
reads, loading, schema validation and policy."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import run_playbook

# The Kubernetes version of the pinned k3s release (roles/k3s), which kubernetes-validate ships a
# schema for.
KUBERNETES_VERSION = "1.33.0"

Rendered = list[tuple[Path, dict[str, Any]]]


def load_rendered(directory: Path) -> Rendered:
    """The objects of a render directory in file order: one object per file."""
    return [(path, yaml.safe_load(path.read_text())) for path in sorted(directory.glob("*.yaml"))]


def render_component(role: str, tmp_path: Path, extra: dict[str, Any]) -> Rendered:
    """Runs playbooks/platform.yml's render target for `role` alone, with `tmp_path` as the state
    directory, and returns the objects it wrote to `<tmp_path>/rendered`."""
    out = tmp_path / "rendered"
    run = run_playbook(
        "playbooks/platform.yml",
        tmp_path,
        {
            "tenantforge_platform_components": [role],
            "tenantforge_platform_target": "render",
            f"{role}_render_directory": str(out),
            **extra,
        },
    )
    run.assert_ok()
    return load_rendered(out)


def write_secret_files(state_dir: Path, secrets: dict[str, dict[str, str]]) -> None:
    """The synced secret files the roles read, as the secrets sync writes them: secret name -> {key:
    value} becomes `<state_dir>/secrets/tenantforge/<secret>/<key>`, 0600 in a 0700 directory."""
    for secret, keys in secrets.items():
        directory = state_dir / "secrets" / "tenantforge" / secret
        directory.mkdir(parents=True, mode=0o700)
        for key, value in keys.items():
            path = directory / key
            path.write_text(value)
            path.chmod(0o600)


def by_kind(objects: Rendered, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        obj for _, obj in objects if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, [obj["metadata"]["name"] for _, obj in objects]
    return found[0]


def validate_strictly(objects: Rendered) -> None:
    """Every object validates against the OpenAPI schema, unknown fields included."""
    for path, obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {error}")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def assert_pod_policy(workload: dict[str, Any], probes: bool = True) -> None:
    """Pinned images, resources, probes and a non-root, unprivileged security context."""
    pod = pod_spec(workload)
    name = workload["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"].get("runAsUser", 1) != 0, name
    for container in pod["containers"] + pod.get("initContainers", []):
        image = container["image"]
        tag = image.rsplit("/", 1)[-1]
        assert ("@sha256:" in image or ":" in tag) and not image.endswith(":latest"), image
        assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]
        if probes and container in pod["containers"]:
            assert container["readinessProbe"] and container["livenessProbe"], container["name"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert security.get("privileged", False) is False, container["name"]
        for variable in container.get("env", []):
            assert "value" not in variable or not any(
                word in variable["name"] for word in ("PASSWORD", "SECRET", "COOKIE", "TOKEN")
            ), variable["name"]


def selectors(objects: Rendered) -> list[dict[str, str]]:
    """The label selectors of the Services, workloads and PodDisruptionBudgets of a bundle."""
    kinds = ("Service", "StatefulSet", "Deployment", "DaemonSet", "PodDisruptionBudget")
    return [
        obj["spec"]["selector"].get("matchLabels", obj["spec"]["selector"])
        for _, obj in objects
        if obj["kind"] in kinds
    ]


def assert_selected_by_none(pod_owner: dict[str, Any], objects: Rendered) -> None:
    """No selector of the bundle matches the pods of `pod_owner` (a Job's pod is never a server)."""
    labels = pod_owner["spec"]["template"]["metadata"]["labels"]
    for selector in selectors(objects):
        assert not selector.items() <= labels.items(), selector


def assert_no_secret_in(objects: Rendered, secret_values: list[str]) -> None:
    """No Secret object, and none of the given values anywhere in the rendered files."""
    assert not [obj for _, obj in objects if obj["kind"] == "Secret"]
    for path, _ in objects:
        text = path.read_text()
        for value in secret_values:
            assert value not in text, path


def run_job_locally(
    job: dict[str, Any],
    config_maps: Rendered,
    secrets_root: Path,
    workdir: Path,
    overrides: dict[str, str],
    path: str,
) -> subprocess.CompletedProcess[str]:
    """Runs a rendered Job's one container on this machine as the kubelet would start it: its command,
    the ConfigMaps it mounts as files under `workdir` (its workingDir), its environment with every
    secretKeyRef read from the synced secret files (`<secrets_root>/<namespace>/<secret>/<key>`), and
    `overrides` for what differs here (the addresses of the cluster's Services). Nothing else of this
    process's environment is passed on, PATH aside."""
    namespace = job["metadata"]["namespace"]
    pod = pod_spec(job)
    (container,) = pod["containers"]
    maps = {obj["metadata"]["name"]: obj for _, obj in config_maps if obj["kind"] == "ConfigMap"}
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] != container["workingDir"]:
            continue
        source = volumes[mount["name"]]["configMap"]["name"]
        for key, value in maps[source]["data"].items():
            (workdir / key).write_text(value)
    env = {"PATH": path}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = (secrets_root / namespace / ref["name"] / ref["key"]).read_text()
    env.update(overrides)
    return subprocess.run(
        container["command"] + container.get("args", []),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
