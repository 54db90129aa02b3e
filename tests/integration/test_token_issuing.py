"""Issuing, refreshing and signing in (lambdas/tenantforge_lambda/issuing.py, lambdas/token/handler.py,
``python -m tenantforge_lambda``) against real components.

GIVEN a private PostgreSQL 15 migrated with prisma/migrations and two organizations made by
tenant_bootstrap's own code (as tenantforge_owner), the signing key and JWKS secrets in the tests' moto
server in the shape tenantforge.platform.platform_secret writes them, and the functions connected as
tenantforge_app; WHEN tokens are issued, refreshed and exchanged on a frozen clock; THEN the claims are
the database's, the authorizer accepts them with the exact context, and inactivity, the session
maximum, revoked permissions, suspended organizations and disabled users take effect as issue 6 says.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import jwt
import psycopg
import pytest
from conftest import BIN, REPO, Emulator
from test_postgres import LocalServer, private_server
from test_prisma_schema import apply_migrations

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material
from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
    check_permissions,
    check_tenants,
    converge,
)
from authorizer import handler as authorizer_handler
from tenantforge_lambda import passwords, secrets
from tenantforge_lambda.config import Settings
from tenantforge_lambda.database import Database
from tenantforge_lambda.issuing import IssueError, Issuer
from tenantforge_lambda.jwks import JwksCache
from tenantforge_lambda.signing import SigningKeyCache

pytestmark = pytest.mark.integration

ISSUER = "https://auth.tenantforge.test"
AUDIENCE = "tenantforge-api"
T0 = 1_790_000_000  # a fixed instant: every clock below is frozen relative to it
MINUTE = 60
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123defg/prod/GET/api/tasks"
PASSWORD = "correct horse battery staple"
TENANTS: list[dict[str, Any]] = [
    {
        "org_slug": "acme",
        "org_name": "ACME Corporation",
        "admin_email": "ada@acme.example",
        "users": [
            {"email": "bob@acme.example", "roles": ["admin"]},
            {"email": "dan@acme.example", "roles": ["viewer"]},
            {"email": "homer@acme.example", "roles": ["member", "viewer"]},
        ],
    },
    {"org_slug": "globex", "org_name": "Globex", "admin_email": "hank@globex.example"},
]
MEMBER_AND_VIEWER = ["org:read", "roles:read", "tasks:cancel", "tasks:create", "tasks:read", "users:read"]


class Clock:
    """A frozen clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Stack:
    server: LocalServer
    emulator: Emulator
    signing_secret_id: str
    jwks_secret_id: str
    settings: Settings

    def app_dsn(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.server.port,
            user="tenantforge_app",
            password=self.server.passwords["tenantforge_app"],
            dbname="tenantforge",
        )

    def issuer(self, clock: Clock, settings: Settings | None = None) -> Issuer:
        settings = settings or self.settings
        sm = self.emulator.client("secretsmanager")
        signing = SigningKeyCache(
            secrets.reader(self.signing_secret_id, sm),
            settings.algorithms,
            settings.jwks_cache_seconds,
            clock,
        )
        jwks = JwksCache(
            secrets.reader(self.jwks_secret_id, sm),
            settings.algorithms,
            settings.jwks_cache_seconds,
            settings.jwks_min_refetch_seconds,
            clock,
        )
        return Issuer(settings, Database(self.app_dsn), signing.get, jwks.get, clock)

    def authorizer(self, clock: Clock) -> authorizer_handler.Authorizer:
        sm = self.emulator.client("secretsmanager")
        jwks = JwksCache(
            secrets.reader(self.jwks_secret_id, sm),
            self.settings.algorithms,
            self.settings.jwks_cache_seconds,
            self.settings.jwks_min_refetch_seconds,
            clock,
        )
        return authorizer_handler.Authorizer(self.settings, jwks.get, clock)

    def owner(self) -> psycopg.Connection[Any]:
        connection = self.server.connect("tenantforge_owner")
        connection.autocommit = True
        return connection

    def bootstrap(self, specs: list[dict[str, Any]]) -> None:
        """tenant_bootstrap's own code, as the module runs it."""
        tenants = check_tenants(specs, prefix=True)
        with self.owner() as connection:
            catalog = check_permissions(connection, tenants, prefix=True)
            for tenant in tenants:
                converge(connection, tenant, catalog, check_mode=False)

    def org_id(self, slug: str) -> str:
        with self.owner() as connection:
            row = connection.execute("SELECT id::text FROM organizations WHERE slug = %s", (slug,)).fetchone()
        assert row is not None
        return str(row[0])

    def as_owner_in(self, slug: str, statement: str, params: tuple[Any, ...] = ()) -> int:
        org_id = self.org_id(slug)
        with self.owner() as connection, connection.transaction():
            connection.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
            return connection.execute(statement, params).rowcount

    def set_password(self, slug: str, email: str, password_hash: str) -> None:
        self.as_owner_in(
            slug,
            "INSERT INTO user_credentials (organization_id, user_id, password_hash) "
            "SELECT organization_id, id, %s FROM users WHERE email = %s "
            "ON CONFLICT (organization_id, user_id) DO UPDATE SET password_hash = excluded.password_hash",
            (password_hash, email),
        )


def write_signing_key(emulator: Emulator, signing_id: str, jwks_id: str, algorithm: str) -> str:
    """A new signing key in the shape platform_secret writes (kid = RFC 7638 thumbprint), published in
    the JWKS next to the keys already there (as a rotation does). Returns the kid."""
    sm = emulator.client("secretsmanager")
    key = secret_material.generate_private_key(algorithm, rsa_key_size=2048)
    jwk = {**secret_material.public_jwk(key), "use": "sig", "alg": algorithm}
    value = json.dumps(
        {"kid": jwk["kid"], "alg": algorithm, "private_key_pem": secret_material.private_key_to_pem(key)}
    )
    try:
        published = json.loads(sm.get_secret_value(SecretId=jwks_id)["SecretString"])["keys"]
        sm.put_secret_value(SecretId=jwks_id, SecretString=json.dumps({"keys": [jwk, *published]}))
        sm.put_secret_value(SecretId=signing_id, SecretString=value)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=jwks_id, SecretString=json.dumps({"keys": [jwk]}))
        sm.create_secret(Name=signing_id, SecretString=value)
    return str(jwk["kid"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[Stack]:
    prefix = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt"
    signing_id, jwks_id = f"{prefix}/signing-key", f"{prefix}/jwks"
    write_signing_key(emulator, signing_id, jwks_id, "RS256")
    settings = Settings(
        algorithms=("RS256", "ES256"),
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_secret_id=jwks_id,
        signing_secret_id=signing_id,
    )
    with private_server(tmp_path_factory.mktemp("token-postgres"), start=True) as server:
        apply_migrations(server)
        built = Stack(server, emulator, signing_id, jwks_id, settings)
        built.bootstrap(TENANTS)
        built.set_password("acme", "ada@acme.example", passwords.hash_password(PASSWORD))
        yield built


def authorize(stack: Stack, clock: Clock, token: str) -> dict[str, Any]:
    return stack.authorizer(clock).authorize(
        {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": METHOD_ARN}
    )


def denied(stack: Stack, clock: Clock, token: str, caplog: pytest.LogCaptureFixture) -> str:
    """The authorizer's reason for refusing ``token``."""
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="tenantforge.authorizer"),
        pytest.raises(Exception, match=r"^Unauthorized$"),
    ):
        authorize(stack, clock, token)
    return str(json.loads(caplog.records[-1].getMessage())["reason"])


# --- issuing -------------------------------------------------------------------------------------------


def test_an_issued_token_carries_the_databases_roles_and_permissions(stack: Stack) -> None:
    clock = Clock(T0)
    issued = stack.issuer(clock).issue("acme", "Homer@ACME.example ")
    header = jwt.get_unverified_header(issued.token)
    with stack.owner() as owner:
        owner.execute("SELECT set_config('app.current_org_id', %s, false)", (stack.org_id("acme"),))
        row = owner.execute("SELECT id::text FROM users WHERE email = 'homer@acme.example'").fetchone()
    assert row is not None
    signing = json.loads(
        stack.emulator.client("secretsmanager").get_secret_value(SecretId=stack.signing_secret_id)[
            "SecretString"
        ]
    )
    assert header == {"alg": "RS256", "kid": signing["kid"], "typ": "at+jwt"}
    claims = dict(issued.claims)
    jti = claims.pop("jti")
    assert uuid.UUID(jti).version == 4
    assert claims == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": row[0],
        "org_id": stack.org_id("acme"),
        "org_slug": "acme",
        # member and viewer overlap: flattened, sorted, each once.
        "permissions": MEMBER_AND_VIEWER,
        "roles": ["member", "viewer"],
        "iat": T0,
        "nbf": T0,
        "exp": T0 + 60 * MINUTE,
        "auth_time": T0,
    }
    assert jwt.decode(issued.token, options={"verify_signature": False}) == issued.claims
    policy = authorize(stack, clock, issued.token)
    assert policy["principalId"] == row[0]
    assert policy["context"] == {
        "org_id": stack.org_id("acme"),
        "org_slug": "acme",
        "user_id": row[0],
        "permissions": ",".join(MEMBER_AND_VIEWER),
        "roles": "member,viewer",
        "token_exp": T0 + 60 * MINUTE,
        "jti": jti,
    }


@pytest.mark.parametrize(
    ("org", "email"),
    [
        ("acme", "nobody@acme.example"),
        ("nobody", "ada@acme.example"),
        ("globex", "ada@acme.example"),
        ("ACME", "ada@acme.example"),
    ],
)
def test_no_token_for_someone_the_organization_does_not_have(stack: Stack, org: str, email: str) -> None:
    with pytest.raises(IssueError) as refused:
        stack.issuer(Clock(T0)).issue(org, email)
    assert refused.value.reason == "unknown_user"


# --- inactivity and the session maximum, on a frozen clock -------------------------------------------


def test_59_idle_minutes_allowed_61_denied(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    token = stack.issuer(clock).issue("acme", "ada@acme.example").token
    clock.advance(59 * MINUTE)
    assert authorize(stack, clock, token)["context"]["org_slug"] == "acme"
    clock.advance(2 * MINUTE)
    assert denied(stack, clock, token, caplog) == "expired"


def test_a_refresh_at_50_minutes_extends_the_session(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    first = issuer.issue("acme", "ada@acme.example")
    clock.advance(50 * MINUTE)
    second = issuer.refresh(first.token)
    assert second.claims["exp"] == T0 + 110 * MINUTE
    assert (second.claims["iat"], second.claims["nbf"], second.claims["auth_time"]) == (
        T0 + 50 * MINUTE,
        T0 + 50 * MINUTE,
        T0,
    )
    assert second.claims["jti"] != first.claims["jti"]
    assert {k: v for k, v in second.claims.items() if k not in ("iat", "nbf", "exp", "jti")} == {
        k: v for k, v in first.claims.items() if k not in ("iat", "nbf", "exp", "jti")
    }
    clock.advance(11 * MINUTE)  # 61 minutes after sign-in, 11 after the refresh
    assert denied(stack, clock, first.token, caplog) == "expired"
    assert authorize(stack, clock, second.token)["principalId"] == first.claims["sub"]
    clock.advance(48 * MINUTE)  # 59 minutes after the refresh
    assert authorize(stack, clock, second.token)["principalId"] == first.claims["sub"]
    clock.advance(2 * MINUTE)
    assert denied(stack, clock, second.token, caplog) == "expired"


def test_an_expired_token_cannot_be_refreshed_even_within_the_leeway(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    token = issuer.issue("acme", "ada@acme.example").token
    clock.advance(60 * MINUTE)  # exp itself: the authorizer's leeway would still let it in
    with pytest.raises(IssueError) as refused:
        issuer.refresh(token)
    assert refused.value.reason == "invalid_token:expired"
    clock.advance(1)
    with pytest.raises(IssueError) as refused:
        issuer.refresh(token)
    assert refused.value.reason == "invalid_token:expired"


def test_refreshes_never_go_past_the_session_maximum(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    issued = issuer.issue("acme", "ada@acme.example")
    # Active all day: a refresh every 50 minutes.
    expiries = []
    while True:
        clock.advance(50 * MINUTE)
        try:
            issued = issuer.refresh(issued.token)
        except IssueError as error:
            refusal = error.reason
            break
        expiries.append((issued.claims["exp"] - T0) // MINUTE)
        assert issued.claims["auth_time"] == T0
    # The 13th refresh (10 h 50 min) gets its full hour; the 14th (11 h 40 min) is capped at 12 h, and
    # the 15th (12 h 30 min) comes after that token expired: the session is over, sign in again.
    assert expiries[-3:] == [11 * 60, 11 * 60 + 50, 12 * 60]
    assert len(expiries) == 14
    assert (refusal, clock.now) == ("invalid_token:expired", T0 + 15 * 50 * MINUTE)
    assert denied(stack, clock, issued.token, caplog) == "expired"


def test_a_refresh_a_second_before_the_session_maximum_gets_that_second(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock, replace(stack.settings, idle_ttl_seconds=600, max_session_seconds=900))
    issued = issuer.issue("acme", "ada@acme.example")
    clock.advance(500)
    issued = issuer.refresh(issued.token)
    clock.advance(399)
    last = issuer.refresh(issued.token)
    assert (last.claims["iat"], last.claims["exp"], last.claims["auth_time"]) == (T0 + 899, T0 + 900, T0)


def test_the_session_maximum_comes_from_the_settings(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock, replace(stack.settings, idle_ttl_seconds=600, max_session_seconds=900))
    issued = issuer.issue("acme", "ada@acme.example")
    assert issued.claims["exp"] == T0 + 600
    clock.advance(500)
    assert issuer.refresh(issued.token).claims["exp"] == T0 + 900


# --- the database decides at every refresh ----------------------------------------------------------


def test_a_revoked_permission_is_gone_at_the_next_refresh(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    issued = issuer.issue("acme", "dan@acme.example")
    assert issued.claims["permissions"] == ["org:read", "roles:read", "tasks:read", "users:read"]
    # The viewer role loses users:read, through tenant_bootstrap with a custom role catalog.
    roles = {
        "owner": ["org:read", "org:write", "users:read", "users:write"],
        "admin": ["org:read", "users:read"],
        "member": ["tasks:create", "tasks:read"],
        "viewer": ["org:read", "roles:read", "tasks:read"],
    }
    try:
        stack.bootstrap([{**TENANTS[0], "roles": roles}])
        clock.advance(10 * MINUTE)
        refreshed = issuer.refresh(issued.token)
        assert refreshed.claims["permissions"] == ["org:read", "roles:read", "tasks:read"]
        assert refreshed.claims["roles"] == ["viewer"]
    finally:
        stack.bootstrap([TENANTS[0]])


def test_a_suspended_organization_gets_no_refresh_and_no_new_token(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    globex = stack.issuer(clock).issue("globex", "hank@globex.example")
    issued = issuer.issue("acme", "bob@acme.example")
    stack.bootstrap([{**TENANTS[0], "state": "suspended"}])
    try:
        clock.advance(MINUTE)
        for attempt in (
            lambda: issuer.refresh(issued.token),
            lambda: issuer.issue("acme", "bob@acme.example"),
        ):
            with pytest.raises(IssueError) as refused:
                attempt()
            assert refused.value.reason == "organization_suspended"
        # The other organization is not affected.
        assert issuer.refresh(globex.token).claims["org_slug"] == "globex"
    finally:
        stack.bootstrap([TENANTS[0]])
    assert issuer.refresh(issued.token).claims["org_slug"] == "acme"


def test_a_disabled_or_deleted_user_gets_no_refresh(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    issued = issuer.issue("acme", "bob@acme.example")
    clock.advance(MINUTE)
    assert (
        stack.as_owner_in("acme", "UPDATE users SET status = 'disabled' WHERE email = 'bob@acme.example'")
        == 1
    )
    try:
        with pytest.raises(IssueError) as refused:
            issuer.refresh(issued.token)
        assert refused.value.reason == "user_disabled"
    finally:
        stack.as_owner_in("acme", "UPDATE users SET status = 'active' WHERE email = 'bob@acme.example'")
    stack.as_owner_in("acme", "DELETE FROM users WHERE email = 'bob@acme.example'")
    try:
        with pytest.raises(IssueError) as refused:
            issuer.refresh(issued.token)
        assert refused.value.reason == "unknown_user"
    finally:
        stack.bootstrap([TENANTS[0]])


def test_a_token_of_another_issuer_or_forged_is_not_refreshed(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    issued = issuer.issue("acme", "ada@acme.example")
    stranger = secret_material.generate_private_key("RS256", rsa_key_size=2048)
    header = jwt.get_unverified_header(issued.token)
    forged = jwt.encode(
        {**issued.claims, "org_id": stack.org_id("globex")}, stranger, algorithm="RS256", headers=header
    )
    for token, reason in (
        (forged, "invalid_token:bad_signature"),
        ("not.a.token", "invalid_token:malformed"),
    ):
        with pytest.raises(IssueError) as refused:
            issuer.refresh(token)
        assert refused.value.reason == reason


def test_a_rotated_signing_key_signs_after_the_cache_period_and_old_tokens_still_verify(stack: Stack) -> None:
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    before = issuer.issue("acme", "ada@acme.example")
    new_kid = write_signing_key(stack.emulator, stack.signing_secret_id, stack.jwks_secret_id, "ES256")
    clock.advance(stack.settings.jwks_cache_seconds)
    after = issuer.refresh(before.token)
    assert jwt.get_unverified_header(after.token) == {"alg": "ES256", "kid": new_kid, "typ": "at+jwt"}
    authorizer = stack.authorizer(clock)
    for token in (before.token, after.token):
        assert authorizer.authorize(
            {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": METHOD_ARN}
        )


# --- sign-in ---------------------------------------------------------------------------------------------


def audit_count(stack: Stack, action: str) -> int:
    org_id = stack.org_id("acme")
    with stack.owner() as owner, owner.transaction():
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        row = owner.execute("SELECT count(*) FROM audit_events WHERE action = %s", (action,)).fetchone()
    assert row is not None
    return int(row[0])


def test_sign_in_with_the_right_password(stack: Stack) -> None:
    clock = Clock(T0)
    events = audit_count(stack, "user.sign_in")
    issued = stack.issuer(clock).sign_in("acme", " ADA@acme.example", PASSWORD)
    assert issued.claims["roles"] == ["owner"]
    assert (issued.claims["auth_time"], issued.claims["exp"]) == (T0, T0 + 60 * MINUTE)
    assert audit_count(stack, "user.sign_in") == events + 1


@pytest.mark.parametrize(
    ("org", "email", "password"),
    [
        ("acme", "ada@acme.example", PASSWORD + " "),
        ("acme", "ada@acme.example", ""),
        ("acme", "ada@acme.example", "x" * 5000),
        ("acme", "nobody@acme.example", PASSWORD),
        ("acme", "bob@acme.example", PASSWORD),  # no password set
        ("globex", "ada@acme.example", PASSWORD),
        ("nobody", "ada@acme.example", PASSWORD),
        ("../acme", "ada@acme.example", PASSWORD),
    ],
)
def test_every_failed_sign_in_is_the_same_refusal(stack: Stack, org: str, email: str, password: str) -> None:
    with pytest.raises(IssueError) as refused:
        stack.issuer(Clock(T0)).sign_in(org, email, password)
    assert refused.value.reason == "invalid_credentials"


def test_statuses_are_told_only_after_the_right_password(stack: Stack) -> None:
    issuer = stack.issuer(Clock(T0))
    stack.bootstrap([{**TENANTS[0], "state": "suspended"}])
    try:
        with pytest.raises(IssueError) as refused:
            issuer.sign_in("acme", "ada@acme.example", "wrong")
        assert refused.value.reason == "invalid_credentials"
        with pytest.raises(IssueError) as refused:
            issuer.sign_in("acme", "ada@acme.example", PASSWORD)
        assert refused.value.reason == "organization_suspended"
    finally:
        stack.bootstrap([TENANTS[0]])


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(stack: Stack) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    stack.set_password("acme", "dan@acme.example", weak)
    stack.issuer(Clock(T0)).sign_in("acme", "dan@acme.example", PASSWORD)
    org_id = stack.org_id("acme")
    with stack.owner() as owner, owner.transaction():
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        row = owner.execute(
            "SELECT c.password_hash FROM user_credentials c JOIN users u ON u.id = c.user_id WHERE u.email = 'dan@acme.example'"
        ).fetchone()
    assert row is not None and row[0] != weak
    assert not passwords.needs_rehash(row[0])
    assert passwords.verify(row[0], PASSWORD)


# --- the token function -----------------------------------------------------------------------------------


def load_token_handler() -> ModuleType:
    """lambdas/token/handler.py by path: `token` is also a module of the standard library."""
    spec = importlib.util.spec_from_file_location("token_function", REPO / "lambdas" / "token" / "handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def token_function(stack: Stack) -> Iterator[tuple[ModuleType, Clock]]:
    module = load_token_handler()
    clock = Clock(T0)
    module.reset(module.TokenFunction(stack.issuer(clock)))
    yield module, clock
    module.reset()


def api_event(
    path: str, body: Any = None, headers: dict[str, str] | None = None, method: str = "POST"
) -> dict[str, Any]:
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers or {"Content-Type": "application/json"},
        "body": body if isinstance(body, str) or body is None else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {"stage": "prod", "requestId": "test"},
    }


def call(module: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    result = module.handler(event, None)
    return result["statusCode"], result["headers"], json.loads(result["body"])


def test_the_token_function_signs_in_and_refreshes(
    stack: Stack, token_function: tuple[ModuleType, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    module, clock = token_function
    with caplog.at_level(logging.INFO, logger="tenantforge.token"):
        status, headers, body = call(
            module,
            api_event("/auth/sign-in", {"org": "acme", "email": "ada@acme.example", "password": PASSWORD}),
        )
        assert status == 200, body
        assert headers["Cache-Control"] == "no-store"
        assert set(body) == {"access_token", "token_type", "expires_in", "expires_at"}
        assert (body["token_type"], body["expires_in"], body["expires_at"]) == ("Bearer", 3600, T0 + 3600)
        assert authorize(stack, clock, body["access_token"])["context"]["roles"] == "owner"
        clock.advance(30 * MINUTE)
        status, _, refreshed = call(
            module, api_event("/auth/refresh", headers={"authorization": f"bearer {body['access_token']}"})
        )
        assert status == 200, refreshed
        assert refreshed["expires_at"] == T0 + 90 * MINUTE
    logged = caplog.text
    assert (
        PASSWORD not in logged
        and body["access_token"] not in logged
        and refreshed["access_token"] not in logged
    )
    outcomes = [
        json.loads(record.getMessage()) for record in caplog.records if record.name == "tenantforge.token"
    ]
    assert [(line["route"], line["outcome"], line["status"]) for line in outcomes] == [
        ("sign_in", "issued", 200),
        ("refresh", "issued", 200),
    ]


@pytest.mark.parametrize(
    ("event", "status", "error"),
    [
        (
            api_event("/auth/sign-in", {"org": "acme", "email": "ada@acme.example", "password": "wrong"}),
            401,
            "invalid_credentials",
        ),
        (api_event("/auth/sign-in", {"org": "acme", "email": "ada@acme.example"}), 400, "invalid_request"),
        (
            api_event("/auth/sign-in", {"org": "acme", "email": 7, "password": PASSWORD}),
            400,
            "invalid_request",
        ),
        (api_event("/auth/sign-in", "{not json"), 400, "invalid_request"),
        (api_event("/auth/sign-in", "[]"), 400, "invalid_request"),
        (api_event("/auth/sign-in", None), 400, "invalid_request"),
        (
            api_event("/auth/sign-in", json.dumps({"org": "acme", "email": "a", "password": "x" * 5000})),
            413,
            "payload_too_large",
        ),
        (api_event("/auth/sign-in", {"org": "acme"}, method="GET"), 405, "method_not_allowed"),
        (api_event("/auth/elsewhere", {}), 404, "not_found"),
        (api_event("/auth/refresh"), 401, "invalid_token"),
        (api_event("/auth/refresh", headers={"Authorization": "Basic YTpi"}), 401, "invalid_token"),
        (api_event("/auth/refresh", headers={"Authorization": "Bearer not.a.token"}), 401, "invalid_token"),
    ],
)
def test_the_token_function_refuses_with_a_stable_error(
    token_function: tuple[ModuleType, Clock], event: dict[str, Any], status: int, error: str
) -> None:
    module, _ = token_function
    got_status, headers, body = call(module, event)
    assert (got_status, body) == (status, {"error": error})
    assert headers["Content-Type"] == "application/json"


def test_the_token_function_answers_503_when_the_database_is_down(stack: Stack) -> None:
    module = load_token_handler()
    clock = Clock(T0)
    issuer = stack.issuer(clock)
    issuer.database = Database(
        lambda: f"host=127.0.0.1 port={stack.server.port + 1} user=x password=y dbname=z"
    )
    module.reset(module.TokenFunction(issuer))
    try:
        status, headers, body = call(
            module,
            api_event("/auth/sign-in", {"org": "acme", "email": "ada@acme.example", "password": PASSWORD}),
        )
    finally:
        module.reset()
    assert (status, body, headers["Retry-After"]) == (503, {"error": "unavailable"}, "5")


# --- the command line --------------------------------------------------------------------------------------


def cli_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_", "AWS_"))}
    return {
        **env,
        "PYTHONPATH": str(REPO / "lambdas"),
        "AWS_ENDPOINT_URL": stack.emulator.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_JWKS_SECRET_ID": stack.jwks_secret_id,
        "JWT_SIGNING_SECRET_ID": stack.signing_secret_id,
        "DATABASE_URL": f"postgresql://127.0.0.1:{stack.server.port}/tenantforge",
        **extra,
    }


def cli(stack: Stack, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "python"), "-m", "tenantforge_lambda", *args],
        input=stdin,
        env=cli_env(stack, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_issues_a_token_the_authorizer_accepts(stack: Stack) -> None:
    sm = stack.emulator.client("secretsmanager")
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/postgres/app"
    sm.create_secret(
        Name=secret_id,
        SecretString=json.dumps(
            {"username": "tenantforge_app", "password": stack.server.passwords["tenantforge_app"]}
        ),
    )
    run = cli(
        stack,
        "issue",
        "--org",
        "acme",
        "--email",
        "homer@acme.example",
        "--claims",
        DATABASE_SECRET_ID=secret_id,
    )
    assert run.returncode == 0, run.stderr
    token, claims_line = run.stdout.splitlines()
    claims = json.loads(claims_line)
    assert (claims["permissions"], claims["org_slug"]) == (MEMBER_AND_VIEWER, "acme")
    policy = authorize(stack, Clock(claims["iat"]), token)
    assert policy["context"]["permissions"] == ",".join(MEMBER_AND_VIEWER)
    assert stack.server.passwords["tenantforge_app"] not in run.stdout + run.stderr


def test_the_cli_sets_a_password_that_signs_in(stack: Stack) -> None:
    dsn = stack.app_dsn()
    run = cli(
        stack,
        "set-password",
        "--org",
        "acme",
        "--email",
        "homer@acme.example",
        stdin="s3cret pass\n",
        DATABASE_URL=dsn,
    )
    assert run.returncode == 0, run.stderr
    assert "s3cret" not in run.stdout + run.stderr
    issued = stack.issuer(Clock(T0)).sign_in("acme", "homer@acme.example", "s3cret pass")
    assert issued.claims["roles"] == ["member", "viewer"]


def test_the_cli_says_why_it_refuses(stack: Stack) -> None:
    dsn = stack.app_dsn()
    unknown = cli(stack, "issue", "--org", "acme", "--email", "nobody@acme.example", DATABASE_URL=dsn)
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (1, "", "refused: unknown_user\n")
    unconfigured = cli(
        stack,
        "issue",
        "--org",
        "acme",
        "--email",
        "ada@acme.example",
        JWT_SIGNING_SECRET_ID="",
        DATABASE_URL=dsn,
    )
    assert unconfigured.returncode == 2
    assert unconfigured.stderr == "configuration: JWT_SIGNING_SECRET_ID is required to issue tokens\n"
    no_database = cli(stack, "issue", "--org", "acme", "--email", "ada@acme.example", DATABASE_URL="")
    assert no_database.returncode == 2
    assert "DATABASE_URL" in no_database.stderr
    usage = cli(stack, "issue", "--org", "acme")
    assert usage.returncode == 2
    assert "--email" in usage.stderr
    assert "Traceback" not in unknown.stderr + unconfigured.stderr + no_database.stderr
