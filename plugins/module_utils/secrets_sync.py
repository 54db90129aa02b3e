# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Selection, naming, rendering, hashing and planning behind ``tenantforge.platform.secrets_sync``.

Pure logic: no AWS and no Kubernetes imports. The module lists the source secrets and reads the
current target Secrets, and this module decides everything else with plain values:

* :func:`make_selection`, :func:`mapping_rules`: the task's options, checked before any API call;
* :func:`resolve_targets`: which target Secret (namespace, name, key mapping) each source feeds;
* :func:`up_to_date`: whether a target was written from the source's current version with the same
  mapping and is intact, so that the source value need not be read at all;
* :func:`render`: the Secret's keys and values from a SecretString or SecretBinary (fields, renames,
  templates in Jinja2's immutable sandbox);
* :func:`plan`: created / updated / unchanged / pruned / skipped for every target, shared by the
  Kubernetes and the directory target.

Every error is a :class:`SyncError` whose message names options, secrets, fields and keys, never a
value. Values are ``bytes`` in ``data`` mappings, which are kept out of every ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

try:
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.exceptions import SecurityError, UndefinedError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    HAS_JINJA2 = True
except ImportError:  # pragma: no cover - jinja2 comes with ansible-core; checked when a template is used
    HAS_JINJA2 = False

# Marks of a managed target Secret.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "tenantforge"
ANNOTATION_SOURCE_ARN = "tenantforge.io/source-arn"
ANNOTATION_SOURCE_VERSION = "tenantforge.io/source-version-id"
ANNOTATION_CONTENT_HASH = "tenantforge.io/content-hash"
ANNOTATION_MAPPING_HASH = "tenantforge.io/mapping-hash"
OWN_ANNOTATIONS = (
    ANNOTATION_SOURCE_ARN,
    ANNOTATION_SOURCE_VERSION,
    ANNOTATION_CONTENT_HASH,
    ANNOTATION_MAPPING_HASH,
)
# kubectl keeps the whole object it applied, data included, in this annotation: an adopted Secret
# would keep its previous values there, so it is dropped when the Secret is written.
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)

ACTIONS = ("created", "updated", "unchanged", "pruned", "skipped")
WRITES = ("created", "updated", "pruned")
DEFAULT_KEY = "value"
DEFAULT_TYPE = "Opaque"
# Part of the mapping hash: a change of the rendering rules forces every target to be re-read.
MAPPING_FORMAT = 1
MAX_SECRET_SIZE = 1024 * 1024  # Kubernetes' limit on the total size of a Secret's data
MAX_KEY_LENGTH = 253
MIN_MASKED_LENGTH = 4  # see sensitive_strings()

KEY_PATTERN = re.compile(r"^[-._a-zA-Z0-9]+$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The characters Secrets Manager allows in a secret name; a prefix with others matches nothing, and
# a leading "!" would turn the ListSecrets name filter into a negation.
SOURCE_NAME_CHARS = re.compile(r"^[A-Za-z0-9/_+=.@-]+$")
NOT_IN_SECRET_NAME = re.compile(r"[^a-z0-9.-]")

# Keys the API server requires for the built-in Secret types (it refuses the Secret otherwise).
REQUIRED_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}
ONE_OF_KEYS = {"kubernetes.io/basic-auth": ("username", "password")}
# Tokens of this type are issued by Kubernetes itself, never copied from elsewhere.
REFUSED_TYPES = ("kubernetes.io/service-account-token",)


class SyncError(Exception):
    """Bad input or a source that cannot be mapped. Names options, secrets, fields, keys; never values."""


# --------------------------------------------------------------------------------------------------
# Names and keys
# --------------------------------------------------------------------------------------------------


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a Kubernetes Secret data key, or None when it can."""
    if not key:
        return "it is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"it is longer than {MAX_KEY_LENGTH} characters"
    if key in (".", ".."):
        return "it must not be '.' or '..'"
    if key.startswith(".."):
        return "it must not start with '..'"
    if not KEY_PATTERN.match(key):
        return "it may only contain letters, digits, '-', '_' and '.'"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid Secret name (DNS-1123 subdomain), or None when it is."""
    if not name:
        return "it is empty"
    if len(name) > 253:
        return "it is longer than 253 characters"
    if not DNS1123_SUBDOMAIN.match(name):
        return (
            "it must be a DNS-1123 subdomain: lower case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def namespace_problem(namespace: str) -> str | None:
    """Why ``namespace`` is not a valid namespace name (DNS-1123 label), or None when it is."""
    if not namespace:
        return "it is empty"
    if len(namespace) > 63:
        return "it is longer than 63 characters"
    if not DNS1123_LABEL.match(namespace):
        return (
            "it must be a DNS-1123 label: lower case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def check_namespace(namespace: str, option: str) -> str:
    problem = namespace_problem(namespace)
    if problem:
        raise SyncError(f"{option}: {namespace!r} is not a valid namespace: {problem}")
    return namespace


def default_name(source_name: str, name_prefix: str | None) -> str:
    """The target Secret name derived from a source name.

    ``name_prefix`` (the prefix the source was selected by, or None) is stripped, then the slashes
    around what is left, then the name is lower-cased and every character a Secret name cannot hold
    (``/``, ``_``, ``+``, ``=``, ``@``) becomes ``-``. The result may still be invalid (empty, or
    starting with ``-``): the caller checks it.
    """
    name = source_name
    if name_prefix and name.startswith(name_prefix):
        name = name[len(name_prefix) :]
    return NOT_IN_SECRET_NAME.sub("-", name.strip("/").lower())


def source_name_from_arn(arn: str) -> str:
    """The secret name inside a Secrets Manager ARN (which ends in ``<name>-<6 random characters>``)."""
    resource = arn.split(":secret:", 1)[-1]
    return resource[:-7] if len(resource) > 7 and resource[-7] == "-" else resource


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which source secrets the task syncs.

    A secret is selected when it is in ``secrets`` (names or ARNs), or when it matches ``name_prefix``
    (if given) and carries every tag of ``tags`` (if given).
    """

    secrets: tuple[str, ...] = ()
    name_prefix: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def filtered(self) -> bool:
        """True when a prefix or tags select secrets (and ListSecrets must be asked)."""
        return bool(self.name_prefix or self.tags)

    def matches(self, name: str, tags: Mapping[str, str]) -> bool:
        """Whether a secret with this name and these tags is selected by the prefix and tags."""
        if not self.filtered:
            return False
        if self.name_prefix and not name.startswith(self.name_prefix):
            return False
        return all(tags.get(key) == value for key, value in self.tags.items())


def make_selection(
    secrets: Sequence[str] | None, name_prefix: str | None, tags: Mapping[str, Any] | None
) -> Selection:
    """Check the selection options; an empty string, list or dict counts as not given."""
    names: list[str] = []
    for index, name in enumerate(secrets or []):
        if not isinstance(name, str) or not name:
            raise SyncError(f"secrets[{index}] must be a non-empty secret name or ARN")
        if name not in names:
            names.append(name)
    if name_prefix and not SOURCE_NAME_CHARS.match(name_prefix):
        raise SyncError(
            f"name_prefix {name_prefix!r} contains characters no secret name can hold "
            "(allowed: letters, digits and / _ + = . @ -)"
        )
    checked_tags: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(value, str):
            raise SyncError(f"tags.{key} must be a string (quote it), got {type(value).__name__}")
        checked_tags[str(key)] = value
    if not names and not name_prefix and not checked_tags:
        raise SyncError(
            "nothing selects a secret: give secrets (names or ARNs), name_prefix and/or tags "
            "(mappings only adjust the secrets these select)"
        )
    return Selection(tuple(names), name_prefix or None, checked_tags)


@dataclass(frozen=True)
class MappingRule:
    """One entry of the ``mappings`` option: how one source secret becomes a target Secret."""

    source: str
    index: int = 0
    name: str | None = None
    namespace: str | None = None
    fields: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    type: str = DEFAULT_TYPE

    @property
    def label(self) -> str:
        return f"mappings[{self.index}]"


def mapping_rules(raw: Sequence[Mapping[str, Any]] | None) -> list[MappingRule]:
    """Check the ``mappings`` option: names, namespaces, keys, template syntax. Raises SyncError."""
    rules = []
    for index, entry in enumerate(raw or []):
        label = f"mappings[{index}]"
        source = entry.get("source")
        if not isinstance(source, str) or not source:
            raise SyncError(f"{label}.source must be a secret name or ARN")
        name, namespace = entry.get("name"), entry.get("namespace")
        if name is not None and (problem := name_problem(name)):
            raise SyncError(f"{label}.name: {name!r} is not a valid Secret name: {problem}")
        if namespace is not None:
            check_namespace(namespace, f"{label}.namespace")
        fields = entry.get("fields")
        rename: dict[str, str] = dict(entry.get("rename") or {})
        templates: dict[str, str] = dict(entry.get("templates") or {})
        key = entry.get("key")
        secret_type = entry.get("type") or DEFAULT_TYPE
        for option, mapping in (("rename", rename), ("templates", templates)):
            for item, value in mapping.items():
                if not isinstance(value, str):
                    raise SyncError(f"{label}.{option}.{item} must be a string, got {type(value).__name__}")
        if fields is not None:
            fields = tuple(str(name) for name in fields)
            if len(set(fields)) != len(fields):
                raise SyncError(f"{label}.fields lists a field twice")
            for field_name in rename:
                if field_name not in fields:
                    raise SyncError(f"{label}.rename.{field_name}: field {field_name!r} is not in fields")
        if key is not None:
            if fields is not None or rename or templates:
                raise SyncError(
                    f"{label}: key maps the whole value to one key; it cannot be combined with "
                    "fields, rename or templates"
                )
            if problem := key_problem(key):
                raise SyncError(f"{label}.key: {key!r} is not a valid Secret key: {problem}")
        produced: dict[str, str] = {}
        for field_name in fields or ():
            produced_key = rename.get(field_name, field_name)
            if problem := key_problem(produced_key):
                raise SyncError(
                    f"{label}: field {field_name!r} would become the key {produced_key!r}, which is not "
                    f"a valid Secret key: {problem}; rename it"
                )
            _claim(produced, produced_key, f"field {field_name!r}", label)
        for field_name, new_key in rename.items():
            if problem := key_problem(new_key):
                raise SyncError(
                    f"{label}.rename.{field_name}: {new_key!r} is not a valid Secret key: {problem}"
                )
            if fields is None:
                _claim(produced, new_key, f"field {field_name!r}", label)
        for template_key, template in templates.items():
            if problem := key_problem(template_key):
                raise SyncError(f"{label}.templates: {template_key!r} is not a valid Secret key: {problem}")
            _claim(produced, template_key, "a template", label)
            compile_template(template, f"{label}.templates.{template_key}")
        if secret_type in REFUSED_TYPES:
            raise SyncError(f"{label}.type: {secret_type} Secrets are issued by Kubernetes, not synced")
        rules.append(
            MappingRule(
                source=source,
                index=index,
                name=name,
                namespace=namespace,
                fields=fields,
                rename=rename,
                templates=templates,
                key=key,
                type=secret_type,
            )
        )
    return rules


def _claim(produced: dict[str, str], key: str, what: str, label: str) -> None:
    if key in produced:
        raise SyncError(f"{label}: the key {key!r} would come from both {produced[key]} and {what}")
    produced[key] = what


# --------------------------------------------------------------------------------------------------
# Sources and targets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A selected source secret, as listed or described (no value)."""

    name: str
    arn: str
    version_id: str | None  # the AWSCURRENT version
    filtered: bool = False  # selected by name_prefix/tags (so name_prefix is stripped from its default name)


@dataclass(frozen=True)
class SecretValue:
    """A source secret's value: ``string`` (SecretString) or ``binary`` (SecretBinary)."""

    string: str | None = field(default=None, repr=False)
    binary: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TargetSpec:
    """What one source becomes: the target Secret and how its keys are made."""

    source: Source
    namespace: str
    name: str
    type: str = DEFAULT_TYPE
    fields: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def mapping(self) -> dict[str, Any]:
        """The mapping spec, normalised: what the mapping hash covers."""
        return {
            "format": MAPPING_FORMAT,
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "fields": None if self.fields is None else list(self.fields),
            "rename": dict(sorted(self.rename.items())),
            "templates": dict(sorted(self.templates.items())),
            "key": self.key,
        }

    @property
    def mapping_hash(self) -> str:
        canonical = json.dumps(self.mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    @property
    def customised(self) -> str | None:
        """The first option that needs a JSON object value (for messages), or None."""
        if self.fields is not None:
            return "fields"
        if self.rename:
            return "rename"
        if self.templates:
            return "templates"
        return None


def resolve_targets(
    sources: Sequence[Source], rules: Sequence[MappingRule], selection: Selection, namespace: str
) -> tuple[list[TargetSpec], list[str]]:
    """The target of every selected source (one per mapping of it, or one by default) and warnings.

    A mapping whose source is not selected is ignored with a warning: a deleted source must not
    stop the others (or their pruning). Raises SyncError naming the secret when a derived name is
    not a valid Secret name, or when two sources would write the same Secret.
    """
    lookup: dict[str, Source] = {}
    for source in sources:
        lookup[source.name] = source
        lookup[source.arn] = source
    rules_of: dict[str, list[MappingRule]] = {}
    warnings = []
    for rule in rules:
        found = lookup.get(rule.source)
        if found is None:
            warnings.append(
                f"{rule.label}: the secret {rule.source} is not selected by secrets, name_prefix or tags "
                "(or does not exist); the mapping is ignored"
            )
        else:
            rules_of.setdefault(found.arn, []).append(rule)

    specs: list[TargetSpec] = []
    errors: list[str] = []
    for source in sources:
        own_rules: list[MappingRule | None] = [*rules_of.get(source.arn, [])] or [None]
        for own in own_rules:
            if own is not None and own.name:
                name = own.name
            else:
                name = default_name(source.name, selection.name_prefix if source.filtered else None)
                if problem := name_problem(name):
                    errors.append(
                        f"secret {source.name}: the derived Secret name {name!r} is not valid ({problem}); "
                        "set mappings[].name for it"
                    )
                    continue
            if own is None:
                specs.append(TargetSpec(source=source, namespace=namespace, name=name))
                continue
            specs.append(
                TargetSpec(
                    source=source,
                    namespace=own.namespace or namespace,
                    name=name,
                    type=own.type,
                    fields=own.fields,
                    rename=own.rename,
                    templates=own.templates,
                    key=own.key,
                )
            )
    writers: dict[str, list[str]] = {}
    for spec in specs:
        writers.setdefault(spec.ref, []).append(spec.source.name)
    for ref, names in sorted(writers.items()):
        if len(names) > 1:
            errors.append(
                f"the Secret {ref} would be written from several secrets ({', '.join(names)}); "
                "give them distinct mappings[].name or namespace"
            )
    if errors:
        raise SyncError("; ".join(errors))
    return specs, warnings


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def sandbox() -> Any:
    """Jinja2's immutable sandbox: builtin filters and tests, no globals, undefined names fail.

    The default globals (``range``, ``lipsum``, ``dict``, ``cycler``, ``joiner``, ``namespace``) are
    removed: a template sees the secret's fields and nothing else.
    """
    if not HAS_JINJA2:
        raise SyncError("templates need the jinja2 Python package on the host that runs the module")
    environment = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    environment.globals.clear()
    return environment


@lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    return sandbox().from_string(source)


def compile_template(source: str, where: str) -> Any:
    try:
        return _compiled(source)
    except TemplateError as exc:
        raise SyncError(f"{where}: the template is not valid Jinja2: {exc.message}") from None


def render_template(source: str, context: Mapping[str, Any], secret: str, key: str) -> str:
    where = f"secret {secret}: templates.{key}"
    template = compile_template(source, where)
    try:
        return str(template.render(dict(context)))
    except SecurityError as exc:
        raise SyncError(f"{where}: refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise SyncError(f"{where}: {exc.message} (the template sees only the secret's fields)") from None
    except TemplateError as exc:
        raise SyncError(f"{where}: {exc.message}") from None
    except Exception as exc:  # a filter applied to the wrong type, for example
        raise SyncError(f"{where}: {type(exc).__name__}: {exc}") from None


def parse_object(text: str | None) -> dict[str, Any] | None:
    """The SecretString as a JSON object, or None when it is not one."""
    if text is None:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def field_text(value: Any) -> str:
    """A JSON field as a Secret value: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render(spec: TargetSpec, value: SecretValue) -> dict[str, bytes]:
    """The data of the target Secret. Raises SyncError naming the secret and the field or key."""
    secret = spec.source.name
    option = spec.customised
    if value.string is None and value.binary is not None:
        if option:
            raise SyncError(
                f"secret {secret}: {option}: {_first(spec, option)} cannot be read: the secret holds "
                "binary data (SecretBinary), not a JSON object"
            )
        data = {spec.key or DEFAULT_KEY: value.binary}
        check_data(spec, data)
        return data
    text = value.string or ""
    document = parse_object(text)
    if document is None:
        if option:
            raise SyncError(
                f"secret {secret}: {option}: {_first(spec, option)} cannot be read: the SecretString "
                "is not a JSON object"
            )
        data = {spec.key or DEFAULT_KEY: text.encode("utf-8")}
        check_data(spec, data)
        return data
    if spec.key is not None:
        data = {spec.key: text.encode("utf-8")}
        check_data(spec, data)
        return data

    data = {}
    names = spec.fields if spec.fields is not None else tuple(document)
    for field_name in (*names, *(name for name in spec.rename if name not in names)):
        if field_name not in document:
            raise SyncError(f"secret {secret}: field {field_name!r} does not exist in the SecretString")
    for field_name in names:
        key = spec.rename.get(field_name, field_name)
        if problem := key_problem(key):
            raise SyncError(
                f"secret {secret}: field {field_name!r} cannot be a Secret key ({problem}); "
                "rename it or leave it out with fields"
            )
        if key in data:
            raise SyncError(f"secret {secret}: field {field_name!r} would overwrite the key {key!r}")
        data[key] = field_text(document[field_name]).encode("utf-8")
    for key, template in spec.templates.items():
        if key in data:
            raise SyncError(f"secret {secret}: templates.{key}: the key {key!r} also comes from a field")
        data[key] = render_template(template, document, secret, key).encode("utf-8")
    check_data(spec, data)
    return data


def _first(spec: TargetSpec, option: str) -> str:
    if option == "fields":
        return f"field {spec.fields[0]!r}" if spec.fields else "fields"
    if option == "rename":
        return f"field {next(iter(spec.rename))!r}"
    return f"key {next(iter(spec.templates))!r}"


def check_data(spec: TargetSpec, data: Mapping[str, bytes]) -> None:
    """What the API server would refuse: keys a Secret type requires, and the size limit."""
    secret = f"secret {spec.source.name}"
    required = REQUIRED_KEYS.get(spec.type, ())
    missing = [key for key in required if key not in data]
    if missing:
        raise SyncError(
            f"{secret}: a {spec.type} Secret needs the keys {', '.join(required)}; "
            f"missing: {', '.join(missing)}"
        )
    one_of = ONE_OF_KEYS.get(spec.type)
    if one_of and not any(key in data for key in one_of):
        raise SyncError(f"{secret}: a {spec.type} Secret needs the key {' or '.join(one_of)}")
    size = sum(len(item) for item in data.values())
    if size > MAX_SECRET_SIZE:
        raise SyncError(f"{secret}: the data is {size} bytes, more than a Secret holds ({MAX_SECRET_SIZE})")


def sensitive_strings(value: SecretValue, data: Mapping[str, bytes] | None = None) -> set[str]:
    """Every string a value could show up as in output: the whole value, each field, each key's value.

    For ``module.no_log_values``, which masks every occurrence of each string in the task's output.
    Strings shorter than MIN_MASKED_LENGTH are left out: masking ``u`` or ``on`` (a user name, a
    flag) would mask those letters in every name, id and message of the output while hiding nothing
    worth hiding; masking ``""`` would mask everything.
    """
    found: set[str] = set()
    if value.string:
        found.add(value.string)
        document = parse_object(value.string)
        if document is not None:
            _leaves(document, found)
    if value.binary:
        found.add(base64.b64encode(value.binary).decode("ascii"))
        found.add(value.binary.decode("utf-8", "replace"))
    for item in (data or {}).values():
        found.add(item.decode("utf-8", "replace"))
    return {item for item in found if len(item) >= MIN_MASKED_LENGTH}


def _leaves(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for item in node.values():
            found.add(field_text(item))
            _leaves(item, found)
    elif isinstance(node, list):
        for item in node:
            _leaves(item, found)
    elif node is not None:
        found.add(field_text(node))


# --------------------------------------------------------------------------------------------------
# Hashes and target objects
# --------------------------------------------------------------------------------------------------


def content_hash(data: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) of the canonical content: ``{key: base64(value)}`` as JSON with sorted keys.

    That is the Secret's ``data`` field with sorted keys and no spaces, so a workload can compute it
    from the Secret alone (``jq -cS .data | tr -d '\\n' | sha256sum``).
    """
    canonical = json.dumps(
        {key: base64.b64encode(item).decode("ascii") for key, item in data.items()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def short_hash(item: bytes) -> str:
    """The first 12 hex digits of a value's SHA-256: shows that it changed without showing it."""
    return hashlib.sha256(item).hexdigest()[:12]


@dataclass
class TargetSecret:
    """A target Secret as found or as it is to be written (Kubernetes or directory alike)."""

    namespace: str
    name: str
    type: str = DEFAULT_TYPE
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict, repr=False)
    # False when the storage does not hold it as written (directory: modes, foreign entries).
    intact: bool = True
    revision: str | None = None  # Kubernetes resourceVersion, for optimistic concurrency

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def managed(self) -> bool:
        """Marked as ours: the managed-by label and a source ARN annotation."""
        return self.labels.get(LABEL_MANAGED_BY) == MANAGER and bool(
            self.annotations.get(ANNOTATION_SOURCE_ARN)
        )

    @property
    def content_hash(self) -> str:
        return content_hash(self.data)

    def view(self) -> dict[str, Any]:
        """What a diff may show: type, key names with short hashes, our marks. Never a value."""
        return {
            "type": self.type,
            "keys": {key: short_hash(self.data[key]) for key in sorted(self.data)},
            "labels": {key: value for key, value in self.labels.items() if key == LABEL_MANAGED_BY},
            "annotations": {key: self.annotations[key] for key in OWN_ANNOTATIONS if key in self.annotations},
        }


def up_to_date(spec: TargetSpec, current: TargetSecret | None) -> bool:
    """True when ``current`` was written from the source's current version with this mapping and is
    intact: the source value need not be read (the warm path makes no GetSecretValue call)."""
    if current is None or not current.managed or not current.intact or spec.source.version_id is None:
        return False
    marks = current.annotations
    return (
        current.type == spec.type
        and marks.get(ANNOTATION_SOURCE_ARN) == spec.source.arn
        and marks.get(ANNOTATION_SOURCE_VERSION) == spec.source.version_id
        and marks.get(ANNOTATION_MAPPING_HASH) == spec.mapping_hash
        and marks.get(ANNOTATION_CONTENT_HASH) == current.content_hash
    )


def desired_secret(spec: TargetSpec, data: Mapping[str, bytes], current: TargetSecret | None) -> TargetSecret:
    """The Secret to write: the data, our marks, and the labels and annotations others put there."""
    labels = dict(current.labels) if current is not None else {}
    labels[LABEL_MANAGED_BY] = MANAGER
    annotations = {
        key: value
        for key, value in (current.annotations if current is not None else {}).items()
        if key not in DROPPED_ANNOTATIONS
    }
    annotations.update(
        {
            ANNOTATION_SOURCE_ARN: spec.source.arn,
            ANNOTATION_SOURCE_VERSION: spec.source.version_id or "",
            ANNOTATION_CONTENT_HASH: content_hash(data),
            ANNOTATION_MAPPING_HASH: spec.mapping_hash,
        }
    )
    return TargetSecret(
        namespace=spec.namespace,
        name=spec.name,
        type=spec.type,
        labels=labels,
        annotations=annotations,
        data=dict(data),
        revision=current.revision if current is not None else None,
    )


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


@dataclass
class Desired:
    """One target as the task wants it.

    ``data`` is None when the source was not read because the target is up to date (see
    :func:`up_to_date`); ``error`` is set when the source could not be mapped.
    """

    spec: TargetSpec
    data: dict[str, bytes] | None = field(default=None, repr=False)
    error: str | None = None


@dataclass
class Step:
    """What happens to one target Secret."""

    action: str
    ref: str
    source: str
    arn: str
    version_id: str | None
    current: TargetSecret | None = field(default=None, repr=False)
    desired: TargetSecret | None = field(default=None, repr=False)
    reason: str | None = None
    failed: bool = False  # a skip that fails the task

    @property
    def checksum(self) -> str | None:
        if self.desired is not None:
            return self.desired.annotations.get(ANNOTATION_CONTENT_HASH)
        if self.current is not None:
            return self.current.annotations.get(ANNOTATION_CONTENT_HASH) or self.current.content_hash
        return None

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "source": self.source,
            "arn": self.arn,
            "version_id": self.version_id,
            "target": self.ref,
            "action": self.action,
            "checksum": self.checksum,
        }
        if self.reason:
            result["reason"] = self.reason
        return result


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(step.writes for step in self.steps)

    @property
    def failures(self) -> list[str]:
        return [step.reason or step.ref for step in self.steps if step.failed]

    @property
    def writes(self) -> list[Step]:
        """The steps that write, in the order to apply them: creates and updates, then prunes."""
        return [step for step in self.steps if step.writes and step.action != "pruned"] + [
            step for step in self.steps if step.action == "pruned"
        ]

    def results(self) -> list[dict[str, Any]]:
        return [step.result() for step in self.steps]

    def checksums(self) -> dict[str, str]:
        """``{"<namespace>/<name>": content hash}`` of every target Secret that exists after the task."""
        return {
            step.ref: step.checksum
            for step in self.steps
            if step.action in ("created", "updated", "unchanged") and step.checksum is not None
        }

    def diff(self) -> dict[str, dict[str, Any]]:
        """Before and after of every Secret that is written: key names and short hashes only."""
        absent = {"state": "absent"}
        before, after = {}, {}
        for step in self.writes:
            before[step.ref] = step.current.view() if step.current is not None else absent
            after[step.ref] = step.desired.view() if step.desired is not None else absent
        return {"before": before, "after": after}

    def blocked(self, reason: str) -> list[dict[str, Any]]:
        """The results when nothing is written: every write becomes a skip with ``reason``."""
        results = []
        for step in self.steps:
            result = step.result()
            if step.writes:
                result.update(action="skipped", reason=reason)
            results.append(result)
        return results


def prune_candidates(
    specs: Iterable[TargetSpec], current: Mapping[str, TargetSecret], namespaces: Collection[str]
) -> list[TargetSecret]:
    """Managed Secrets in the target namespaces that no selected source maps to any more."""
    wanted = {spec.ref for spec in specs}
    return [
        secret
        for ref, secret in sorted(current.items())
        if secret.managed and secret.namespace in namespaces and ref not in wanted
    ]


def plan(
    desired: Sequence[Desired],
    current: Mapping[str, TargetSecret],
    *,
    adopt: bool = False,
    prune: bool = False,
    namespaces: Collection[str] = (),
    gone: Collection[str] = (),
) -> Plan:
    """Decide every target's action from what the task wants and what exists.

    ``current`` maps ``"<namespace>/<name>"`` to the Secrets found (the targets of ``desired`` and the
    managed Secrets of ``namespaces``); ``gone`` holds the source ARNs that no longer exist (for the
    prune reason). A Secret not managed by us is never written unless ``adopt``: it is skipped as a
    failure instead, and so is every source that could not be mapped.
    """
    steps = []
    for item in sorted(desired, key=lambda entry: entry.spec.ref):
        spec = item.spec
        found = current.get(spec.ref)
        if item.error is not None:
            steps.append(_step("skipped", spec, current=found, reason=item.error, failed=True))
            continue
        if found is not None and not found.managed and not adopt:
            refusal = (
                f"the Secret {spec.ref} (for secret {spec.source.name}) exists and is not managed by "
                f"{MANAGER} (no {LABEL_MANAGED_BY}={MANAGER} label and {ANNOTATION_SOURCE_ARN} "
                "annotation); refusing to overwrite it, set adopt: true to take it over"
            )
            steps.append(_step("skipped", spec, current=found, reason=refusal, failed=True))
            continue
        if item.data is None:
            if found is None:
                raise ValueError(f"{spec.ref}: the source was not read but the target does not exist")
            steps.append(_step("unchanged", spec, current=found))
            continue
        wanted = desired_secret(spec, item.data, found)
        if found is None:
            steps.append(_step("created", spec, desired=wanted))
        elif _same(found, wanted):
            steps.append(_step("unchanged", spec, current=found))
        else:
            adopted = None if found.managed else "adopted"
            steps.append(_step("updated", spec, current=found, desired=wanted, reason=adopted))
    if prune:
        for secret in prune_candidates((item.spec for item in desired), current, namespaces):
            arn = secret.annotations[ANNOTATION_SOURCE_ARN]
            steps.append(
                Step(
                    "pruned",
                    ref=secret.ref,
                    source=source_name_from_arn(arn),
                    arn=arn,
                    version_id=secret.annotations.get(ANNOTATION_SOURCE_VERSION) or None,
                    current=secret,
                    reason=(
                        "the source secret no longer exists"
                        if arn in gone
                        else "the source secret is no longer selected"
                    ),
                )
            )
    return Plan(steps)


def _step(
    action: str,
    spec: TargetSpec,
    current: TargetSecret | None = None,
    desired: TargetSecret | None = None,
    reason: str | None = None,
    failed: bool = False,
) -> Step:
    source = spec.source
    return Step(
        action, spec.ref, source.name, source.arn, source.version_id, current, desired, reason, failed
    )


def _same(current: TargetSecret, wanted: TargetSecret) -> bool:
    return (
        current.intact
        and current.type == wanted.type
        and current.data == wanted.data
        and current.labels == wanted.labels
        and current.annotations == wanted.annotations
    )
