"""The pure logic of secrets_sync with plain values (no AWS, no Kubernetes, no mocks).

Selection and naming rules, key validation, rendering (fields, renames, sandboxed templates, binary
and plain values), hashing, the skip-read rule, the planner shared by both targets, and the diff.

(Named ``..._logic`` rather than ``test_secrets_sync.py``: pytest's default import mode cannot hold two
test modules of the same name, and ``tests/integration/test_secrets_sync.py`` has that name.)
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from ansible_collections.tenantforge.platform.plugins.module_utils import secrets_sync as ss

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/postgres/app-AbCdEf"
OTHER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/old/gone-GhIjKl"
PASSWORD = "pw-Zq8Lr4Vt9Xc2Bn6Mm1Kk"
DOCUMENT = {"username": "app_user", "password": PASSWORD, "port": 5432, "tls": True, "extra": None}


def source(
    name: str = "tenantforge/dev/postgres/app", arn: str = ARN, version: str | None = "v1"
) -> ss.Source:
    return ss.Source(name=name, arn=arn, version_id=version, filtered=True)


def spec(**overrides: Any) -> ss.TargetSpec:
    params: dict[str, Any] = {"source": source(), "namespace": "apps", "name": "postgres-app"}
    params.update(overrides)
    return ss.TargetSpec(**params)


def json_value(document: dict | None = None) -> ss.SecretValue:
    return ss.SecretValue(string=json.dumps(DOCUMENT if document is None else document))


def rendered(target: ss.TargetSpec, value: ss.SecretValue | None = None) -> dict[str, bytes]:
    return ss.render(target, value or json_value())


def written(target: ss.TargetSpec, data: dict[str, bytes]) -> ss.TargetSecret:
    """The Secret as a previous run wrote it."""
    return ss.desired_secret(target, data, None)


# ------------------------------------------------------------------------------------- selection


def test_nothing_selects_fails_and_empty_values_count_as_not_given() -> None:
    for secrets, prefix, tags in ((None, None, None), ([], "", {}), ([], None, None)):
        with pytest.raises(ss.SyncError, match=r"^nothing selects a secret: give secrets"):
            ss.make_selection(secrets, prefix, tags)


def test_selection_keeps_names_in_order_without_duplicates() -> None:
    selection = ss.make_selection(["b", "a", "b"], "tenantforge/", {"team": "core"})
    assert selection == ss.Selection(("b", "a"), "tenantforge/", {"team": "core"})
    assert selection.filtered is True
    assert ss.make_selection(["a"], None, None).filtered is False


@pytest.mark.parametrize(
    ("secrets", "prefix", "tags", "message"),
    [
        ([""], None, None, r"secrets\[0\] must be a non-empty secret name or ARN"),
        (None, "!tenantforge/", None, r"name_prefix '!tenantforge/' contains characters"),
        (None, "a b", None, r"name_prefix 'a b' contains characters"),
        (None, None, {"team": 1}, r"tags\.team must be a string \(quote it\), got int"),
    ],
)
def test_selection_errors_name_the_option(secrets: Any, prefix: Any, tags: Any, message: str) -> None:
    with pytest.raises(ss.SyncError, match=message):
        ss.make_selection(secrets, prefix, tags)


def test_prefix_and_all_tags_must_match() -> None:
    selection = ss.Selection((), "tenantforge/dev/", {"team": "core", "tier": "db"})
    assert selection.matches("tenantforge/dev/x", {"team": "core", "tier": "db", "more": "y"}) is True
    assert selection.matches("tenantforge/dev/x", {"team": "core"}) is False
    assert selection.matches("tenantforge/dev/x", {"team": "core", "tier": "DB"}) is False
    assert selection.matches("Tenantforge/dev/x", {"team": "core", "tier": "db"}) is False
    assert selection.matches("tenantforge/prod/x", {"team": "core", "tier": "db"}) is False
    assert ss.Selection((), None, {"team": "core"}).matches("any/name", {"team": "core"}) is True
    assert ss.Selection(("x",), None, {}).matches("x", {}) is False  # explicit names are not a filter


# ---------------------------------------------------------------------------------- names, keys


@pytest.mark.parametrize(
    ("name", "prefix", "expected"),
    [
        ("tenantforge/dev/postgres/app", "tenantforge/dev/", "postgres-app"),
        ("tenantforge/dev/postgres/app", "tenantforge/dev", "postgres-app"),
        ("tenantforge/dev/postgres/app", None, "tenantforge-dev-postgres-app"),
        ("tenantforge/dev/My_App+cfg=1@x.y", "tenantforge/dev/", "my-app-cfg-1-x.y"),
        ("other/dev/app", "tenantforge/", "other-dev-app"),
        ("tenantforge/dev/", "tenantforge/dev/", ""),
        ("tenantforge/dev/_hidden", "tenantforge/dev/", "-hidden"),
    ],
)
def test_default_name(name: str, prefix: str | None, expected: str) -> None:
    assert ss.default_name(name, prefix) == expected


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("password", None),
        ("tls.crt", None),
        (".dockerconfigjson", None),
        ("a_b-C.9", None),
        ("k" * 253, None),
        ("k" * 254, "it is longer than 253 characters"),
        ("", "it is empty"),
        (".", "it must not be '.' or '..'"),
        ("..", "it must not be '.' or '..'"),
        ("..metadata.json", "it must not start with '..'"),
        ("a/b", "it may only contain letters, digits, '-', '_' and '.'"),
        ("a b", "it may only contain letters, digits, '-', '_' and '.'"),
        ("clé", "it may only contain letters, digits, '-', '_' and '.'"),
    ],
)
def test_key_problem(key: str, problem: str | None) -> None:
    assert ss.key_problem(key) == problem


def test_secret_and_namespace_names() -> None:
    assert ss.name_problem("postgres-app") is None
    assert ss.name_problem("a.b-c.d") is None
    assert ss.name_problem("-app") is not None
    assert ss.name_problem("App") is not None
    assert ss.name_problem("a..b") is not None
    assert ss.name_problem("a" * 254) == "it is longer than 253 characters"
    assert ss.namespace_problem("tenant-1") is None
    assert ss.namespace_problem("a.b") is not None  # a label: no dots
    assert ss.namespace_problem("a" * 64) == "it is longer than 63 characters"
    with pytest.raises(ss.SyncError, match=r"^namespace: '\.\./etc' is not a valid namespace"):
        ss.check_namespace("../etc", "namespace")


def test_source_name_from_arn() -> None:
    assert ss.source_name_from_arn(ARN) == "tenantforge/dev/postgres/app"
    assert ss.source_name_from_arn("plain-name") == "plain-name"


# ------------------------------------------------------------------------------------- mappings


def test_mapping_rules_are_normalised() -> None:
    [rule] = ss.mapping_rules(
        [
            {
                "source": "tenantforge/dev/postgres/app",
                "name": "db",
                "namespace": "apps",
                "fields": ["username", "password"],
                "rename": {"username": "user"},
                "templates": {"url": "postgresql://{{ username }}@db/app"},
                "key": None,
                "type": None,
            }
        ]
    )
    assert rule == ss.MappingRule(
        source="tenantforge/dev/postgres/app",
        index=0,
        name="db",
        namespace="apps",
        fields=("username", "password"),
        rename={"username": "user"},
        templates={"url": "postgresql://{{ username }}@db/app"},
        key=None,
        type="Opaque",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"source": ""}, r"^mappings\[0\]\.source must be a secret name or ARN$"),
        ({"source": "s", "name": "Bad_Name"}, r"^mappings\[0\]\.name: 'Bad_Name' is not a valid Secret name"),
        ({"source": "s", "namespace": "a.b"}, r"^mappings\[0\]\.namespace: 'a\.b' is not a valid namespace"),
        (
            {"source": "s", "key": "value", "fields": ["a"]},
            r"^mappings\[0\]: key maps the whole value to one key; it cannot be combined",
        ),
        ({"source": "s", "key": "a/b"}, r"^mappings\[0\]\.key: 'a/b' is not a valid Secret key"),
        (
            {"source": "s", "fields": ["a"], "rename": {"b": "c"}},
            r"^mappings\[0\]\.rename\.b: field 'b' is not in fields$",
        ),
        ({"source": "s", "fields": ["a", "a"]}, r"^mappings\[0\]\.fields lists a field twice$"),
        (
            {"source": "s", "fields": ["db/url"]},
            r"^mappings\[0\]: field 'db/url' would become the key 'db/url', which is not a valid Secret key",
        ),
        (
            {"source": "s", "rename": {"a": "..x"}},
            r"^mappings\[0\]\.rename\.a: '\.\.x' is not a valid Secret key",
        ),
        (
            {"source": "s", "rename": {"a": "url"}, "templates": {"url": "x"}},
            r"^mappings\[0\]: the key 'url' would come from both field 'a' and a template$",
        ),
        (
            {"source": "s", "fields": ["a", "b"], "rename": {"a": "b"}},
            r"^mappings\[0\]: the key 'b' would come from both field 'a' and field 'b'$",
        ),
        (
            {"source": "s", "templates": {"a b": "x"}},
            r"^mappings\[0\]\.templates: 'a b' is not a valid Secret key",
        ),
        (
            {"source": "s", "templates": {"url": "{{ username "}},
            r"^mappings\[0\]\.templates\.url: the template is not valid Jinja2: ",
        ),
        ({"source": "s", "templates": {"n": 5}}, r"^mappings\[0\]\.templates\.n must be a string, got int$"),
        (
            {"source": "s", "type": "kubernetes.io/service-account-token"},
            r"^mappings\[0\]\.type: kubernetes\.io/service-account-token Secrets are issued by Kubernetes",
        ),
    ],
)
def test_mapping_errors_name_the_option(entry: dict, message: str) -> None:
    with pytest.raises(ss.SyncError, match=message):
        ss.mapping_rules([entry])


# ------------------------------------------------------------------------------------- resolving


def test_resolve_targets_defaults_overrides_and_warnings() -> None:
    selection = ss.Selection(("tenantforge/other/cache",), "tenantforge/dev/", {})
    app = source()
    listed_only = ss.Source("tenantforge/other/cache", OTHER_ARN, "v9", filtered=False)
    rules = ss.mapping_rules(
        [
            {"source": ARN, "name": "db", "namespace": "data"},  # matched by ARN
            {"source": "tenantforge/dev/postgres/app", "name": "db-copy"},  # a second target
            {"source": "tenantforge/dev/missing"},
        ]
    )
    specs, warnings = ss.resolve_targets([app, listed_only], rules, selection, "apps")
    assert [(s.source.name, s.ref) for s in specs] == [
        ("tenantforge/dev/postgres/app", "data/db"),
        ("tenantforge/dev/postgres/app", "apps/db-copy"),
        ("tenantforge/other/cache", "apps/tenantforge-other-cache"),  # not selected by the prefix: kept whole
    ]
    assert warnings == [
        "mappings[2]: the secret tenantforge/dev/missing is not selected by secrets, name_prefix or tags "
        "(or does not exist); the mapping is ignored"
    ]


def test_resolve_targets_invalid_derived_name_names_the_secret() -> None:
    selection = ss.Selection((), "tenantforge/dev/", {})
    bad = ss.Source("tenantforge/dev/_private", OTHER_ARN, "v1", filtered=True)
    with pytest.raises(ss.SyncError) as raised:
        ss.resolve_targets([bad], [], selection, "apps")
    assert str(raised.value) == (
        "secret tenantforge/dev/_private: the derived Secret name '-private' is not valid (it must be a "
        "DNS-1123 subdomain: lower case letters, digits, '-' and '.', starting and ending with a letter "
        "or digit); set mappings[].name for it"
    )
    # with a name of its own it is fine
    rules = ss.mapping_rules([{"source": "tenantforge/dev/_private", "name": "private"}])
    specs, _ = ss.resolve_targets([bad], rules, selection, "apps")
    assert [s.ref for s in specs] == ["apps/private"]


def test_resolve_targets_two_sources_one_secret_fails_naming_both() -> None:
    selection = ss.Selection((), "tenantforge/", {})
    one = ss.Source("tenantforge/App", ARN, "v1", filtered=True)
    two = ss.Source("tenantforge/app", OTHER_ARN, "v1", filtered=True)
    with pytest.raises(
        ss.SyncError,
        match=r"the Secret apps/app would be written from several secrets \(tenantforge/App, tenantforge/app\)",
    ):
        ss.resolve_targets([one, two], [], selection, "apps")


# -------------------------------------------------------------------------------------- rendering


def test_all_fields_by_default_non_strings_as_json() -> None:
    document = {**DOCUMENT, "nested": {"b": [1, "x"], "a": "é"}}
    assert rendered(spec(), json_value(document)) == {
        "username": b"app_user",
        "password": PASSWORD.encode(),
        "port": b"5432",
        "tls": b"true",
        "extra": b"null",
        "nested": '{"b":[1,"x"],"a":"é"}'.encode(),
    }


def test_fields_rename_and_templates() -> None:
    target = spec(
        fields=("username", "password"),
        rename={"username": "user"},
        templates={
            "url": "postgresql://{{ username }}:{{ password | urlencode }}@db:{{ port }}/app",
            "dsn.txt": "host=db user={{ username }}\n",
        },
    )
    document = {**DOCUMENT, "password": "p@ss/w:rd"}
    assert rendered(target, json_value(document)) == {
        "user": b"app_user",
        "password": b"p@ss/w:rd",
        "url": b"postgresql://app_user:p%40ss/w%3Ard@db:5432/app",
        "dsn.txt": b"host=db user=app_user\n",
    }


def test_empty_fields_list_means_templates_only() -> None:
    target = spec(fields=(), templates={"user-at-host": "{{ username }}@db"})
    assert rendered(target) == {"user-at-host": b"app_user@db"}


def test_binary_and_plain_values_go_to_one_key() -> None:
    binary = ss.SecretValue(binary=b"\x00\xffraw")
    assert ss.render(spec(), binary) == {"value": b"\x00\xffraw"}
    assert ss.render(spec(key="keystore.p12"), binary) == {"keystore.p12": b"\x00\xffraw"}
    plain = ss.SecretValue(string="just a token")
    assert ss.render(spec(), plain) == {"value": b"just a token"}
    assert ss.render(spec(key="token"), plain) == {"token": b"just a token"}
    # a JSON array or string is not an object: it is a plain value too
    assert ss.render(spec(), ss.SecretValue(string='["a"]')) == {"value": b'["a"]'}
    # a JSON object with key: the whole document under that key
    text = json.dumps(DOCUMENT)
    assert ss.render(spec(key="config.json"), ss.SecretValue(string=text)) == {"config.json": text.encode()}


@pytest.mark.parametrize(
    ("overrides", "value", "message"),
    [
        (
            {"fields": ("username",)},
            ss.SecretValue(string="not json"),
            "secret tenantforge/dev/postgres/app: fields: field 'username' cannot be read: the SecretString is not a JSON object",
        ),
        (
            {"rename": {"username": "user"}},
            ss.SecretValue(string="[1, 2]"),
            "secret tenantforge/dev/postgres/app: rename: field 'username' cannot be read: the SecretString is not a JSON object",
        ),
        (
            {"templates": {"url": "{{ username }}"}},
            ss.SecretValue(binary=b"\x01"),
            "secret tenantforge/dev/postgres/app: templates: key 'url' cannot be read: the secret holds binary data (SecretBinary), not a JSON object",
        ),
        (
            {"fields": ("username", "pasword")},
            None,
            "secret tenantforge/dev/postgres/app: field 'pasword' does not exist in the SecretString",
        ),
        (
            {"rename": {"user": "login"}},
            None,
            "secret tenantforge/dev/postgres/app: field 'user' does not exist in the SecretString",
        ),
        (
            {"templates": {"url": "{{ user }}@db"}},
            None,
            "secret tenantforge/dev/postgres/app: templates.url: 'user' is undefined (the template sees only the secret's fields)",
        ),
        (
            {"templates": {"password": "x"}},
            None,
            "secret tenantforge/dev/postgres/app: templates.password: the key 'password' also comes from a field",
        ),
        (
            {"type": "kubernetes.io/tls"},
            None,
            "secret tenantforge/dev/postgres/app: a kubernetes.io/tls Secret needs the keys tls.crt, tls.key; missing: tls.crt, tls.key",
        ),
        (
            {"type": "kubernetes.io/basic-auth", "fields": ("port",)},
            None,
            "secret tenantforge/dev/postgres/app: a kubernetes.io/basic-auth Secret needs the key username or password",
        ),
    ],
)
def test_render_errors_name_the_secret_and_the_field(overrides: dict, value: Any, message: str) -> None:
    with pytest.raises(ss.SyncError) as raised:
        rendered(spec(**overrides), value)
    assert str(raised.value) == message
    assert PASSWORD not in str(raised.value)


def test_field_that_cannot_be_a_key_must_be_renamed_or_left_out() -> None:
    value = json_value({"db/url": "x", "user": "u"})
    with pytest.raises(ss.SyncError, match=r"field 'db/url' cannot be a Secret key \(it may only contain"):
        rendered(spec(), value)
    assert rendered(spec(rename={"db/url": "db-url"}), value) == {"db-url": b"x", "user": b"u"}
    assert rendered(spec(fields=("user",)), value) == {"user": b"u"}


def test_typed_secret_with_its_keys_and_size_limit() -> None:
    tls = spec(type="kubernetes.io/tls", rename={"cert": "tls.crt", "key": "tls.key"})
    assert rendered(tls, json_value({"cert": "C", "key": "K"})) == {"tls.crt": b"C", "tls.key": b"K"}
    with pytest.raises(
        ss.SyncError, match=r"the data is 1048577 bytes, more than a Secret holds \(1048576\)"
    ):
        ss.render(spec(), ss.SecretValue(binary=b"x" * (1024 * 1024 + 1)))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ username.__class__.__mro__ }}",
        "{{ username.upper.__globals__ }}",
        "{{ username.__len__() }}",
        "{% set bag = [] %}{{ bag.append(password) }}",
        "{{ {}.update(a=1) }}",
    ],
)
def test_sandbox_refuses_unsafe_access(template: str) -> None:
    with pytest.raises(ss.SyncError, match=r"^secret tenantforge/dev/postgres/app: templates\.out: "):
        rendered(spec(templates={"out": template}))


@pytest.mark.parametrize(
    "name", ["lipsum", "range", "dict", "cycler", "joiner", "namespace", "self.__init__"]
)
def test_sandbox_has_no_globals(name: str) -> None:
    with pytest.raises(ss.SyncError, match=r"^secret tenantforge/dev/postgres/app: templates\.out: "):
        rendered(spec(templates={"out": "{{ " + name + " }}"}))


def test_sandbox_context_is_the_fields_only() -> None:
    target = spec(fields=(), templates={"out": "{{ username }}|{{ port + 1 }}|{{ password | length }}"})
    assert rendered(target) == {"out": f"app_user|5433|{len(PASSWORD)}".encode()}
    assert ss.sandbox().autoescape is False
    assert rendered(spec(fields=(), templates={"out": "<{{ '&' }}>"})) == {"out": b"<&>"}


def test_sensitive_strings_cover_every_form_of_a_value() -> None:
    text = json.dumps(
        {
            "user": "u-1234",
            "nested": {"token": "t-2345", "list": ["l-3456"]},
            "n": 75432,
            "empty": "",
            "on": "on",
        }
    )
    found = ss.sensitive_strings(ss.SecretValue(string=text), {"url": b"u-1234@db", "flag": b"yes"})
    assert found == {
        text,
        "u-1234",
        '{"token":"t-2345","list":["l-3456"]}',
        "t-2345",
        '["l-3456"]',
        "l-3456",
        "75432",
        "u-1234@db",
    }
    assert ss.sensitive_strings(ss.SecretValue(binary=b"\x01bin")) == {"AWJpbg==", "\x01bin"}
    assert ss.sensitive_strings(ss.SecretValue(string="abc")) == set()  # too short to mask usefully


# ------------------------------------------------------------------------------------------ hashes


def test_content_hash_is_the_sha256_of_sorted_base64_data() -> None:
    data = {"b": b"2", "a": b"1"}
    expected = hashlib.sha256(b'{"a":"MQ==","b":"Mg=="}').hexdigest()
    assert ss.content_hash(data) == expected
    assert ss.content_hash({"a": b"1", "b": b"2"}) == expected
    assert ss.content_hash({"a": b"1", "b": b"3"}) != expected
    # keys and values are not confused: {"ab": ""} and {"a": "b"} differ
    assert ss.content_hash({"ab": b""}) != ss.content_hash({"a": b"b"})
    assert ss.short_hash(b"x") == "2d711642b726"


def test_mapping_hash_follows_the_mapping() -> None:
    base = spec()
    assert base.mapping_hash == spec().mapping_hash
    assert base.mapping_hash == spec(source=source(version="v2")).mapping_hash  # not the version
    variants = [
        spec(fields=("username",)),
        spec(fields=()),
        spec(rename={"username": "user"}),
        spec(templates={"url": "{{ username }}"}),
        spec(key="value"),
        spec(type="kubernetes.io/basic-auth"),
        spec(name="other"),
        spec(namespace="other"),
    ]
    hashes = {base.mapping_hash} | {variant.mapping_hash for variant in variants}
    assert len(hashes) == len(variants) + 1
    assert base.mapping == {
        "format": 1,
        "namespace": "apps",
        "name": "postgres-app",
        "type": "Opaque",
        "fields": None,
        "rename": {},
        "templates": {},
        "key": None,
    }


# ---------------------------------------------------------------------------------- skipping reads


def test_up_to_date_needs_every_mark_to_match() -> None:
    target = spec()
    data = rendered(target)
    current = written(target, data)
    assert ss.up_to_date(target, current) is True
    assert ss.up_to_date(target, None) is False
    assert ss.up_to_date(spec(source=source(version="v2")), current) is False  # new source version
    assert (
        ss.up_to_date(spec(source=source(version=None)), written(spec(source=source(version=None)), data))
        is False
    )
    assert ss.up_to_date(spec(source=source(arn=OTHER_ARN)), current) is False  # recreated secret
    assert ss.up_to_date(spec(fields=("username",)), current) is False  # mapping changed
    assert ss.up_to_date(spec(type="kubernetes.io/basic-auth"), current) is False
    tampered = written(target, data)
    tampered.data["password"] = b"edited by hand"
    assert ss.up_to_date(target, tampered) is False
    broken = written(target, data)
    broken.intact = False
    assert ss.up_to_date(target, broken) is False
    unlabelled = written(target, data)
    del unlabelled.labels[ss.LABEL_MANAGED_BY]
    assert ss.up_to_date(target, unlabelled) is False


# ------------------------------------------------------------------------------------------ planning


def unmanaged(namespace: str = "apps", name: str = "postgres-app") -> ss.TargetSecret:
    return ss.TargetSecret(
        namespace=namespace,
        name=name,
        labels={"team": "core"},
        annotations={"kubectl.kubernetes.io/last-applied-configuration": '{"data":{"password":"b2xk"}}'},
        data={"password": b"old"},
    )


def test_plan_create_marks_the_secret() -> None:
    target = spec()
    result = ss.plan([ss.Desired(target, rendered(target))], {})
    [step] = result.steps
    assert (step.action, step.ref, step.source, step.arn, step.version_id) == (
        "created",
        "apps/postgres-app",
        "tenantforge/dev/postgres/app",
        ARN,
        "v1",
    )
    assert step.desired is not None
    assert step.desired.labels == {"app.kubernetes.io/managed-by": "tenantforge"}
    assert step.desired.annotations == {
        "tenantforge.io/source-arn": ARN,
        "tenantforge.io/source-version-id": "v1",
        "tenantforge.io/content-hash": ss.content_hash(rendered(target)),
        "tenantforge.io/mapping-hash": target.mapping_hash,
    }
    assert result.changed is True
    assert result.checksums() == {"apps/postgres-app": ss.content_hash(rendered(target))}
    assert result.results() == [
        {
            "source": "tenantforge/dev/postgres/app",
            "arn": ARN,
            "version_id": "v1",
            "target": "apps/postgres-app",
            "action": "created",
            "checksum": ss.content_hash(rendered(target)),
        }
    ]


def test_plan_unchanged_without_read_and_after_read() -> None:
    target = spec()
    current = written(target, rendered(target))
    for desired in (ss.Desired(target), ss.Desired(target, rendered(target))):
        result = ss.plan([desired], {current.ref: current})
        assert [step.action for step in result.steps] == ["unchanged"]
        assert result.changed is False
        assert result.checksums() == {"apps/postgres-app": current.annotations[ss.ANNOTATION_CONTENT_HASH]}
        assert result.diff() == {"before": {}, "after": {}}


def test_plan_update_on_new_content_and_diff_shows_hashes_only() -> None:
    target = spec()
    old = rendered(target)
    current = written(target, old)
    new_target = spec(source=source(version="v2"))
    new = rendered(new_target, json_value({**DOCUMENT, "password": "pw-rotated-Yy7"}))
    result = ss.plan([ss.Desired(new_target, new)], {current.ref: current})
    [step] = result.steps
    assert step.action == "updated" and step.reason is None
    assert step.checksum == ss.content_hash(new) != ss.content_hash(old)
    diff = result.diff()
    assert diff["before"]["apps/postgres-app"]["keys"] == {
        key: hashlib.sha256(item).hexdigest()[:12] for key, item in sorted(old.items())
    }
    assert (
        diff["after"]["apps/postgres-app"]["keys"]["password"]
        == hashlib.sha256(b"pw-rotated-Yy7").hexdigest()[:12]
    )
    assert diff["after"]["apps/postgres-app"]["annotations"]["tenantforge.io/source-version-id"] == "v2"
    text = json.dumps(diff)
    for secret in (PASSWORD, "pw-rotated-Yy7", "app_user", base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in text


def test_plan_new_version_same_content_updates_the_marks_only() -> None:
    target = spec()
    current = written(target, rendered(target))
    new_target = spec(source=source(version="v2"))
    result = ss.plan([ss.Desired(new_target, rendered(new_target))], {current.ref: current})
    [step] = result.steps
    assert step.action == "updated"
    assert step.checksum == current.annotations[ss.ANNOTATION_CONTENT_HASH]
    assert step.desired is not None and step.desired.annotations[ss.ANNOTATION_SOURCE_VERSION] == "v2"


def test_plan_refuses_an_unmanaged_secret_unless_adopt() -> None:
    target = spec()
    found = unmanaged()
    refused = ss.plan([ss.Desired(target, rendered(target))], {found.ref: found})
    [step] = refused.steps
    assert step.action == "skipped" and step.failed is True
    assert refused.failures == [
        "the Secret apps/postgres-app (for secret tenantforge/dev/postgres/app) exists and is not managed "
        "by tenantforge (no app.kubernetes.io/managed-by=tenantforge label and tenantforge.io/source-arn "
        "annotation); refusing to overwrite it, set adopt: true to take it over"
    ]
    assert refused.changed is False

    adopted = ss.plan([ss.Desired(target, rendered(target))], {found.ref: found}, adopt=True)
    [step] = adopted.steps
    assert (step.action, step.reason, step.failed) == ("updated", "adopted", False)
    assert step.desired is not None
    assert step.desired.labels == {"team": "core", "app.kubernetes.io/managed-by": "tenantforge"}
    # kubectl's copy of the old object (with its data) is not kept
    assert sorted(step.desired.annotations) == sorted(ss.OWN_ANNOTATIONS)


def test_plan_label_without_source_annotation_is_not_managed() -> None:
    target = spec()
    found = unmanaged()
    found.labels[ss.LABEL_MANAGED_BY] = "tenantforge"
    assert found.managed is False
    assert [
        step.action for step in ss.plan([ss.Desired(target, rendered(target))], {found.ref: found}).steps
    ] == ["skipped"]


def test_plan_keeps_foreign_labels_and_annotations_of_managed_secrets() -> None:
    target = spec()
    current = written(target, rendered(target))
    current.labels["team"] = "core"
    current.annotations["reloader.stakater.com/match"] = "true"
    result = ss.plan([ss.Desired(target, rendered(target))], {current.ref: current})
    assert [step.action for step in result.steps] == ["unchanged"]


def test_plan_prune_deletes_managed_only_in_target_namespaces_with_reasons() -> None:
    target = spec()
    kept = written(target, rendered(target))
    deleted_source = written(
        spec(source=source("tenantforge/dev/old/gone", OTHER_ARN), name="gone"), {"a": b"1"}
    )
    deselected_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantforge/dev/other-MnOpQr"
    deselected = written(
        spec(source=source("tenantforge/dev/other", deselected_arn), name="other"), {"a": b"2"}
    )
    elsewhere = written(spec(source=source("x", OTHER_ARN), namespace="elsewhere", name="gone"), {"a": b"3"})
    foreign = unmanaged(name="hand-made")
    current = {s.ref: s for s in (kept, deleted_source, deselected, elsewhere, foreign)}
    desired = [ss.Desired(target)]

    assert [s.action for s in ss.plan(desired, current, namespaces=["apps"]).steps] == ["unchanged"]

    result = ss.plan(desired, current, prune=True, namespaces=["apps"], gone={OTHER_ARN})
    assert [(s.action, s.ref, s.source, s.version_id, s.reason) for s in result.steps] == [
        ("unchanged", "apps/postgres-app", "tenantforge/dev/postgres/app", "v1", None),
        ("pruned", "apps/gone", "tenantforge/dev/old/gone", "v1", "the source secret no longer exists"),
        ("pruned", "apps/other", "tenantforge/dev/other", "v1", "the source secret is no longer selected"),
    ]
    assert result.checksums() == {"apps/postgres-app": kept.annotations[ss.ANNOTATION_CONTENT_HASH]}
    assert [s.ref for s in result.writes] == ["apps/gone", "apps/other"]
    assert result.diff()["after"] == {"apps/gone": {"state": "absent"}, "apps/other": {"state": "absent"}}
    assert ss.prune_candidates([target], current, ["apps"]) == [deleted_source, deselected]


def test_plan_failures_block_every_write() -> None:
    good, bad = spec(), spec(source=source("tenantforge/dev/bad", OTHER_ARN), name="bad")
    result = ss.plan(
        [
            ss.Desired(good, rendered(good)),
            ss.Desired(bad, error="secret tenantforge/dev/bad: field 'x' does not exist"),
        ],
        {},
    )
    assert result.failures == ["secret tenantforge/dev/bad: field 'x' does not exist"]
    assert [(r["target"], r["action"], r.get("reason")) for r in result.blocked("not written")] == [
        ("apps/bad", "skipped", "secret tenantforge/dev/bad: field 'x' does not exist"),
        ("apps/postgres-app", "skipped", "not written"),
    ]


def test_plan_rewrites_a_secret_whose_storage_is_not_intact() -> None:
    target = spec()
    current = written(target, rendered(target))
    current.intact = False
    result = ss.plan([ss.Desired(target, rendered(target))], {current.ref: current})
    assert [step.action for step in result.steps] == ["updated"]


def test_target_secret_repr_never_shows_values() -> None:
    secret = written(spec(), rendered(spec()))
    step = ss.plan([ss.Desired(spec(), rendered(spec()))], {}).steps[0]
    for text in (repr(secret), repr(step), repr(ss.Desired(spec(), rendered(spec()))), repr(json_value())):
        assert PASSWORD not in text and "app_user" not in text
