#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secrets_sync
short_description: Copy AWS Secrets Manager secrets into Kubernetes Secrets or a local directory
version_added: 0.1.0
description:
  - Selects AWS Secrets Manager secrets by name or ARN (O(secrets)), by name prefix (O(name_prefix))
    and/or by tags (O(tags)), and writes each one to a target Secret, either a Kubernetes Secret
    (O(target=kubernetes)) or a directory of files (O(target=directory)).
  - A secret is selected when it is listed in O(secrets), or when it matches O(name_prefix) (if given)
    and carries every tag of O(tags) (if given). At least one of the three must be given.
  - "The target Secret is O(namespace)/<name>, where the name is derived from the secret name:
    O(name_prefix) is removed when the secret was selected by it, then the slashes around what is
    left, then the name is lower-cased and every character a Secret name cannot hold (C(/), C(_),
    C(+), C(=), C(@)) becomes C(-). C(tenantforge/dev/postgres/app) selected with
    O(name_prefix=tenantforge/dev/) becomes C(postgres-app). A name that is still not a DNS-1123
    subdomain fails the task, naming the secret; set O(mappings[].name) for it."
  - "The keys of the Secret are the fields of a JSON object SecretString (all of them, or
    O(mappings[].fields)), optionally renamed (O(mappings[].rename)) and completed by Jinja2 templates
    (O(mappings[].templates)). Strings are copied as they are, other JSON values as compact JSON.
    A SecretBinary, a SecretString that is not a JSON object, and a JSON object with
    O(mappings[].key) set, are copied whole to one key (O(mappings[].key), default C(value))."
  - Templates are rendered in Jinja2's immutable sandbox, with undefined names failing, no
    autoescaping and the secret's fields as the only variables. Jinja2's builtin filters and tests are
    available, its globals (C(range), C(lipsum), C(dict) and so on) are not.
  - "Every Secret written is marked: the label C(app.kubernetes.io/managed-by: tenantforge) and the
    annotations C(tenantforge.io/source-arn), C(tenantforge.io/source-version-id),
    C(tenantforge.io/content-hash) (SHA-256 of the data with sorted keys, as
    C({key: base64(value)}) compact JSON) and C(tenantforge.io/mapping-hash) (SHA-256 of the mapping
    that produced it). Labels and annotations others set on the Secret are kept, except
    C(kubectl.kubernetes.io/last-applied-configuration), which holds old values."
  - A secret whose current (C(AWSCURRENT)) version has already been synced with the same mapping, into
    a target that still holds what was written, is not read at all (no C(GetSecretValue) call). The
    version is taken from ListSecrets (prefix and tag selection) or DescribeSecret (O(secrets)).
  - A Secret is written only when its data, type, labels or annotations differ from what it should
    be. A new source version with the same content only updates the version annotation.
  - "All or nothing: every selected secret is read, rendered and checked, and every target Secret is
    checked, before anything is written. A secret that cannot be mapped (a field that does not exist,
    a SecretString that is not a JSON object while fields are mapped, a template error, a missing key
    for the Secret type) and a target Secret that exists without being managed by this module fail
    the task, naming the secret and the field or the Secret, and nothing at all is written in that
    run: a partial sync would leave workloads with a mix of old and new credentials."
  - A target Secret that exists and is not managed by this module (no managed-by label and
    source-arn annotation) is never overwritten or deleted, unless O(adopt=true). Without it the
    Secret is reported with action C(skipped) and the task fails, because a silently skipped
    Secret would leave its workload with stale credentials.
  - With O(prune=true), managed Secrets in the target namespaces (O(namespace) and every
    O(mappings[].namespace)) whose source secret no longer exists or is no longer selected are
    deleted. Secrets not managed by this module are never pruned.
  - "The directory target writes C(<directory>/<namespace>/<name>/<key>), one file per key with mode
    0600 in directories with mode 0700, each file replaced atomically (temporary file in the same
    directory, fsync, rename). Files of keys that disappeared are removed. The labels, annotations
    and type are in C(..metadata.json) beside the keys (a name that can never be a key); a directory
    without the managed-by label there is not managed by this module."
  - The module never returns or logs a value. Diffs show, per Secret, the key names with the first
    12 hex digits of each value's SHA-256.
author:
  - Tenantforge engineering (@tenantforge)
options:
  secrets:
    description:
      - Names or ARNs of secrets to sync. Each must exist and not be scheduled for deletion.
    type: list
    elements: str
    default: []
  name_prefix:
    description:
      - Sync the secrets whose name starts with this prefix (case-sensitive), and that carry O(tags)
        if given. Stripped from the derived Secret names.
    type: str
  tags:
    description:
      - Sync the secrets that carry all these tags (exact key and value), and that match
        O(name_prefix) if given.
    type: dict
  mappings:
    description:
      - Per-secret settings. A secret without a mapping gets the defaults. A secret may have several
        mappings (several target Secrets).
      - A mapping whose source is not selected is ignored with a warning.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Name or ARN of the selected secret this mapping applies to.
        type: str
        required: true
      name:
        description: Name of the target Secret, instead of the derived one. A DNS-1123 subdomain.
        type: str
      namespace:
        description: Namespace of the target Secret, instead of O(namespace).
        type: str
      fields:
        description:
          - Fields of the JSON object SecretString to copy, each to the key of the same name (or
            O(mappings[].rename)). All fields when omitted; V([]) copies none (templates only).
          - A field that does not exist fails the task.
        type: list
        elements: str
      rename:
        description: "Keys for fields, as C({field: key})."
        type: dict
      templates:
        description:
          - "More keys, as C({key: template}). Each template is a Jinja2 template whose variables are
            the secret's fields, for example
            C(postgresql://{{ username }}:{{ password | urlencode }}@db:5432/app)."
          - The rendered text is stored as it is, a trailing newline included.
          - Ansible templates module arguments itself, so mark the template C(!unsafe) in YAML (or wrap
            it in C({% raw %})); otherwise Ansible tries to render it first.
        type: dict
      key:
        description:
          - The key that holds the whole value, for a SecretBinary, a SecretString that is not a JSON
            object, or a JSON object copied as one document. Default C(value).
          - Cannot be combined with O(mappings[].fields), O(mappings[].rename) or O(mappings[].templates).
        type: str
      type:
        description:
          - Type of the target Secret. Built-in types are checked for the keys the API server requires
            (for example C(tls.crt) and C(tls.key) for C(kubernetes.io/tls)).
          - A Kubernetes Secret whose type changes is deleted and created again (the type is immutable).
        type: str
        default: Opaque
  namespace:
    description: Namespace of the target Secrets (the first directory level for O(target=directory)).
    type: str
    default: default
  target:
    description: Where the Secrets are written.
    type: str
    choices: [kubernetes, directory]
    default: kubernetes
  directory:
    description:
      - The root directory of O(target=directory), created with mode 0700 if missing.
      - Required when O(target=directory).
    type: path
  prune:
    description:
      - Delete the managed Secrets of the target namespaces whose source no longer exists or is no
        longer selected.
      - Assumes that one task owns the managed Secrets of its namespaces.
    type: bool
    default: false
  adopt:
    description:
      - Take over target Secrets that exist but are not managed by this module (overwrite them and
        mark them as managed). Without it such a Secret fails the task.
    type: bool
    default: false
  kubeconfig:
    description:
      - Path to a kubeconfig file, or the kubeconfig content as a dict. Can also be set with the
        E(K8S_AUTH_KUBECONFIG) environment variable.
      - Without it (and without O(host) and credentials), the in-cluster service account is used when
        the module runs in a pod, else C(~/.kube/config).
    type: raw
  context:
    description: The kubeconfig context to use. Also E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description: URL of the Kubernetes API server. Also E(K8S_AUTH_HOST).
    type: str
  api_key:
    description: Bearer token for the API server. Also E(K8S_AUTH_API_KEY).
    type: str
  kubernetes_validate_certs:
    description:
      - Whether to verify the API server's TLS certificate. Also E(K8S_AUTH_VERIFY_SSL).
      - Not called C(validate_certs) as in C(kubernetes.core), because that option is already the
        AWS one of this module (and of the C(group/aws) module defaults).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: CA certificate file that signed the API server's certificate. Also E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description: Client certificate file for the API server. Also E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [cert_file]
  client_key:
    description: Key file of O(client_cert). Also E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [key_file]
notes:
  - Supports check mode and diff mode. In check mode only read calls are made; the actions, checksums
    and diff are those the run would produce.
  - Every value read (source values, their fields and current target values) of 4 characters or more
    is added to the values Ansible masks in all output. A value that also appears in a name or id
    masks it there too (dictionary keys, such as those of RV(checksums), are never masked). Shorter
    values are not masked (masking C(on) or a one-letter user name would garble every name in the
    output and hide nothing worth hiding).
  - A write that fails at the API (after every check passed) fails the task naming the Secret; the
    Secrets written before it stay written and are listed, and the next run completes the rest.
  - Secrets Manager calls are retried with jittered backoff when throttled.
requirements:
  - kubernetes (the Python client) for O(target=kubernetes)
  - jinja2 for O(mappings[].templates)
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Returns key names and short value hashes of the Secrets it changes (or would change), never values.
    support: full
"""

EXAMPLES = r"""
- name: Sync the platform's secrets into the tenantforge namespace
  tenantforge.platform.secrets_sync:
    name_prefix: tenantforge/dev/
    namespace: tenantforge
    prune: true
    mappings:
      - source: tenantforge/dev/postgres/app
        name: postgres-app
        fields: [username, password]
        templates:
          url: !unsafe "postgresql://{{ username }}:{{ password | urlencode }}@postgres:5432/tenantforge"
      - source: tenantforge/dev/jwt/signing-key
        rename:
          private_key_pem: signing-key.pem
  register: synced

- name: Roll the API when one of its Secrets changes
  kubernetes.core.k8s:
    state: patched
    kind: Deployment
    name: api
    namespace: tenantforge
    definition:
      spec:
        template:
          metadata:
            annotations:
              tenantforge.io/secrets-checksum: "{{ synced.checksums['tenantforge/postgres-app'] }}"

- name: Secrets tagged for the edge proxy, as a TLS Secret, with an explicit kubeconfig context
  tenantforge.platform.secrets_sync:
    tags:
      tenantforge:consumer: edge
    namespace: edge
    kubeconfig: ~/.kube/config
    context: k3s-dev
    mappings:
      - source: tenantforge/dev/edge/tls
        name: edge-tls
        type: kubernetes.io/tls
        rename:
          certificate: tls.crt
          private_key: tls.key

- name: The same secrets as files for a service running on the host
  tenantforge.platform.secrets_sync:
    secrets:
      - tenantforge/dev/rabbitmq/erlang-cookie
      - arn:aws:secretsmanager:eu-west-1:123456789012:secret:tenantforge/dev/pgbouncer/auth-AbCdEf
    target: directory
    directory: /etc/tenantforge/secrets
    namespace: host
    adopt: true
"""

RETURN = r"""
secrets:
  description:
    - One entry per target Secret (and per pruned Secret), sorted by target, without any value.
    - Also returned when the task fails after the secrets were selected; then the entries that would
      have been written are C(skipped) with the reason.
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: Name of the source secret.
      returned: always
      type: str
      sample: tenantforge/dev/postgres/app
    arn:
      description: ARN of the source secret.
      returned: always
      type: str
      sample: arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/postgres/app-AbCdEf
    version_id:
      description: The source version synced (C(AWSCURRENT)); for a pruned Secret, the version it held.
      returned: always
      type: str
      sample: 6f2c1a44-2b6e-4d3c-9b8e-0f1e2d3c4b5a
    target:
      description: The target Secret, as C(<namespace>/<name>).
      returned: always
      type: str
      sample: tenantforge/postgres-app
    action:
      description: What was done (or would be done in check mode).
      returned: always
      type: str
      choices: [created, updated, unchanged, pruned, skipped]
      sample: created
    checksum:
      description:
        - The content hash of the Secret (its C(tenantforge.io/content-hash) annotation) after the
          task; for a pruned or skipped Secret, that of the Secret found (null if none).
      returned: always
      type: str
      sample: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    reason:
      description: Why a Secret was skipped, pruned or adopted.
      returned: when action is skipped or pruned, or a Secret was adopted
      type: str
      sample: the source secret no longer exists
checksums:
  description:
    - The content hash of every target Secret that exists after the task, by C(<namespace>/<name>).
      Put it in a pod template annotation so that workloads roll when a secret rotates.
  returned: success
  type: dict
  sample: {"tenantforge/postgres-app": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}
"""

import re
from collections.abc import Callable, Iterable
from typing import Any

from ansible.module_utils.basic import env_fallback, missing_required_lib
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict

from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync import (
    ANNOTATION_SOURCE_ARN,
    Desired,
    SecretValue,
    Selection,
    Source,
    SyncError,
    TargetSecret,
    TargetSpec,
    check_namespace,
    make_selection,
    mapping_rules,
    plan,
    prune_candidates,
    render,
    resolve_targets,
    sensitive_strings,
    up_to_date,
)
from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync_targets import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    DirectoryTarget,
    KubernetesTarget,
    Target,
    TargetError,
    core_v1_api,
)
from ansible_collections.tenantforge.platform.plugins.module_utils.secretsmanager import SecretsManagerClient

Hide = Callable[[str], None]
FILTER_VALUE = re.compile(r"^[a-zA-Z0-9 :_@/+=.-]{1,512}$")  # what a ListSecrets filter value may hold


class SyncFailed(SyncError):
    """The task fails after the secrets were selected; ``result`` holds the per-secret entries."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class SecretsManagerSource(SecretsManagerClient):
    """Lists, describes and reads the source secrets."""

    error = SyncError

    def listed(self, selection: Selection) -> list[dict]:
        """ListSecrets, every page, narrowed by the server (name prefix, tag keys); checked by the caller."""
        filters = []
        if selection.name_prefix:
            filters.append({"Key": "name", "Values": [selection.name_prefix]})
        # A filter holds at most 10 values of a restricted alphabet: the other tag keys are only
        # checked here, on the listed secrets.
        tag_keys = [key for key in sorted(selection.tags) if FILTER_VALUE.match(key)][:10]
        if tag_keys:
            filters.append({"Key": "tag-key", "Values": tag_keys})
        kwargs: dict[str, Any] = {"MaxResults": 100}
        if filters:
            kwargs["Filters"] = filters
        entries: list[dict] = []
        while True:
            page = self.call("list_secrets", "the selection", **kwargs)
            entries.extend(page.get("SecretList") or [])
            if not page.get("NextToken"):
                return entries
            kwargs["NextToken"] = page["NextToken"]

    def select(self, selection: Selection) -> list[Source]:
        found: dict[str, Source] = {}
        if selection.filtered:
            for entry in self.listed(selection):
                tags = boto3_tag_list_to_ansible_dict(entry.get("Tags") or [])
                if selection.matches(entry["Name"], tags):
                    version = current_version(entry.get("SecretVersionsToStages"))
                    found[entry["ARN"]] = Source(entry["Name"], entry["ARN"], version, filtered=True)
        for secret_id in selection.secrets:
            if any(secret_id in (source.name, source.arn) for source in found.values()):
                continue
            described = self.describe(secret_id)
            if described is None:
                raise SyncError(f"secrets: the secret {secret_id} does not exist")
            if described.get("DeletedDate"):
                raise SyncError(f"secrets: the secret {secret_id} is scheduled for deletion")
            version = current_version(described.get("VersionIdsToStages"))
            found.setdefault(described["ARN"], Source(described["Name"], described["ARN"], version))
        return sorted(found.values(), key=lambda source: source.name)

    def read(self, source: Source) -> SecretValue:
        """The value of the version listed (so that the version annotation says what was copied)."""
        kwargs = {"SecretId": source.arn}
        if source.version_id:
            kwargs["VersionId"] = source.version_id
        response = self.call("get_secret_value", f"secret {source.name}", **kwargs)
        return SecretValue(string=response.get("SecretString"), binary=response.get("SecretBinary"))

    def gone(self, arns: Iterable[str]) -> set[str]:
        """The ARNs among ``arns`` whose secret no longer exists (or is scheduled for deletion)."""
        missing = set()
        for arn in sorted(set(arns)):
            described = self.describe(arn)
            if described is None or described.get("DeletedDate"):
                missing.add(arn)
        return missing


def current_version(versions: dict | None) -> str | None:
    for version_id, stages in (versions or {}).items():
        if "AWSCURRENT" in stages:
            return version_id
    return None


def desired_targets(
    sm: SecretsManagerSource, specs: list[TargetSpec], current: dict[str, TargetSecret], hide: Hide
) -> list[Desired]:
    """Read (once per source) and render what is not up to date; errors stay with their secret."""
    values: dict[str, SecretValue | SyncError] = {}
    desired = []
    for spec in specs:
        if up_to_date(spec, current.get(spec.ref)):
            desired.append(Desired(spec))
            continue
        arn = spec.source.arn
        if arn not in values:
            try:
                read = sm.read(spec.source)
            except SyncError as exc:
                values[arn] = exc
            else:
                _hide_all(hide, sensitive_strings(read))
                values[arn] = read
        value = values[arn]
        if isinstance(value, SyncError):
            desired.append(Desired(spec, error=str(value)))
            continue
        try:
            data = render(spec, value)
        except SyncError as exc:
            desired.append(Desired(spec, error=str(exc)))
            continue
        _hide_all(hide, sensitive_strings(SecretValue(), data))
        desired.append(Desired(spec, data=data))
    return desired


def _hide_all(hide: Hide, values: Iterable[str]) -> None:
    for value in values:
        hide(value)


def sync(
    sm: SecretsManagerSource, target: Target, params: dict, check_mode: bool, hide: Hide | None = None
) -> dict:
    """The module's work: select, read targets, read and render sources, plan, check, write.

    Returns changed, secrets, checksums, diff and warnings. Raises SyncError (bad options, selection
    failures: nothing read from the target), SyncFailed (a secret or a target Secret failed: nothing
    written, or a write failed: what was written is listed) or TargetError.
    """
    hide = hide or (lambda value: None)
    selection = make_selection(params["secrets"], params["name_prefix"], params["tags"])
    rules = mapping_rules(params["mappings"])
    namespace = check_namespace(params["namespace"], "namespace")

    sources = sm.select(selection)
    specs, warnings = resolve_targets(sources, rules, selection, namespace)
    if not sources:
        warnings.append("no secret matched the selection")
    namespaces = sorted({namespace, *(spec.namespace for spec in specs)})
    current = target.read([(spec.namespace, spec.name) for spec in specs], namespaces)
    for secret in current.values():
        _hide_all(hide, sensitive_strings(SecretValue(), secret.data))

    desired = desired_targets(sm, specs, current, hide)
    gone: set[str] = set()
    if params["prune"]:
        candidates = prune_candidates(specs, current, namespaces)
        gone = sm.gone(secret.annotations[ANNOTATION_SOURCE_ARN] for secret in candidates)
    decided = plan(
        desired, current, adopt=params["adopt"], prune=params["prune"], namespaces=namespaces, gone=gone
    )

    if decided.failures:
        raise SyncFailed(
            "; ".join(decided.failures) + ". Nothing was written.",
            {
                "secrets": decided.blocked("not written: another secret of this task failed"),
                "warnings": warnings,
            },
        )
    if decided.changed and not check_mode:
        try:
            target.apply(decided.writes)
        except TargetError as exc:
            done = set(exc.done)
            results = [
                result
                if result["target"] in done or result["action"] not in ("created", "updated", "pruned")
                else {**result, "action": "skipped", "reason": f"not written: {exc}"}
                for result in decided.results()
            ]
            written = ", ".join(sorted(done)) or "nothing"
            raise SyncFailed(
                f"{exc} (written before the failure: {written})",
                {"changed": bool(done), "secrets": results, "warnings": warnings},
            ) from None
    return {
        "changed": decided.changed,
        "secrets": decided.results(),
        "checksums": decided.checksums(),
        "diff": decided.diff(),
        "warnings": warnings,
    }


def retry_decorator(delay: float = 3) -> Any:
    """Jittered backoff on throttling; Secrets Manager answers ``ThrottlingException``, which AWSRetry
    does not retry by default."""
    return AWSRetry.jittered_backoff(delay=delay, catch_extra_error_codes=["ThrottlingException"])


def make_target(params: dict) -> Target:
    if params["target"] == "directory":
        return DirectoryTarget(params["directory"])
    auth = {
        name: params[name]
        for name in ("kubeconfig", "context", "host", "api_key", "ca_cert", "client_cert", "client_key")
    }
    auth["validate_certs"] = params["kubernetes_validate_certs"]
    return KubernetesTarget(core_v1_api(auth))


def argument_spec() -> dict:
    mapping = {
        "source": {"type": "str", "required": True},
        "name": {"type": "str"},
        "namespace": {"type": "str"},
        "fields": {"type": "list", "elements": "str"},
        "rename": {"type": "dict"},
        "templates": {"type": "dict"},
        "key": {"type": "str", "no_log": False},
        "type": {"type": "str", "default": "Opaque"},
    }

    def env(name: str) -> tuple:
        return (env_fallback, [f"K8S_AUTH_{name}"])

    return {
        "secrets": {"type": "list", "elements": "str", "default": [], "no_log": False},
        "name_prefix": {"type": "str"},
        "tags": {"type": "dict"},
        "mappings": {"type": "list", "elements": "dict", "options": mapping, "default": []},
        "namespace": {"type": "str", "default": "default"},
        "target": {"type": "str", "choices": ["kubernetes", "directory"], "default": "kubernetes"},
        "directory": {"type": "path"},
        "prune": {"type": "bool", "default": False},
        "adopt": {"type": "bool", "default": False},
        "kubeconfig": {"type": "raw", "no_log": True, "fallback": env("KUBECONFIG")},
        "context": {"type": "str", "fallback": env("CONTEXT")},
        "host": {"type": "str", "fallback": env("HOST")},
        "api_key": {"type": "str", "no_log": True, "fallback": env("API_KEY")},
        "kubernetes_validate_certs": {
            "type": "bool",
            "aliases": ["verify_ssl"],
            "fallback": env("VERIFY_SSL"),
        },
        "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"], "fallback": env("SSL_CA_CERT")},
        "client_cert": {"type": "path", "aliases": ["cert_file"], "fallback": env("CERT_FILE")},
        "client_key": {"type": "path", "aliases": ["key_file"], "no_log": False, "fallback": env("KEY_FILE")},
    }


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=argument_spec(),
        required_if=[("target", "directory", ["directory"])],
        supports_check_mode=True,
    )
    if module.params["target"] == "kubernetes" and not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    try:
        sm = SecretsManagerSource(module.client("secretsmanager", retry_decorator=retry_decorator()))
        result = sync(
            sm, make_target(module.params), module.params, module.check_mode, module.no_log_values.add
        )
    except SyncFailed as exc:
        for warning in exc.result.pop("warnings", []):
            module.warn(warning)
        module.fail_json(msg=str(exc), **exc.result)
    except (SyncError, TargetError) as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
