"""Warm latency and cold start of the API Gateway Lambda authorizer (``lambdas/authorizer/handler.py``).

Everything runs on this machine, nothing is started or fetched: the keys (RSA 2048 for RS256, P-256
for ES256) and the tokens are made here with cryptography and PyJWT, and the JWKS document holding
both public keys is served from memory as the secret's SecretString would be.

1. **Warm latency**, in this process: one ``handler.Authorizer(settings, cache.get, time.time)`` over
   a ``JwksCache`` whose fetch returns that JWKS text, installed with ``handler.reset(authorizer)``,
   as a warm container holds it. The first call fetches and parses the JWKS (it is timed on its own);
   the warm calls never fetch (the fetches are counted). For REST ``TOKEN``, REST ``REQUEST`` and
   WebSocket ``$connect`` events, with an RS256 and an ES256 token, ``handler.handler(event, None)``
   is timed ``--calls`` times (``time.perf_counter_ns``) after ``--warmup`` untimed calls. The
   baseline is a bare ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...)`` of the
   same token with the same public key object (the one the cache holds), as many times; the two are
   timed alternately, call by call (which one goes first alternates too), so a change of load during
   the row weighs on both. One more row times a refused call: an expired RS256 token in a TOKEN event
   (the signature is verified, then ``Exception("Unauthorized")``), against ``jwt.decode`` of the same
   token (which raises ``ExpiredSignatureError``, also after the signature).
   Logging: the ``tenantforge.authorizer`` logger stays at INFO with a ``logging.NullHandler`` (and no
   propagation), so every call builds its JSON line and its log record, as in Lambda, but nothing is
   written. Garbage collection stays on.
2. **Cold start**, in fresh interpreters (``sys.executable``, ``PYTHONPATH`` = ``lambdas/authorizer``
   and ``lambdas``, the layout of the function's zip): the time of ``import handler`` measured inside
   the process with ``time.perf_counter``, against ``import jwt`` alone (PyJWT, which imports
   cryptography), ``--runs`` times each, alternately, after one untimed run of each that fills a
   private bytecode cache (``PYTHONPYCACHEPREFIX`` in a temporary directory: the figures are with
   compiled bytecode, and these processes leave the repository's ``__pycache__`` alone). The handler's
   process then makes the first call as ``Authorizer.from_env`` would, the Secrets Manager read
   aside: ``Settings.from_env()``, a ``JwksCache`` over the same JWKS text, the fetch, the parse of
   both keys and the verification of an RS256 token in a TOKEN event.

Latencies are in microseconds (p50, p99, mean); ratios divide the authorizer's figure by the baseline's
of the same run. Nothing is asserted about timing; a call that is not answered as expected stops the
benchmark.

    .venv/bin/python benchmarks/authorizer.py
    .venv/bin/python benchmarks/authorizer.py --calls 20000 --runs 30 --json /tmp/authorizer.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from infrastructure import REPO, table
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

LAMBDAS = REPO / "lambdas"
HANDLER_DIR = LAMBDAS / "authorizer"
LOGGER = "tenantforge.authorizer"
ISSUER = "https://auth.tenantforge.bench"
AUDIENCE = "tenantforge-api"
JWKS_ID = "tenantforge/bench/jwks"  # never read: the fetch is replaced
ORG_ID = "3f2c8a4e-9b1d-4c7e-8f00-5a6b7c8d9e0f"
ORG_SLUG = "acme-corp"
USER_ID = "7d1e2f30-4a5b-4c6d-9e8f-0a1b2c3d4e5f"
JTI = "5c0ffee0-0000-4000-8000-00000000beef"
PERMISSIONS = ["tasks:create", "tasks:read", "users:read"]
ROLES = ["admin", "member"]
REST_ARN = "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/prod/POST/tasks"
WEBSOCKET_ARN = "arn:aws:execute-api:eu-west-1:123456789012:w9x8y7z6v5/dev/$connect"

# The cold-start scripts: `import time` comes before the clock starts, in both.
IMPORT_JWT = "import time; t=time.perf_counter(); import jwt; print(time.perf_counter()-t)"
IMPORT_HANDLER = """\
import time
started = time.perf_counter()
import handler
imported = time.perf_counter()
import json, logging, sys
data = json.loads(sys.stdin.read())
logger = logging.getLogger("tenantforge.authorizer")
logger.addHandler(logging.NullHandler())
logger.propagate = False
from tenantforge_lambda.config import Settings
from tenantforge_lambda.jwks import JwksCache
first = time.perf_counter()
settings = Settings.from_env()
cache = JwksCache(lambda: data["jwks"], settings.algorithms, settings.jwks_cache_seconds,
                  settings.jwks_min_refetch_seconds)
handler.reset(handler.Authorizer(settings, cache.get))
response = handler.handler(data["event"], None)
answered = time.perf_counter()
effect = response["policyDocument"]["Statement"][0]["Effect"]
print(json.dumps({"import": imported - started, "first_call": answered - first, "effect": effect}))
"""


# -------------------------------------------------------------------------------- keys and tokens


@dataclass(frozen=True)
class Key:
    alg: str
    kid: str
    private: Any
    jwk: dict[str, Any]


def make_keys() -> list[Key]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    published = [
        ("RS256", "bench-rsa-2048", rsa_key, RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
        ("ES256", "bench-ec-p256", ec_key, ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)),
    ]
    return [
        Key(alg, kid, private, {**jwk, "kid": kid, "use": "sig", "alg": alg})
        for alg, kid, private, jwk in published
    ]


def make_token(key: Key, issued: int) -> str:
    """A token as the platform issues one: valid for an hour from ``issued``, signed in 10 minutes before."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER_ID,
        "org_id": ORG_ID,
        "org_slug": ORG_SLUG,
        "permissions": PERMISSIONS,
        "roles": ROLES,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 3600,
        "jti": JTI,
        "auth_time": issued - 600,
    }
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


# ----------------------------------------------------------------------------------------- events
# The shapes of tests/unit/lambdas/events/authorizer_*.json, with the token in its place.


def token_event(token: str) -> dict[str, Any]:
    return {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": REST_ARN}


def request_event(token: str) -> dict[str, Any]:
    headers = {
        "Accept": "application/json",
        "Authorization": f"Bearer {token}",
        "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Forwarded-For": "203.0.113.7",
    }
    return {
        "type": "REQUEST",
        "methodArn": REST_ARN,
        "resource": "/tasks",
        "path": "/tasks",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {},
        "multiValueQueryStringParameters": {},
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": {
            "path": "/prod/tasks",
            "accountId": "123456789012",
            "resourceId": "abc123",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "resourcePath": "/tasks",
            "httpMethod": "POST",
            "apiId": "a1b2c3d4e5",
        },
    }


def websocket_event(token: str) -> dict[str, Any]:
    headers = {
        "Host": "w9x8y7z6v5.execute-api.eu-west-1.amazonaws.com",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "203.0.113.7",
    }
    return {
        "type": "REQUEST",
        "methodArn": WEBSOCKET_ARN,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {"token": token},
        "multiValueQueryStringParameters": {"token": [token]},
        "stageVariables": {},
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": "ABCDEFGHIJKLMNO=",
            "requestTime": "01/Dec/2026:10:00:00 +0000",
            "messageDirection": "IN",
            "stage": "dev",
            "connectedAt": 1796119200000,
            "requestTimeEpoch": 1796119200123,
            "identity": {"sourceIp": "203.0.113.7"},
            "requestId": "ABCDEFGHIJKLMNO=",
            "domainName": "w9x8y7z6v5.execute-api.eu-west-1.amazonaws.com",
            "connectionId": "ABCDEFGHIJKLMNO=",
            "apiId": "w9x8y7z6v5",
        },
    }


EVENTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "REST TOKEN": token_event,
    "REST REQUEST": request_event,
    "WebSocket $connect": websocket_event,
}


# ------------------------------------------------------------------------------------ warm latency


def load_handler() -> ModuleType:
    """``handler.py`` imported as ``handler``, with ``lambdas/`` on the path: the zip's layout."""
    if str(LAMBDAS) not in sys.path:
        sys.path.insert(0, str(LAMBDAS))
    spec = importlib.util.spec_from_file_location("handler", HANDLER_DIR / "handler.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {HANDLER_DIR / 'handler.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Row:
    event: str
    alg: str
    authorizer_ns: list[int]
    decode_ns: list[int]


def stats(samples: Sequence[int]) -> dict[str, float]:
    """p50, p99 and mean in microseconds."""
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered) / 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
        "mean": statistics.fmean(ordered) / 1000,
    }


def interleaved(
    first: Callable[[], object], second: Callable[[], object], calls: int, warmup: int
) -> tuple[list[int], list[int]]:
    """Each function timed ``calls`` times, alternately; even calls start with ``first``, odd ones
    with ``second``."""
    for _ in range(warmup):
        first()
        second()
    gc.collect()
    clock = time.perf_counter_ns
    a = [0] * calls
    b = [0] * calls
    for i in range(calls):
        if i & 1:
            t0 = clock()
            second()
            t1 = clock()
            first()
            t2 = clock()
            b[i], a[i] = t1 - t0, t2 - t1
        else:
            t0 = clock()
            first()
            t1 = clock()
            second()
            t2 = clock()
            a[i], b[i] = t1 - t0, t2 - t1
    return a, b


def measure_warm(keys: Sequence[Key], calls: int, warmup: int) -> tuple[list[Row], dict[str, Any]]:
    handler = load_handler()
    # The module set its logger's level from LOG_LEVEL at import: INFO, as deployed.
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    from tenantforge_lambda.config import Settings
    from tenantforge_lambda.jwks import JwksCache
    from tenantforge_lambda.tokens import TokenError, verify_token

    jwks_text = json.dumps({"keys": [key.jwk for key in keys]})
    fetches = [0]

    def fetch() -> str:
        fetches[0] += 1
        return jwks_text

    settings = Settings(
        algorithms=tuple(key.alg for key in keys), issuer=ISSUER, audience=AUDIENCE, jwks_secret_id=JWKS_ID
    )
    cache = JwksCache(
        fetch, settings.algorithms, settings.jwks_cache_seconds, settings.jwks_min_refetch_seconds
    )
    handler.reset(handler.Authorizer(settings, cache.get, time.time))
    call = handler.handler

    now = int(time.time())
    tokens = {key.alg: make_token(key, now) for key in keys}
    expired = make_token(keys[0], now - 7200)

    # The first call of the container: the fetch, the parse of every key, then the verification.
    started = time.perf_counter_ns()
    response = call(token_event(tokens[keys[0].alg]), None)
    first_call_us = (time.perf_counter_ns() - started) / 1000
    if response["policyDocument"]["Statement"][0]["Effect"] != "Allow":
        raise RuntimeError("the first call was not allowed")

    def public_key(kid: str) -> Any:
        """The very key object the authorizer verifies with (no fetch: the cache is fresh)."""
        found = cache.get(kid)
        if found is None:
            raise RuntimeError(f"the JWKS cache holds no key {kid}")
        return found.key

    rows = []
    for key in keys:
        token = tokens[key.alg]
        public = public_key(key.kid)
        for name, make_event in EVENTS.items():
            event = make_event(token)
            try:
                answer = call(event, None)
            except Exception as error:
                raise RuntimeError(f"{key.alg} {name}: the authorizer refused the token ({error})") from None
            if answer["principalId"] != USER_ID or answer["context"]["org_id"] != ORG_ID:
                raise RuntimeError(f"{key.alg} {name}: unexpected answer {answer}")

            def decode(token: str = token, alg: str = key.alg, public: Any = public) -> object:
                return jwt.decode(token, public, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)

            def authorize(event: dict[str, Any] = event) -> object:
                return call(event, None)

            print(f"{key.alg} {name}: {calls} calls ...", end=" ", flush=True)
            started = time.perf_counter_ns()
            authorizer_ns, decode_ns = interleaved(authorize, decode, calls, warmup)
            print(f"{(time.perf_counter_ns() - started) / 1e9:.2f}s", flush=True)
            rows.append(Row(name, key.alg, authorizer_ns, decode_ns))

    # A refused token: expired, so the signature is verified before the refusal, in both.
    key = keys[0]
    public = public_key(key.kid)
    try:
        verify_token(expired, settings, cache.get, time.time())
        reason = "allowed"
    except TokenError as error:
        reason = error.reason
    if reason != "expired":
        raise RuntimeError(f"the expired token was refused for {reason!r}, not 'expired'")
    expired_event = token_event(expired)

    def refused() -> None:
        with contextlib.suppress(Exception):
            call(expired_event, None)

    def refused_decode() -> None:
        with contextlib.suppress(jwt.ExpiredSignatureError):
            jwt.decode(expired, public, algorithms=[key.alg], audience=AUDIENCE, issuer=ISSUER)

    name = "REST TOKEN, expired (deny)"
    print(f"{key.alg} {name}: {calls} calls ...", end=" ", flush=True)
    started = time.perf_counter_ns()
    authorizer_ns, decode_ns = interleaved(refused, refused_decode, calls, warmup)
    print(f"{(time.perf_counter_ns() - started) / 1e9:.2f}s", flush=True)
    rows.append(Row(name, key.alg, authorizer_ns, decode_ns))
    handler.reset()
    return rows, {"first_call_us": first_call_us, "jwks_keys": len(keys), "jwks_fetches": fetches[0]}


# -------------------------------------------------------------------------------------- cold start


def measure_cold(keys: Sequence[Key], runs: int) -> dict[str, list[float]]:
    """Seconds per run: ``import jwt``, ``import handler`` and the first call after it."""
    jwks_text = json.dumps({"keys": [key.jwk for key in keys]})
    stdin = json.dumps({"jwks": jwks_text, "event": token_event(make_token(keys[0], int(time.time())))})
    found: dict[str, list[float]] = {"import jwt": [], "import handler": [], "first call": []}
    with tempfile.TemporaryDirectory(prefix="tenantforge-authorizer-") as tmp:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PYTHON", "JWT_")) and name != "LOG_LEVEL"
        }
        env.update(
            PYTHONPATH=f"{HANDLER_DIR}{os.pathsep}{LAMBDAS}",
            PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"),
            JWT_ISSUER=ISSUER,
            JWT_AUDIENCE=AUDIENCE,
            JWT_JWKS_SECRET_ID=JWKS_ID,
            JWT_ALGORITHMS=",".join(key.alg for key in keys),
            LOG_LEVEL="INFO",
        )

        def run(script: str, text: str = "") -> str:
            completed = subprocess.run(
                [sys.executable, "-c", script],
                cwd=tmp,
                env=env,
                input=text,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if completed.returncode != 0:
                print(completed.stderr[-4000:], file=sys.stderr)
                raise RuntimeError(f"a cold-start process failed with exit code {completed.returncode}")
            return completed.stdout.strip().splitlines()[-1]

        print(f"cold start: {runs} runs of each, alternately ...", end=" ", flush=True)
        started = time.perf_counter()
        for index in range(runs + 1):  # run 0 fills the bytecode cache and is not counted
            jwt_seconds = float(run(IMPORT_JWT))
            result = json.loads(run(IMPORT_HANDLER, stdin))
            if result["effect"] != "Allow":
                raise RuntimeError("the first call of a fresh process was not allowed")
            if index:
                found["import jwt"].append(jwt_seconds)
                found["import handler"].append(result["import"])
                found["first call"].append(result["first_call"])
        print(f"{time.perf_counter() - started:.2f}s", flush=True)
    return found


# ------------------------------------------------------------------------------------------ report


def versions() -> dict[str, str]:
    found = {name: importlib.metadata.version(name) for name in ("PyJWT", "cryptography")}
    found["OpenSSL"] = openssl_backend.openssl_version_text()
    found["Python"] = sys.version.split()[0]
    return found


def report(
    rows: Sequence[Row], info: dict[str, Any], cold: dict[str, list[float]], calls: int, warmup: int
) -> dict[str, Any]:
    data: dict[str, Any] = {"calls": calls, "warmup": warmup, **info, "warm": [], "cold_ms": {}}
    lines = []
    for row in rows:
        mine, bare = stats(row.authorizer_ns), stats(row.decode_ns)
        lines.append(
            [
                row.event,
                row.alg,
                f"{mine['p50']:.1f}",
                f"{mine['p99']:.1f}",
                f"{mine['mean']:.1f}",
                f"{bare['p50']:.1f}",
                f"{bare['p99']:.1f}",
                f"{bare['mean']:.1f}",
                f"{mine['p50'] / bare['p50']:.2f}x",
                f"{mine['p99'] / bare['p99']:.2f}x",
            ]
        )
        data["warm"].append(
            {
                "event": row.event,
                "alg": row.alg,
                "authorizer_us": {k: round(v, 2) for k, v in mine.items()},
                "jwt_decode_us": {k: round(v, 2) for k, v in bare.items()},
                "p50_ratio": round(mine["p50"] / bare["p50"], 3),
                "p99_ratio": round(mine["p99"] / bare["p99"], 3),
            }
        )
    found = versions()
    data["versions"] = found
    print(
        f"\nAuthorizer warm path, {calls} calls per row after {warmup} warm-up calls, timed alternately "
        f"with the baseline; PyJWT {found['PyJWT']}, cryptography {found['cryptography']}, "
        f"{found['OpenSSL']}, Python {found['Python']}"
    )
    print(
        f"logging: logger {LOGGER} at INFO with a NullHandler (each call's JSON line and log record are "
        "built, nothing is written)\n"
    )
    headers = [
        "event",
        "alg",
        "authorizer p50 us",
        "p99 us",
        "mean us",
        "jwt.decode p50 us",
        "p99 us",
        "mean us",
        "p50 ratio",
        "p99 ratio",
    ]
    print("\n".join(table(headers, lines, left=2)))
    print(
        f"\nfirst call in this process (JWKS fetch from memory, parse of {info['jwks_keys']} keys, verify): "
        f"{info['first_call_us']:.0f} us; JWKS fetches during the run: {info['jwks_fetches']}"
    )
    if info["jwks_fetches"] != 1:
        print(f"WARNING: the JWKS was fetched {info['jwks_fetches']} times, not once")

    runs = len(cold["import jwt"])
    print(f"\nCold start, {runs} fresh interpreters each (bytecode cached), in-process clock:\n")
    cold_rows = []
    for label, name in (
        ("import jwt (PyJWT + cryptography, baseline)", "import jwt"),
        ("import handler", "import handler"),
        ("first call after the import (Settings, JWKS parse, verify)", "first call"),
    ):
        ms = [seconds * 1000 for seconds in cold[name]]
        cold_rows.append([label, f"{statistics.median(ms):.1f}", f"{min(ms):.1f}", f"{max(ms):.1f}"])
        data["cold_ms"][name] = {
            "median": round(statistics.median(ms), 2),
            "min": round(min(ms), 2),
            "max": round(max(ms), 2),
        }
    print("\n".join(table(["", "median ms", "min ms", "max ms"], cold_rows)))
    jwt_median = statistics.median(cold["import jwt"])
    handler_median = statistics.median(cold["import handler"])
    ratio = handler_median / jwt_median
    ratio_min = min(cold["import handler"]) / min(cold["import jwt"])
    print(f"\nimport handler / import jwt: {ratio:.2f}x (median), {ratio_min:.2f}x (min)")
    data["cold_ratio_median"] = round(ratio, 3)
    data["cold_ratio_min"] = round(ratio_min, 3)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per row (default 5000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls before each row (default 200)")
    parser.add_argument(
        "--runs", type=int, default=15, help="fresh interpreters per cold-start figure (default 15)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--calls and --runs must be at least 1, --warmup at least 0")

    logger = logging.getLogger(LOGGER)
    null_handler = logging.NullHandler()
    saved = (logger.level, logger.propagate)
    logger.addHandler(null_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        print("generating an RSA 2048 and a P-256 key ...", flush=True)
        keys = make_keys()
        rows, info = measure_warm(keys, args.calls, args.warmup)
        cold = measure_cold(keys, args.runs)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(null_handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    data = report(rows, info, cold, args.calls, args.warmup)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
