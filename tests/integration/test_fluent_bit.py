"""The fluent_bit role: its Kubernetes objects (render target) and the configuration the local target
writes and checks. The kubernetes target needs an API server, which cannot run here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, PlaybookRun, run_playbook
from rendering import (
    Rendered,
    assert_no_secret_in,
    by_kind,
    load_rendered,
    pod_spec,
    render_component,
    validate_strictly,
)

from ansible_collections.tenantforge.platform.plugins.filter.fluent_bit import fluent_bit_problems

pytestmark = pytest.mark.integration

PLAYBOOK = "playbooks/platform.yml"
# This module tests the fluent_bit role alone.
ONLY_FLUENT_BIT = {"tenantforge_platform_components": ["fluent_bit"]}
IMAGE = "cr.fluentbit.io/fluent/fluent-bit:4.2.3"
# The short log group names the AWS layer creates (roles/aws_logs), read from that role so that the
# expectations below are checked against it too.
AWS_LOGS_GROUPS = yaml.safe_load((REPO / "roles" / "aws_logs" / "defaults" / "main.yml").read_text())[
    "aws_logs_groups"
]

NON_DEFAULT: dict[str, Any] = {
    "tenantforge_environment": "staging",
    # A third group in the AWS layer, for the journal alone.
    "aws_logs_groups": ["cluster", "platform", "k3s"],
    "fluent_bit_journal_log_group": "k3s",
    "fluent_bit_namespace": "platform-logs",
    "fluent_bit_platform_namespaces": ["tenantforge", "tenantforge-jobs"],
    # The AWS layer's region, which fluent_bit_aws_region follows.
    "tenantforge_aws_region": "eu-west-1",
    "fluent_bit_log_stream_prefix": "nodes/",
    "fluent_bit_host_network": True,
    "fluent_bit_http_port": 2021,
    "fluent_bit_state_host_path": "/srv/fluent-bit",
    "fluent_bit_resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "fluent_bit_tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    ],
}

# What each variant must produce, written out.
EXPECTED: dict[str, dict[str, Any]] = {
    "defaults": {
        "namespace": "tenantforge",
        "cluster_name": "tenantforge-fluent-bit",
        "region": "us-east-1",
        "groups": {
            "platform": "/tenantforge/local/platform",
            "cluster": "/tenantforge/local/cluster",
            "journal": "/tenantforge/local/cluster",
        },
        "aws_groups": ["/tenantforge/local/cluster", "/tenantforge/local/platform"],
        "stream_prefix": "tenantforge-local.",
        "rule": "$kubernetes['namespace_name'] ^(tenantforge)$ platform.$TAG false",
        "host_network": False,
        "dns_policy": "ClusterFirst",
        "port": 2020,
        "state": "/var/lib/tenantforge/fluent-bit",
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "tolerations": [{"operator": "Exists"}],
    },
    "non-default": {
        "namespace": "platform-logs",
        "cluster_name": "platform-logs-fluent-bit",
        "region": "eu-west-1",
        "groups": {
            "platform": "/tenantforge/staging/platform",
            "cluster": "/tenantforge/staging/cluster",
            "journal": "/tenantforge/staging/k3s",
        },
        "aws_groups": [
            "/tenantforge/staging/cluster",
            "/tenantforge/staging/platform",
            "/tenantforge/staging/k3s",
        ],
        "stream_prefix": "nodes/",
        "rule": "$kubernetes['namespace_name'] ^(tenantforge|tenantforge-jobs)$ platform.$TAG false",
        "host_network": True,
        "dns_policy": "ClusterFirstWithHostNet",
        "port": 2021,
        "state": "/srv/fluent-bit",
        "resources": NON_DEFAULT["fluent_bit_resources"],
        "tolerations": NON_DEFAULT["fluent_bit_tolerations"],
    },
}


@pytest.fixture(scope="module")
def render_variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Rendered]:
    """Each variant rendered once for the whole module."""
    cache: dict[str, Rendered] = {}

    def rendered_variant(variant: str) -> Rendered:
        if variant not in cache:
            state_dir = tmp_path_factory.mktemp(f"fluent-bit-{variant}")
            cache[variant] = render_component(
                "fluent_bit", state_dir, {} if variant == "defaults" else NON_DEFAULT
            )
        return cache[variant]

    return rendered_variant


@pytest.fixture(scope="module", params=["defaults", "non-default"])
def rendered(request: pytest.FixtureRequest, render_variant: Callable[[str], Rendered]):
    return EXPECTED[request.param], render_variant(request.param)


def configuration(objects: Rendered) -> dict[str, Any]:
    text = by_kind(objects, "ConfigMap")["data"]["fluent-bit.yaml"]
    return yaml.safe_load(text)


def plugins(config: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The pipeline's inputs, filters or outputs by alias."""
    return {section["alias"]: section for section in config["pipeline"][kind]}


def container(objects: Rendered) -> dict[str, Any]:
    (only,) = pod_spec(by_kind(objects, "DaemonSet"))["containers"]
    return only


# --- render target ---------------------------------------------------------------------------------


def test_render_writes_one_file_per_object(rendered) -> None:
    expected, objects = rendered
    cluster_name = expected["cluster_name"]
    assert [path.name for path, _ in objects] == [
        "00-serviceaccount-fluent-bit.yaml",
        f"01-clusterrole-{cluster_name}.yaml",
        f"02-clusterrolebinding-{cluster_name}.yaml",
        "03-configmap-fluent-bit-config.yaml",
        "04-daemonset-fluent-bit.yaml",
    ]
    namespaced = [obj for _, obj in objects if obj["kind"] in {"ServiceAccount", "ConfigMap", "DaemonSet"}]
    assert {obj["metadata"]["namespace"] for obj in namespaced} == {expected["namespace"]}


def test_rendered_objects_validate_strictly(rendered) -> None:
    _, objects = rendered
    validate_strictly(objects)


def test_rbac_is_read_only_on_pods_and_namespaces(rendered) -> None:
    expected, objects = rendered
    role = by_kind(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": expected["cluster_name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fluent-bit", "namespace": expected["namespace"]}
    ]
    assert pod_spec(by_kind(objects, "DaemonSet"))["serviceAccountName"] == "fluent-bit"


def test_outputs_write_to_the_aws_layers_log_groups_only(rendered) -> None:
    expected, objects = rendered
    outputs = plugins(configuration(objects), "outputs")
    assert {alias: section["log_group_name"] for alias, section in outputs.items()} == expected["groups"]
    assert {alias: section["match"] for alias, section in outputs.items()} == {
        "platform": "platform.*",
        "cluster": "kube.*",
        "journal": "k3s.*",
    }
    for section in outputs.values():
        assert section["name"] == "cloudwatch_logs"
        assert section["auto_create_group"] == "off"
        assert section["region"] == expected["region"]
        assert section["log_stream_prefix"] == expected["stream_prefix"]
        assert "log_group_template" not in section and "log_stream_name" not in section


def test_default_log_groups_are_the_aws_logs_role_defaults() -> None:
    assert (
        sorted(f"/tenantforge/local/{name}" for name in AWS_LOGS_GROUPS) == EXPECTED["defaults"]["aws_groups"]
    )


def test_inputs_and_filters(rendered) -> None:
    expected, objects = rendered
    config = configuration(objects)
    inputs = plugins(config, "inputs")
    assert inputs["containers"]["name"] == "tail"
    assert inputs["containers"]["path"] == "/var/log/containers/*.log"
    assert inputs["containers"]["multiline.parser"] == "cri"
    assert inputs["containers"]["tag"] == "kube.*"
    assert inputs["k3s-journal"]["name"] == "systemd"
    assert inputs["k3s-journal"]["systemd_filter"] == "_SYSTEMD_UNIT=k3s.service"
    assert inputs["k3s-journal"]["tag"] == "k3s.${NODE_NAME}"
    filters = plugins(config, "filters")
    assert [section["name"] for section in config["pipeline"]["filters"]] == ["kubernetes", "rewrite_tag"]
    assert filters["kubernetes-metadata"]["match"] == "kube.*"
    assert filters["kubernetes-metadata"]["kube_tag_prefix"] == "kube.var.log.containers."
    assert filters["platform-namespaces"]["rule"] == expected["rule"]
    assert config["service"]["http_server"] == "on" and config["service"]["health_check"] == "on"
    assert config["service"]["http_port"] == str(expected["port"])


def test_the_configuration_passes_the_check(rendered) -> None:
    expected, objects = rendered
    text = by_kind(objects, "ConfigMap")["data"]["fluent-bit.yaml"]
    env = [variable["name"] for variable in container(objects)["env"]]
    assert (
        fluent_bit_problems(
            text, log_groups=expected["aws_groups"], environment=env, http_port=expected["port"]
        )
        == []
    )
    # The same text is refused for a layer without the journal's group, or without NODE_NAME.
    assert fluent_bit_problems(
        text, log_groups=expected["aws_groups"][:1], environment=env, http_port=expected["port"]
    )
    assert fluent_bit_problems(
        text, log_groups=expected["aws_groups"], environment=[], http_port=expected["port"]
    )


def test_no_credentials_anywhere(rendered) -> None:
    _, objects = rendered
    assert_no_secret_in(
        objects, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "aws_access_key"]
    )
    for path, _ in objects:
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", path.read_text()), path
    pod = pod_spec(by_kind(objects, "DaemonSet"))
    # Credentials come from the instance profile through IMDSv2: the pod gets the node name only.
    assert container(objects)["env"] == [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert "envFrom" not in container(objects)
    assert not [volume for volume in pod["volumes"] if "secret" in volume or "projected" in volume]
    for section in plugins(configuration(objects), "outputs").values():
        assert not {"role_arn", "profile", "external_id", "endpoint"} & set(section)


def test_security_context_is_root_without_capabilities(rendered) -> None:
    # Not tests/rendering.py's assert_pod_policy: that demands non-root, and this pod reads root's
    # 0640 log and journal files and writes its position databases in a root-owned hostPath
    # directory (see the DaemonSet template). What it asserts instead, exactly: root, no capability
    # at all (not even DAC_READ_SEARCH), no privilege escalation, read-only root file system.
    _, objects = rendered
    pod = pod_spec(by_kind(objects, "DaemonSet"))
    assert pod["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(objects)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": False,
        "runAsUser": 0,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "initContainers" not in pod
    assert "hostPID" not in pod and "hostIPC" not in pod


def test_image_resources_and_probes(rendered) -> None:
    expected, objects = rendered
    main = container(objects)
    assert main["image"] == IMAGE
    assert main["resources"] == expected["resources"]
    assert main["ports"] == [{"name": "http", "containerPort": expected["port"], "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/api/v1/health", "port": "http"}
    assert main["args"] == ["-c", "/fluent-bit/etc/tenantforge/fluent-bit.yaml"]


def test_host_paths(rendered) -> None:
    expected, objects = rendered
    pod = pod_spec(by_kind(objects, "DaemonSet"))
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert {name: volume.get("hostPath") for name, volume in volumes.items()} == {
        "config": None,
        "varlog": {"path": "/var/log", "type": "Directory"},
        "run-journal": {"path": "/run/log/journal", "type": "DirectoryOrCreate"},
        "machine-id": {"path": "/etc/machine-id", "type": "File"},
        "state": {"path": expected["state"], "type": "DirectoryOrCreate"},
    }
    mounts = {
        mount["name"]: (mount["mountPath"], mount.get("readOnly", False))
        for mount in container(objects)["volumeMounts"]
    }
    assert mounts == {
        "config": ("/fluent-bit/etc/tenantforge", True),
        "varlog": ("/var/log", True),
        "run-journal": ("/run/log/journal", True),
        "machine-id": ("/etc/machine-id", True),
        # The only writable one: the position databases.
        "state": ("/var/lib/fluent-bit", False),
    }
    inputs = plugins(configuration(objects), "inputs")
    assert inputs["containers"]["db"] == "/var/lib/fluent-bit/containers.db"
    assert inputs["k3s-journal"]["db"] == "/var/lib/fluent-bit/journal.db"


def test_scheduling_and_network(rendered) -> None:
    expected, objects = rendered
    pod = pod_spec(by_kind(objects, "DaemonSet"))
    assert pod["tolerations"] == expected["tolerations"]
    assert pod["hostNetwork"] is expected["host_network"]
    assert pod["dnsPolicy"] == expected["dns_policy"]
    assert pod["automountServiceAccountToken"] is True


def test_a_changed_configuration_rolls_the_pods(
    tmp_path: Path, render_variant: Callable[[str], Rendered]
) -> None:
    first = by_kind(render_variant("defaults"), "DaemonSet")
    second = by_kind(
        render_component("fluent_bit", tmp_path, {"fluent_bit_log_stream_prefix": "other."}), "DaemonSet"
    )
    key = "tenantforge.io/config-checksum"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][key]
        != (second["spec"]["template"]["metadata"]["annotations"][key])
    )


# --- local target ----------------------------------------------------------------------------------


def run_local(state_dir: Path, args: tuple[str, ...] = ()) -> PlaybookRun:
    # inventories/local sets tenantforge_platform_target: local.
    return run_playbook(PLAYBOOK, state_dir, ONLY_FLUENT_BIT, args)


def task_result(run: PlaybookRun, task: str) -> str:
    """The first result line (ok/changed/skipping...) of a task of the fluent_bit role."""
    match = re.search(rf"TASK \[fluent_bit : {re.escape(task)}\][^\n]*\n(\w+):", run.output)
    assert match, run.output[-3000:]
    return match.group(1)


@pytest.fixture(scope="module")
def local_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fluent-bit-local")


def test_check_mode_writes_nothing(local_state: Path) -> None:
    run = run_local(local_state, ("--check",))
    run.assert_ok()
    assert task_result(run, "Write the configuration") == "changed"
    assert not (local_state / "fluent-bit").exists()


def test_local_target_writes_the_checked_configuration_and_reports_skipped(
    local_state: Path, render_variant: Callable[[str], Rendered]
) -> None:
    run = run_local(local_state)
    run.assert_ok()
    assert task_result(run, "Create the configuration directory") == "changed"
    assert task_result(run, "Write the configuration") == "changed"
    config = local_state / "fluent-bit" / "fluent-bit.yaml"
    expected_summary = {
        "status": "skipped",
        "reason": "no Fluent Bit build is available on this machine; the configuration was written and checked only",
        "config": str(config),
    }
    # Reported by the role (debug) and recorded in the run's summary.
    assert re.search(
        r"TASK \[fluent_bit : Report Fluent Bit skipped\][^\n]*\nok: \[localhost\] => \n +fluent_bit_summary:",
        run.output,
    )
    assert json.loads((local_state / "summary.json").read_text())["fluent_bit"] == expected_summary
    text = config.read_text()
    assert (
        fluent_bit_problems(
            text, log_groups=EXPECTED["defaults"]["aws_groups"], environment=["NODE_NAME"], http_port=2020
        )
        == []
    )
    # The same configuration as the cluster's.
    assert by_kind(render_variant("defaults"), "ConfigMap")["data"]["fluent-bit.yaml"] == text
    # And the bundle: exactly the objects the render target writes.
    bundle = load_rendered(local_state / "manifests" / "fluent_bit")
    assert [obj for _, obj in bundle] == [obj for _, obj in render_variant("defaults")]


def test_second_local_run_changes_nothing(local_state: Path) -> None:
    run = run_local(local_state)
    run.assert_ok()
    assert run.changed == 0
    assert task_result(run, "Write the configuration") == "ok"
