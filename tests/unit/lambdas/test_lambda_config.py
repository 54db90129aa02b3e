"""The JWT_* settings of the functions (lambdas/tenantforge_lambda/config.py)."""

from __future__ import annotations

import pytest

from tenantforge_lambda.config import ConfigError, Settings, parse_algorithms

MINIMAL = {
    "JWT_ISSUER": "https://auth.tenantforge.test",
    "JWT_AUDIENCE": "tenantforge-api",
    "JWT_JWKS_SECRET_ID": "tenantforge/dev/jwt/jwks",
}


def test_defaults() -> None:
    assert Settings.from_env(MINIMAL) == Settings(
        algorithms=("RS256", "ES256"),
        issuer="https://auth.tenantforge.test",
        audience="tenantforge-api",
        jwks_secret_id="tenantforge/dev/jwt/jwks",
        leeway_seconds=30,
        jwks_cache_seconds=300,
        jwks_min_refetch_seconds=30,
        idle_ttl_seconds=3600,
        max_session_seconds=43200,
        signing_secret_id=None,
    )


def test_every_variable_is_read() -> None:
    env = {
        **MINIMAL,
        "JWT_ALGORITHMS": " ES256 , PS256,ES256 ",
        "JWT_LEEWAY_SECONDS": "60",
        "JWT_JWKS_CACHE_SECONDS": "600",
        "JWT_JWKS_MIN_REFETCH_SECONDS": "10",
        "JWT_IDLE_TTL_SECONDS": "900",
        "JWT_MAX_SESSION_SECONDS": "3600",
        "JWT_SIGNING_SECRET_ID": "tenantforge/dev/jwt/signing-key",
    }
    settings = Settings.from_env(env)
    assert settings.algorithms == ("ES256", "PS256")
    assert (
        settings.leeway_seconds,
        settings.jwks_cache_seconds,
        settings.jwks_min_refetch_seconds,
        settings.idle_ttl_seconds,
        settings.max_session_seconds,
    ) == (60, 600, 10, 900, 3600)
    assert settings.signing_secret_id == "tenantforge/dev/jwt/signing-key"


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in MINIMAL.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JWT_ALGORITHMS", "ES256")
    assert Settings.from_env().algorithms == ("ES256",)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS: HS256 not allowed"),
        ({"JWT_ALGORITHMS": "RS256,HS512"}, "JWT_ALGORITHMS: HS512 not allowed"),
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS: none not allowed"),
        ({"JWT_ALGORITHMS": "RS256,rs512"}, "JWT_ALGORITHMS: rs512 not allowed"),
        ({"JWT_ALGORITHMS": " , "}, "JWT_ALGORITHMS must list at least one algorithm"),
        ({"JWT_ISSUER": ""}, "JWT_ISSUER is required"),
        ({"JWT_ISSUER": None}, "JWT_ISSUER is required"),
        ({"JWT_ISSUER": " https://auth.tenantforge.test"}, "JWT_ISSUER must be a non-empty string"),
        ({"JWT_AUDIENCE": None}, "JWT_AUDIENCE is required"),
        ({"JWT_JWKS_SECRET_ID": "  "}, "JWT_JWKS_SECRET_ID is required"),
        ({"JWT_LEEWAY_SECONDS": "61"}, "JWT_LEEWAY_SECONDS must be between 0 and 60"),
        ({"JWT_LEEWAY_SECONDS": "-1"}, "JWT_LEEWAY_SECONDS must be between 0 and 60"),
        ({"JWT_LEEWAY_SECONDS": "thirty"}, "JWT_LEEWAY_SECONDS must be a whole number of seconds"),
        ({"JWT_JWKS_CACHE_SECONDS": "0"}, "JWT_JWKS_CACHE_SECONDS must be a positive number of seconds"),
        ({"JWT_JWKS_MIN_REFETCH_SECONDS": "0"}, "JWT_JWKS_MIN_REFETCH_SECONDS must be a positive number"),
        (
            {"JWT_JWKS_MIN_REFETCH_SECONDS": "301"},
            "JWT_JWKS_MIN_REFETCH_SECONDS must not exceed JWT_JWKS_CACHE_SECONDS",
        ),
        ({"JWT_IDLE_TTL_SECONDS": "1.5"}, "JWT_IDLE_TTL_SECONDS must be a whole number of seconds"),
        (
            {"JWT_MAX_SESSION_SECONDS": "1800"},
            "JWT_MAX_SESSION_SECONDS must be at least JWT_IDLE_TTL_SECONDS",
        ),
    ],
)
def test_a_bad_setting_names_its_variable(changes: dict[str, str | None], message: str) -> None:
    env = {**MINIMAL, **changes}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value for name, value in env.items() if value is not None})
    assert str(raised.value).startswith(message)


def test_a_bad_number_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**MINIMAL, "JWT_LEEWAY_SECONDS": "s3cr3t-pasted-here"})
    assert "s3cr3t" not in str(raised.value)


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="HS256"):
        Settings(algorithms=("HS256",), issuer="i", audience="a", jwks_secret_id="s")


def test_parse_algorithms_keeps_order_and_drops_duplicates() -> None:
    assert parse_algorithms("ES256,RS256,ES256") == ("ES256", "RS256")
