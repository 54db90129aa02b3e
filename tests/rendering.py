"""Checks shared by the tests of every role's render target: loading, schema validation and policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

# The Kubernetes version of the pinned k3s release (roles/k3s), which kubernetes-validate ships a
# schema for.
KUBERNETES_VERSION = "1.33.0"

Rendered = list[tuple[Path, dict[str, Any]]]


def load_rendered(directory: Path) -> Rendered:
    """The objects of a render directory in file order: one object per file."""
    return [(path, yaml.safe_load(path.read_text())) for path in sorted(directory.glob("*.yaml"))]


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


def assert_no_secret_in(objects: Rendered, secret_values: list[str]) -> None:
    """No Secret object, and none of the given values anywhere in the rendered files."""
    assert not [obj for _, obj in objects if obj["kind"] == "Secret"]
    for path, _ in objects:
        text = path.read_text()
        for value in secret_values:
            assert value not in text, path
