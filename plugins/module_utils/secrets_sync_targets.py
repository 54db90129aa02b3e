# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""The two targets of ``tenantforge.platform.secrets_sync``: Kubernetes Secrets and a local directory.

Both have the same small interface, used by the module around the shared planner
(:mod:`secrets_sync`):

* ``read(refs, namespaces)``: the target Secrets named by ``refs`` (``(namespace, name)`` pairs) that
  exist, managed or not, plus every managed Secret of ``namespaces`` (for pruning), keyed by
  ``"<namespace>/<name>"``;
* ``apply(steps)``: write the plan's steps (created, updated, pruned) in order; a failure raises
  :class:`TargetError` telling which steps were done.

The Kubernetes Secret bodies are built by pure functions (:func:`secret_body`,
:func:`secret_from_object`), so they are tested without an API server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import errno
import json
import os
import shutil
import stat
import tempfile
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync import (
    DEFAULT_TYPE,
    LABEL_MANAGED_BY,
    MANAGER,
    Step,
    TargetSecret,
    key_problem,
)

try:
    import kubernetes.client
    import kubernetes.config

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError:  # reported by the module with missing_required_lib("kubernetes")
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()

METADATA_FILE = "..metadata.json"  # starts with "..": never a Secret key
TEMP_PREFIX = "..tmp-"
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"


class TargetError(Exception):
    """A target could not be read or written. ``done`` lists the refs written before the failure."""

    def __init__(self, message: str, done: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.done = list(done)


class Target(Protocol):
    """What the module needs of a target: read the current Secrets, apply the planned writes."""

    name: str

    def read(self, refs: Iterable[tuple[str, str]], namespaces: Iterable[str]) -> dict[str, TargetSecret]:
        """The Secrets of ``refs`` that exist and the managed Secrets of ``namespaces``, by ref."""

    def apply(self, steps: Sequence[Step]) -> list[str]:
        """Apply created/updated/pruned steps in order; returns the refs written."""


def _apply_all(steps: Sequence[Step], write: Any, delete: Any) -> list[str]:
    done: list[str] = []
    for step in steps:
        try:
            if step.action == "pruned":
                delete(step)
            elif step.action in ("created", "updated"):
                write(step)
            else:
                continue
        except TargetError as exc:
            raise TargetError(str(exc), done) from None
        done.append(step.ref)
    return done


# --------------------------------------------------------------------------------------------------
# Directory
# --------------------------------------------------------------------------------------------------


class DirectoryTarget:
    """Secrets as ``<root>/<namespace>/<name>/<key>`` files (0600) in 0700 directories.

    Each file is replaced atomically (temporary file in the same directory, fsync, ``os.replace``);
    ``..metadata.json`` holds the labels, annotations and type, and is written last, so an interrupted
    write leaves a content hash that does not match the files and the next run rewrites them. A
    directory without our managed-by label in its metadata is not managed by us.
    """

    name = "directory"

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, namespace: str, name: str | None = None) -> str:
        return (
            os.path.join(self.root, namespace) if name is None else os.path.join(self.root, namespace, name)
        )

    # ----------------------------------------------------------------------------------- read
    def read(self, refs: Iterable[tuple[str, str]], namespaces: Iterable[str]) -> dict[str, TargetSecret]:
        wanted = set(refs)
        found: dict[str, TargetSecret] = {}
        for namespace in sorted(set(namespaces) | {ref[0] for ref in wanted}):
            directory = self.path(namespace)
            try:
                entries = sorted(os.listdir(directory))
                for name in entries:
                    secret = self.read_secret(namespace, name, with_data=(namespace, name) in wanted)
                    if secret is not None and ((namespace, name) in wanted or secret.managed):
                        found[secret.ref] = secret
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TargetError(f"reading {exc.filename or directory}: {exc.strerror}") from None
        return found

    def read_secret(self, namespace: str, name: str, with_data: bool = False) -> TargetSecret | None:
        """The Secret in ``<root>/<namespace>/<name>``; None when that is no directory."""
        directory = self.path(namespace, name)
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            if with_data:
                raise TargetError(
                    f"{directory} exists and is not a directory (a file or a symbolic link); "
                    "it cannot hold a Secret"
                )
            return None
        metadata = self._metadata(directory)
        secret = TargetSecret(
            namespace=namespace,
            name=name,
            type=str(metadata.get("type") or DEFAULT_TYPE),
            labels=_strings(metadata.get("labels")),
            annotations=_strings(metadata.get("annotations")),
        )
        if not (with_data or secret.managed):
            return secret
        intact = stat.S_IMODE(info.st_mode) == DIRECTORY_MODE
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            if entry == METADATA_FILE:
                continue
            entry_info = os.lstat(path)
            if key_problem(entry) is None and stat.S_ISREG(entry_info.st_mode):
                secret.data[entry] = _read_file(path)
                intact = intact and stat.S_IMODE(entry_info.st_mode) == FILE_MODE
            else:
                intact = False  # a leftover temporary file, a symlink, a subdirectory: rewritten
        secret.intact = intact
        return secret

    def _metadata(self, directory: str) -> dict[str, Any]:
        path = os.path.join(directory, METADATA_FILE)
        try:
            document = json.loads(_read_file(path))
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # not ours: we write it atomically, never half
        return document if isinstance(document, dict) else {}

    # ---------------------------------------------------------------------------------- apply
    def apply(self, steps: Sequence[Step]) -> list[str]:
        return _apply_all(steps, self._write_step, self._delete_step)

    def _write_step(self, step: Step) -> None:
        secret = step.desired
        if secret is None:
            raise TargetError(f"{step.ref}: nothing to write")
        try:
            self.write(secret)
        except OSError as exc:
            raise TargetError(f"writing {self.path(secret.namespace, secret.name)}: {exc.strerror}") from None

    def _delete_step(self, step: Step) -> None:
        directory = self.path(*step.ref.split("/", 1))
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TargetError(f"removing {directory}: {exc.strerror}") from None

    def write(self, secret: TargetSecret) -> None:
        os.makedirs(self.root, mode=DIRECTORY_MODE, exist_ok=True)
        _make_private_dir(self.path(secret.namespace))
        directory = self.path(secret.namespace, secret.name)
        if os.path.islink(directory):
            raise TargetError(f"{directory} is a symbolic link; refusing to write a Secret through it")
        _make_private_dir(directory)
        os.chmod(directory, DIRECTORY_MODE)
        for key, item in sorted(secret.data.items()):
            write_atomically(directory, key, item)
        for entry in os.listdir(directory):
            if entry in secret.data or entry == METADATA_FILE:
                continue
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        metadata = {"type": secret.type, "labels": secret.labels, "annotations": secret.annotations}
        write_atomically(
            directory, METADATA_FILE, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
        )
        _fsync_directory(directory)


def write_atomically(directory: str, name: str, content: bytes) -> None:
    """Replace ``directory/name`` with ``content``: a 0600 temporary file beside it, fsync, os.replace.

    A reader sees the old file or the new one, never a part; a crash leaves at most a ``..tmp-`` file,
    which the next write removes.
    """
    descriptor, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _make_private_dir(path: str) -> None:
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIRECTORY_MODE)  # whatever the umask


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(descriptor)


def _read_file(path: str) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read()


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items()}


# --------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------


def secret_body(secret: TargetSecret) -> dict[str, Any]:
    """The v1 Secret to send: data base64-encoded, type, labels, annotations, resourceVersion if known."""
    metadata: dict[str, Any] = {
        "name": secret.name,
        "namespace": secret.namespace,
        "labels": dict(secret.labels),
        "annotations": dict(secret.annotations),
    }
    if secret.revision:
        metadata["resourceVersion"] = secret.revision
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.type,
        "data": {key: base64.b64encode(item).decode("ascii") for key, item in sorted(secret.data.items())},
    }


def secret_from_object(obj: Mapping[str, Any]) -> TargetSecret:
    """A Secret as the API returns it (camelCase dict, base64 data) as a TargetSecret."""
    metadata = obj.get("metadata") or {}
    data = {}
    for key, encoded in (obj.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError):
            raise TargetError(
                f"Secret {metadata.get('namespace')}/{metadata.get('name')}: key {key} is not base64"
            ) from None
    return TargetSecret(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        type=str(obj.get("type") or DEFAULT_TYPE),
        labels=_strings(metadata.get("labels")),
        annotations=_strings(metadata.get("annotations")),
        data=data,
        revision=metadata.get("resourceVersion"),
    )


def api_error_text(exc: Exception) -> str:
    """Status, reason and the API's message: the message names fields and keys, never values."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    message = None
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    if status is None:
        return f"{type(exc).__name__}: {exc}"
    return f"{status} {reason}" + (f": {message}" if message else "")


class KubernetesTarget:
    """Secrets through a CoreV1Api (``kubernetes.client.CoreV1Api`` or anything with its methods).

    Reads one list per namespace (managed Secrets, by label selector) and one GET per wanted Secret
    that is not among them. Updates are replaces carrying the resourceVersion read, so a Secret
    changed meanwhile is not overwritten blindly; a type change (immutable) is a delete and a create;
    a prune is a delete with a resourceVersion precondition.
    """

    name = "kubernetes"

    def __init__(self, api: Any) -> None:
        self.api = api

    def _as_dict(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return self.api.api_client.sanitize_for_serialization(obj)

    def read(self, refs: Iterable[tuple[str, str]], namespaces: Iterable[str]) -> dict[str, TargetSecret]:
        found: dict[str, TargetSecret] = {}
        for namespace in sorted(set(namespaces)):
            try:
                listed = self.api.list_namespaced_secret(namespace, label_selector=MANAGED_SELECTOR)
            except Exception as exc:
                raise TargetError(
                    f"listing Secrets in namespace {namespace}: {api_error_text(exc)}"
                ) from None
            items = self._as_dict(listed).get("items") or []
            for item in items:
                secret = secret_from_object(self._as_dict(item))
                secret.namespace = secret.namespace or namespace
                found[secret.ref] = secret
        for namespace, name in sorted(set(refs)):
            ref = f"{namespace}/{name}"
            if ref in found:
                continue
            try:
                obj = self.api.read_namespaced_secret(name, namespace)
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    continue
                raise TargetError(f"reading Secret {ref}: {api_error_text(exc)}") from None
            secret = secret_from_object(self._as_dict(obj))
            found[ref] = secret
        return found

    def apply(self, steps: Sequence[Step]) -> list[str]:
        return _apply_all(steps, self._write, self._delete)

    def _write(self, step: Step) -> None:
        secret = step.desired
        if secret is None:
            raise TargetError(f"{step.ref}: nothing to write")
        current = step.current
        try:
            if current is None:
                self.api.create_namespaced_secret(secret.namespace, secret_body(secret))
            elif current.type != secret.type:
                # The type of a Secret cannot be changed: it is replaced by a new object.
                self.api.delete_namespaced_secret(secret.name, secret.namespace, body=_preconditions(current))
                fresh = dataclasses.replace(secret, revision=None)
                self.api.create_namespaced_secret(secret.namespace, secret_body(fresh))
            else:
                self.api.replace_namespaced_secret(secret.name, secret.namespace, secret_body(secret))
        except Exception as exc:
            raise TargetError(f"writing Secret {step.ref}: {api_error_text(exc)}") from None

    def _delete(self, step: Step) -> None:
        namespace, name = step.ref.split("/", 1)
        try:
            self.api.delete_namespaced_secret(name, namespace, body=_preconditions(step.current))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise TargetError(f"deleting Secret {step.ref}: {api_error_text(exc)}") from None


def _preconditions(current: TargetSecret | None) -> dict[str, Any]:
    if current is None or not current.revision:
        return {}
    return {"preconditions": {"resourceVersion": current.revision}}


def kubernetes_configuration(auth: Mapping[str, Any]) -> Any:
    """A ``kubernetes.client.Configuration`` from the connection options, as kubernetes.core reads them.

    ``host`` with ``api_key`` (or with ``client_cert`` and ``client_key``) is enough on its own;
    otherwise ``kubeconfig`` (a path or a dict) and ``context`` are loaded, and without either the
    in-cluster service account is tried before the default kubeconfig. Explicit options then
    override what was loaded. Nothing global is changed.
    """
    configuration = kubernetes.client.Configuration()
    host = (auth.get("host") or "").rstrip("/") or None
    self_sufficient = host and (auth.get("api_key") or (auth.get("client_cert") and auth.get("client_key")))
    if not self_sufficient:
        kubeconfig, context = auth.get("kubeconfig"), auth.get("context")
        if kubeconfig or context:
            _load_kubeconfig(configuration, kubeconfig, context)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                _load_kubeconfig(configuration, None, None)
    if host:
        configuration.host = host
    if auth.get("api_key"):
        configuration.api_key = {"BearerToken": f"Bearer {auth['api_key']}"}
        configuration.refresh_api_key_hook = None  # a kubeconfig exec plugin must not replace it
    for option, attribute in (
        ("validate_certs", "verify_ssl"),
        ("ca_cert", "ssl_ca_cert"),
        ("client_cert", "cert_file"),
        ("client_key", "key_file"),
    ):
        if auth.get(option) is not None:
            setattr(configuration, attribute, auth[option])
    return configuration


def _load_kubeconfig(configuration: Any, kubeconfig: Any, context: str | None) -> None:
    if isinstance(kubeconfig, dict):
        kubernetes.config.load_kube_config_from_dict(
            config_dict=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )
    else:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )


def core_v1_api(auth: Mapping[str, Any]) -> Any:
    try:
        configuration = kubernetes_configuration(auth)
    except Exception as exc:  # kubeconfig missing or invalid, unknown context
        raise TargetError(f"cannot configure the Kubernetes client: {exc}") from None
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
