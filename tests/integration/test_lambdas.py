"""playbooks/lambdas.yml end to end against the tests' AWS emulator (moto).

The tests of this file share one environment and run in order: check mode on an empty account, the
deploy, every property of what was deployed (read back with boto3), the idempotent re-run, bad input,
a changed setting, a changed OpenAPI document (and its repeat), then the removal: in check mode, for
real, and again. Nine playbook runs in all, besides the bad input's, which stop in the preflight.

Every run passes lambdas_local_management_api: false, so nothing binds the local Management API's
port (4571), and one wheel cache, so the zips' dependencies are downloaded once.

Where moto differs from AWS, and what is checked instead:
- It ignores an OpenAPI document's securitySchemes on import (no REST authorizer, every method's
  authorizationType empty), so the authorizer in front of /api/* is checked in the document the role
  imported (<build dir>/openapi.json).
- It returns a REST integration's type as the document spells it (aws_proxy); AWS upper-cases it.
- It keeps a function's LastModified on a configuration update, so a snapshot compares the
  configuration itself, not only the timestamps.
- It answers apigatewayv2 GetAuthorizers with a 500: the WebSocket authorizer is read with
  GetAuthorizer, by the id its $connect route names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Emulator, PlaybookRun, run_playbook
from openapi_spec_validator import validate

pytestmark = pytest.mark.integration

PLAYBOOK = "playbooks/lambdas.yml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
NAME = "tenantforge-local"
TAGS = {"Project": "tenantforge", "Environment": "local", "ManagedBy": "tenantforge"}
API_TAG = "tenantforge:api-sha256"
FUNCTIONS = ("authorizer", "token", "orchestrator", "websocket_api")
MEMORY_MB = {"authorizer": 256, "token": 512, "orchestrator": 512, "websocket_api": 256}
TIMEOUT_SECONDS = {"authorizer": 5, "token": 10, "orchestrator": 15, "websocket_api": 10}

SECRET_PREFIX = "tenantforge/local/"
COMMON_ENVIRONMENT = {
    "JWT_ISSUER": "urn:tenantforge:local",
    "JWT_AUDIENCE": "tenantforge-api",
    "LOG_LEVEL": "INFO",
    "JWT_JWKS_SECRET_ID": "tenantforge/local/jwt/jwks",
}
DATABASE_ENVIRONMENT = {
    "DATABASE_SECRET_ID": "tenantforge/local/postgres/app",
    # PgBouncer of the local target (inventories/local): an address, the login is the secret above.
    "DATABASE_URL": "postgresql://127.0.0.1:6433/tenantforge",
}
ENVIRONMENTS = {
    "authorizer": COMMON_ENVIRONMENT,
    "token": {
        **COMMON_ENVIRONMENT,
        "JWT_SIGNING_SECRET_ID": "tenantforge/local/jwt/signing-key",
        **DATABASE_ENVIRONMENT,
    },
    "orchestrator": {
        **COMMON_ENVIRONMENT,
        **DATABASE_ENVIRONMENT,
        "AMQP_SECRET_ID": "tenantforge/local/rabbitmq/orchestrator",
        "AMQP_URL": "amqp://127.0.0.1:5673/tenantforge",
    },
    "websocket_api": {**COMMON_ENVIRONMENT, **DATABASE_ENVIRONMENT},
}
SECRETS = {
    "authorizer": ["jwt/jwks"],
    "token": ["jwt/jwks", "jwt/signing-key", "postgres/app"],
    "orchestrator": ["jwt/jwks", "postgres/app", "rabbitmq/orchestrator"],
    "websocket_api": ["jwt/jwks", "postgres/app"],
}

# Every operation of the REST API, and the function behind it.
REST_OPERATIONS = {
    ("/auth/sign-in", "POST"): "token",
    ("/auth/refresh", "POST"): "token",
    ("/api/me", "GET"): "orchestrator",
    ("/api/tasks", "GET"): "orchestrator",
    ("/api/tasks", "POST"): "orchestrator",
    ("/api/tasks/{id}", "GET"): "orchestrator",
    ("/api/tasks/{id}/cancel", "POST"): "orchestrator",
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def function_name(function: str) -> str:
    return f"{NAME}-{function.replace('_', '-')}"


def function_arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name(function)}"


def invocation_uri(function: str) -> str:
    return (
        f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{function_arn(function)}/invocations"
    )


def execute_arn(api_id: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api_id}"


def api_sha256(document: dict[str, Any], stage: str = "v1") -> str:
    """The role's tag: `to_json(sort_keys=true) | hash('sha256')` (json.dumps with its default
    separators) of everything the create task applies."""
    applied = {"document": document, "stage": stage, "endpoint_type": "REGIONAL", "tags": TAGS}
    return hashlib.sha256(json.dumps(applied, sort_keys=True).encode()).hexdigest()


def changed_tasks(run: PlaybookRun) -> dict[str, list[str]]:
    """The tasks a run reported changed ("role : Task name"), each with its changed loop items."""
    changed: dict[str, list[str]] = {}
    task = ""
    for line in run.output.splitlines():
        header = re.match(r"^TASK \[(?P<task>.+)\] \*+$", line)
        if header:
            task = header["task"]
            continue
        result = re.match(r"^changed: \[localhost\](?: => \(item=(?P<item>.*)\))?", line)
        if result:
            changed.setdefault(task, []).append(result["item"] or "")
    return changed


# What the Lambda stack is made of, by kind: empty lists when nothing is left.
def lambdas_resources(emulator: Emulator) -> dict[str, list[str]]:
    functions = emulator.client("lambda").list_functions()["Functions"]
    roles = emulator.client("iam").list_roles()["Roles"]
    groups = emulator.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{NAME}-")
    rest_apis = emulator.client("apigateway").get_rest_apis()["items"]
    websocket_apis = emulator.client("apigatewayv2").get_apis()["Items"]
    return {
        "functions": sorted(f["FunctionName"] for f in functions if f["FunctionName"].startswith(f"{NAME}-")),
        "iam_roles": sorted(r["RoleName"] for r in roles if r["RoleName"].startswith(f"{NAME}-")),
        "log_groups": sorted(g["logGroupName"] for g in groups["logGroups"]),
        "rest_apis": sorted(a["id"] for a in rest_apis if a["name"] == f"{NAME}-api"),
        "websocket_apis": sorted(a["ApiId"] for a in websocket_apis if a["Name"] == f"{NAME}-websocket"),
    }


def snapshot(emulator: Emulator) -> dict[str, Any]:
    """Everything the role manages as the emulator describes it, to compare before and after a run."""
    lambda_client = emulator.client("lambda")
    iam = emulator.client("iam")
    apigateway = emulator.client("apigateway")
    apigatewayv2 = emulator.client("apigatewayv2")
    resources = lambdas_resources(emulator)
    state: dict[str, Any] = {"resources": resources}
    for name in resources["functions"]:
        configuration = lambda_client.get_function_configuration(FunctionName=name)
        configuration.pop("ResponseMetadata")
        state[f"function {name}"] = configuration
        state[f"function {name} policy"] = json.loads(lambda_client.get_policy(FunctionName=name)["Policy"])
    for name in resources["iam_roles"]:
        state[f"role {name}"] = {
            "trust": iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"],
            "attached": iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"],
            "inline": {
                policy: iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
                for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]
            },
        }
    groups = emulator.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{NAME}-")
    state["log groups"] = {g["logGroupName"]: g.get("retentionInDays") for g in groups["logGroups"]}
    for api_id in resources["rest_apis"]:
        state[f"rest api {api_id}"] = {
            "tags": apigateway.get_rest_api(restApiId=api_id)["tags"],
            "resources": sorted(
                (r["path"], sorted(r.get("resourceMethods", {})))
                for r in apigateway.get_resources(restApiId=api_id)["items"]
            ),
            "stages": [
                (s["stageName"], s["deploymentId"]) for s in apigateway.get_stages(restApiId=api_id)["item"]
            ],
        }
    for api_id in resources["websocket_apis"]:
        state[f"websocket api {api_id}"] = {
            "routes": apigatewayv2.get_routes(ApiId=api_id)["Items"],
            "integrations": apigatewayv2.get_integrations(ApiId=api_id)["Items"],
            "stages": apigatewayv2.get_stages(ApiId=api_id)["Items"],
        }
    return state


@dataclass
class Deployment:
    emulator: Emulator
    state_dir: Path
    wheel_cache: Path

    def run(self, *args: str, **extra: Any) -> PlaybookRun:
        extra_vars = {
            "local_emulator_port": self.emulator.port,
            "lambdas_local_management_api": False,
            "lambdas_wheel_cache": str(self.wheel_cache),
        }
        return run_playbook(PLAYBOOK, self.state_dir, {**extra_vars, **extra}, args)

    @property
    def build_dir(self) -> Path:
        return self.state_dir / "lambdas"

    def openapi(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.build_dir / "openapi.json").read_text())
        return document

    def rest_api_id(self) -> str:
        [api_id] = lambdas_resources(self.emulator)["rest_apis"]
        return api_id

    def websocket_api_id(self) -> str:
        [api_id] = lambdas_resources(self.emulator)["websocket_apis"]
        return api_id


@dataclass
class Deployed:
    run: PlaybookRun
    snapshot: dict[str, Any]


@pytest.fixture(scope="module")
def deployment(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    emulator.reset()
    return Deployment(emulator, tmp_path_factory.mktemp("state"), tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def check_on_empty(deployment: Deployment) -> PlaybookRun:
    return deployment.run("--check", "--diff")


@pytest.fixture(scope="module")
def deployed(deployment: Deployment, check_on_empty: PlaybookRun) -> Deployed:
    run = deployment.run()
    run.assert_ok()
    return Deployed(run, snapshot(deployment.emulator))


def test_check_mode_on_an_empty_account_reports_changes_and_creates_nothing(
    deployment: Deployment, check_on_empty: PlaybookRun
) -> None:
    check_on_empty.assert_ok()
    changed = changed_tasks(check_on_empty)
    assert changed["lambdas : Build the functions' zips"] == list(FUNCTIONS)
    assert changed["lambdas : Create each function's IAM role"] == list(FUNCTIONS)
    assert changed["aws_logs : Create the log groups"] == [
        f"/aws/lambda/{function_name(f)}" for f in FUNCTIONS
    ]
    assert "lambdas : Create the REST API from the document and deploy it" in changed
    assert "lambdas : Deploy the WebSocket API" in changed
    assert all(not names for names in lambdas_resources(deployment.emulator).values())
    # No zip, no openapi.json, no summary: check mode writes nothing.
    assert sorted(deployment.state_dir.rglob("*")) == []


def test_functions_run_the_built_zips_with_their_settings(deployment: Deployment, deployed: Deployed) -> None:
    client = deployment.emulator.client("lambda")
    assert lambdas_resources(deployment.emulator)["functions"] == sorted(function_name(f) for f in FUNCTIONS)
    summary = json.loads((deployment.state_dir / "summary.json").read_text())["lambdas"]
    for function in FUNCTIONS:
        configuration = client.get_function_configuration(FunctionName=function_name(function))
        assert configuration["Runtime"] == "python3.12"
        assert configuration["Handler"] == "handler.handler"
        assert configuration["Architectures"] == ["x86_64"]
        assert configuration["MemorySize"] == MEMORY_MB[function]
        assert configuration["Timeout"] == TIMEOUT_SECONDS[function]
        assert configuration["Role"] == f"arn:aws:iam::{ACCOUNT}:role/{function_name(function)}"
        zip_bytes = (deployment.build_dir / f"{function}.zip").read_bytes()
        digest = hashlib.sha256(zip_bytes).digest()
        assert configuration["CodeSha256"] == base64.b64encode(digest).decode()
        assert summary["zips_sha256"][function] == digest.hex()
        assert client.list_tags(Resource=function_arn(function))["Tags"] == TAGS
    assert summary["functions"] == [function_name(f) for f in FUNCTIONS]


def test_function_environments_name_the_secrets_never_their_values(
    deployment: Deployment, deployed: Deployed
) -> None:
    client = deployment.emulator.client("lambda")
    for function in FUNCTIONS:
        configuration = client.get_function_configuration(FunctionName=function_name(function))
        variables = configuration["Environment"]["Variables"]
        assert variables == ENVIRONMENTS[function], function
        assert not [value for value in variables.values() if "@" in value or "password" in value.lower()]


def test_each_function_role_may_write_its_own_logs_and_read_its_own_secrets_only(
    deployment: Deployment, deployed: Deployed
) -> None:
    iam = deployment.emulator.client("iam")
    for function in FUNCTIONS:
        name = function_name(function)
        trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
        assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
        assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["function-access"]
        assert {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]} == TAGS

        policy = iam.get_role_policy(RoleName=name, PolicyName="function-access")["PolicyDocument"]
        statements = policy["Statement"]
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            assert statement["Effect"] == "Allow"
            assert not [action for action in actions if "*" in action], name
            assert "*" not in resources, name
            assert "NotAction" not in statement and "NotResource" not in statement
        by_sid = {s["Sid"]: s for s in statements}
        assert sorted(by_sid) == ["ReadOwnSecrets", "WriteOwnLogs"]
        assert sorted(by_sid["WriteOwnLogs"]["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
        assert by_sid["WriteOwnLogs"]["Resource"] == (
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*"
        )
        assert by_sid["ReadOwnSecrets"]["Action"] == "secretsmanager:GetSecretValue"
        # A secret's ARN ends with a hyphen and six random characters.
        assert sorted(by_sid["ReadOwnSecrets"]["Resource"]) == [
            f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{SECRET_PREFIX}{secret}-??????"
            for secret in SECRETS[function]
        ]


def test_log_groups_keep_30_days(deployment: Deployment, deployed: Deployed) -> None:
    logs = deployment.emulator.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    assert sorted((g["logGroupName"], g["retentionInDays"]) for g in groups) == sorted(
        (f"/aws/lambda/{function_name(f)}", 30) for f in FUNCTIONS
    )
    for group in groups:
        assert logs.list_tags_for_resource(resourceArn=group["arn"].removesuffix(":*"))["tags"] == TAGS


def test_rest_api_is_imported_from_the_document_with_proxy_integrations(
    deployment: Deployment, deployed: Deployed
) -> None:
    apigateway = deployment.emulator.client("apigateway")
    named = [a for a in apigateway.get_rest_apis()["items"] if a["name"] == f"{NAME}-api"]
    assert len(named) == 1
    api = named[0]
    assert api["endpointConfiguration"]["types"] == ["REGIONAL"]
    document = deployment.openapi()
    sha256 = api_sha256(document)
    assert api["tags"] == {**TAGS, API_TAG: sha256}

    resources = apigateway.get_resources(restApiId=api["id"])["items"]
    methods = {(r["path"], method) for r in resources for method in r.get("resourceMethods", {})}
    assert methods == set(REST_OPERATIONS)
    assert {r["path"] for r in resources} == {"/", "/auth", "/api", "/api/tasks"} | {p for p, _ in methods}
    for resource in resources:
        for method in resource.get("resourceMethods", {}):
            integration = apigateway.get_integration(
                restApiId=api["id"], resourceId=resource["id"], httpMethod=method
            )
            assert integration["type"].upper() == "AWS_PROXY"  # moto keeps the document's spelling
            assert integration["httpMethod"] == "POST"
            assert integration["uri"] == invocation_uri(REST_OPERATIONS[(resource["path"], method)])

    stages = apigateway.get_stages(restApiId=api["id"])["item"]
    assert [s["stageName"] for s in stages] == ["v1"]
    deployment_record = apigateway.get_deployment(restApiId=api["id"], deploymentId=stages[0]["deploymentId"])
    assert deployment_record["description"] == f"Deployment {sha256[:12]}"

    summary = json.loads((deployment.state_dir / "summary.json").read_text())["lambdas"]
    assert summary["rest_api"] == f"https://{api['id']}.execute-api.{REGION}.amazonaws.com/v1"


def test_openapi_document_puts_the_authorizer_in_front_of_api_only(
    deployment: Deployment, deployed: Deployed
) -> None:
    # moto drops securitySchemes on import: the document the role imported is where this is seen.
    document = deployment.openapi()
    validate(document)
    assert document["openapi"].startswith("3.0.")
    assert "security" not in document, "a top-level security would put the authorizer before /auth/*"

    operations = {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }
    assert set(operations) == set(REST_OPERATIONS)
    for (path, method), operation in operations.items():
        if path.startswith("/api/"):
            assert operation["security"] == [{"tenantforge-jwt": []}], (path, method)
        else:
            assert "security" not in operation, (path, method)
        integration = operation["x-amazon-apigateway-integration"]
        assert (integration["type"], integration["httpMethod"]) == ("aws_proxy", "POST")
        assert integration["uri"] == invocation_uri(REST_OPERATIONS[(path, method)])

    scheme = document["components"]["securitySchemes"]["tenantforge-jwt"]
    assert (scheme["type"], scheme["name"], scheme["in"]) == ("apiKey", "Authorization", "header")
    assert scheme["x-amazon-apigateway-authtype"] == "custom"
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "token"
    assert authorizer["authorizerResultTtlInSeconds"] == 300
    assert authorizer["authorizerUri"] == invocation_uri("authorizer")
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert re.match(authorizer["identityValidationExpression"], f"Bearer {token}")
    assert not re.match(authorizer["identityValidationExpression"], token)


def test_websocket_api_routes_through_the_authorizer_to_its_function(
    deployment: Deployment, deployed: Deployed
) -> None:
    apigatewayv2 = deployment.emulator.client("apigatewayv2")
    named = [a for a in apigatewayv2.get_apis()["Items"] if a["Name"] == f"{NAME}-websocket"]
    assert len(named) == 1
    api = named[0]
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["Tags"] == TAGS
    api_id = api["ApiId"]

    integrations = apigatewayv2.get_integrations(ApiId=api_id)["Items"]
    assert [(i["IntegrationType"], i["IntegrationUri"]) for i in integrations] == [
        ("AWS_PROXY", invocation_uri("websocket_api"))
    ]
    target = f"integrations/{integrations[0]['IntegrationId']}"
    routes = {r["RouteKey"]: r for r in apigatewayv2.get_routes(ApiId=api_id)["Items"]}
    assert {key: (r["AuthorizationType"], r["Target"]) for key, r in routes.items()} == {
        "$connect": ("CUSTOM", target),
        "$disconnect": ("NONE", target),
        "subscribe": ("NONE", target),
    }
    # GetAuthorizers fails in moto; the $connect route names the one authorizer.
    authorizer = apigatewayv2.get_authorizer(ApiId=api_id, AuthorizerId=routes["$connect"]["AuthorizerId"])
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["AuthorizerUri"] == invocation_uri("authorizer")
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]

    stages = apigatewayv2.get_stages(ApiId=api_id)["Items"]
    assert [(s["StageName"], s["AutoDeploy"]) for s in stages] == [("v1", True)]
    summary = json.loads((deployment.state_dir / "summary.json").read_text())["lambdas"]
    assert summary["websocket_api"] == f"wss://{api_id}.execute-api.{REGION}.amazonaws.com/v1"


def expected_permissions(rest_api_id: str, websocket_api_id: str) -> dict[str, dict[str, str]]:
    """Each function's statement ids and the source ARN each one allows, nothing else."""
    return {
        "authorizer": {
            "rest-api-authorizer": f"{execute_arn(rest_api_id)}/authorizers/*",
            "websocket-api-authorizer": f"{execute_arn(websocket_api_id)}/authorizers/*",
        },
        "token": {"rest-api": f"{execute_arn(rest_api_id)}/*/*/auth/*"},
        "orchestrator": {"rest-api": f"{execute_arn(rest_api_id)}/*/*/api/*"},
        "websocket_api": {"websocket-api": f"{execute_arn(websocket_api_id)}/*"},
    }


def permissions(emulator: Emulator) -> dict[str, dict[str, str]]:
    client = emulator.client("lambda")
    found: dict[str, dict[str, str]] = {}
    for function in FUNCTIONS:
        policy = json.loads(client.get_policy(FunctionName=function_name(function))["Policy"])
        found[function] = {}
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            assert statement["Action"] == "lambda:InvokeFunction"
            assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
            assert statement["Resource"] == function_arn(function)
            found[function][statement["Sid"]] = statement["Condition"]["ArnLike"]["AWS:SourceArn"]
    return found


def test_api_gateway_may_invoke_each_function_from_its_own_api_only(
    deployment: Deployment, deployed: Deployed
) -> None:
    assert permissions(deployment.emulator) == expected_permissions(
        deployment.rest_api_id(), deployment.websocket_api_id()
    )


def test_a_second_run_changes_nothing(deployment: Deployment, deployed: Deployed) -> None:
    zips = {f: (deployment.build_dir / f"{f}.zip").read_bytes() for f in FUNCTIONS}
    run = deployment.run()
    run.assert_ok()
    assert run.changed == 0, changed_tasks(run)
    assert snapshot(deployment.emulator) == deployed.snapshot
    assert {f: (deployment.build_dir / f"{f}.zip").read_bytes() for f in FUNCTIONS} == zips


BAD_INPUT: list[tuple[str, dict[str, Any], str, str | None]] = [
    (
        "memory missing a function",
        {"lambdas_memory_mb": {"authorizer": 256, "token": 512, "orchestrator": 512}},
        "lambdas_memory_mb.websocket_api",
        None,
    ),
    (
        "memory below Lambda's minimum",
        {"lambdas_memory_mb": {**MEMORY_MB, "orchestrator": 64}},
        "lambdas_memory_mb.orchestrator",
        None,
    ),
    (
        "memory not a number",
        {"lambdas_memory_mb": {**MEMORY_MB, "token": "lots"}},
        "lambdas_memory_mb.token",
        None,
    ),
    (
        "timeout beyond 15 minutes",
        {"lambdas_timeout_seconds": {**TIMEOUT_SECONDS, "orchestrator": 901}},
        "lambdas_timeout_seconds.orchestrator",
        None,
    ),
    (
        "settings of an unknown function",
        {"lambdas_memory_mb": {**MEMORY_MB, "notifier": 256}},
        "lambdas_memory_mb",
        None,
    ),
    (
        "database url with a password",
        {"lambdas_database_url": "postgresql://u:s3cret@h:1/db"},
        "lambdas_database_url",
        "s3cret",
    ),
    (
        "amqp url with a password",
        {"lambdas_amqp_url": "amqp://tenantforge_orchestrator:s3cret@h:5672/tenantforge"},
        "lambdas_amqp_url",
        "s3cret",
    ),
    ("stage with a space", {"lambdas_stage": "bad stage"}, "lambdas_stage", None),
    (
        "authorizer cache beyond an hour",
        {"lambdas_authorizer_ttl_seconds": 3601},
        "lambdas_authorizer_ttl_seconds",
        None,
    ),
    ("retention CloudWatch rejects", {"lambdas_log_retention_days": 10}, "lambdas_log_retention_days", None),
    ("unknown log level", {"lambdas_log_level": "TRACE"}, "lambdas_log_level", None),
]


@pytest.mark.parametrize(
    ("overrides", "variable", "secret"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_fails_before_any_aws_call(
    deployment: Deployment,
    deployed: Deployed,
    tmp_path: Path,
    overrides: dict[str, Any],
    variable: str,
    secret: str | None,
) -> None:
    before = snapshot(deployment.emulator)
    extra_vars = {
        "local_emulator_port": deployment.emulator.port,
        "lambdas_local_management_api": False,
        "lambdas_wheel_cache": str(deployment.wheel_cache),
        **overrides,
    }
    run = run_playbook(PLAYBOOK, tmp_path, extra_vars)

    assert run.returncode != 0
    # The error's own message, not the task dump after it (an argument spec failure lists every option).
    failure = re.search(
        r"^\[ERROR\]: Task failed: (?P<message>.*?)\nOrigin:", run.output, re.MULTILINE | re.DOTALL
    )
    assert failure, run.output[-3000:]
    assert variable in failure["message"]
    failed_task = re.findall(r"^TASK \[(.+)\] \*+$", run.output[: failure.start()], re.MULTILINE)[-1]
    assert failed_task.startswith("lambdas : "), failed_task
    # The first AWS call of a deploy; the preflight stops the run before it.
    assert "Look up the account" not in run.output
    if secret:
        assert secret not in run.output
    assert snapshot(deployment.emulator) == before
    assert sorted(tmp_path.rglob("*")) == []


def test_a_changed_setting_updates_only_its_function(deployment: Deployment, deployed: Deployed) -> None:
    rest_api_id = deployment.rest_api_id()
    run = deployment.run(lambdas_memory_mb={**MEMORY_MB, "orchestrator": 1024})
    run.assert_ok()
    assert changed_tasks(run) == {"lambdas : Deploy the functions": ["orchestrator"]}

    after = snapshot(deployment.emulator)
    orchestrator = f"function {function_name('orchestrator')}"
    assert after[orchestrator]["MemorySize"] == 1024
    # Its code and every other setting as they were (the timestamps of an update may move).
    updated = {"MemorySize", "LastModified", "RevisionId"}
    assert {k: v for k, v in after[orchestrator].items() if k not in updated} == {
        k: v for k, v in deployed.snapshot[orchestrator].items() if k not in updated
    }
    assert {k: v for k, v in after.items() if k != orchestrator} == {
        k: v for k, v in deployed.snapshot.items() if k != orchestrator
    }
    assert deployment.rest_api_id() == rest_api_id


def test_a_changed_document_replaces_the_rest_api(deployment: Deployment, deployed: Deployed) -> None:
    """The authorizer's cache time is in the document: a new API, the old one removed, the grants moved.

    The orchestrator's memory of the previous test is passed again: its function is left alone.
    """
    old_rest_api_id = deployment.rest_api_id()
    websocket_api_id = deployment.websocket_api_id()
    changed = {"lambdas_memory_mb": {**MEMORY_MB, "orchestrator": 1024}, "lambdas_authorizer_ttl_seconds": 60}
    run = deployment.run(**changed)
    run.assert_ok()

    new_rest_api_id = deployment.rest_api_id()
    assert new_rest_api_id != old_rest_api_id
    assert changed_tasks(run) == {
        "lambdas : Write the document beside the zips": [""],
        "lambdas : Create the REST API from the document and deploy it": [""],
        "lambdas : Remove the REST APIs the document superseded": [old_rest_api_id],
        "lambdas : Let API Gateway invoke the functions": [
            "authorizer rest-api-authorizer",
            "token rest-api",
            "orchestrator rest-api",
        ],
        "platform_summary : Write the summary": [""],
    }
    apigateway = deployment.emulator.client("apigateway")
    with pytest.raises(apigateway.exceptions.NotFoundException):
        apigateway.get_rest_api(restApiId=old_rest_api_id)
    assert [a["id"] for a in apigateway.get_rest_apis()["items"] if a["name"] == f"{NAME}-api"] == [
        new_rest_api_id
    ]

    document = deployment.openapi()
    authorizer = document["components"]["securitySchemes"]["tenantforge-jwt"][
        "x-amazon-apigateway-authorizer"
    ]
    assert authorizer["authorizerResultTtlInSeconds"] == 60
    api = apigateway.get_rest_api(restApiId=new_rest_api_id)
    assert api["tags"][API_TAG] == api_sha256(document)
    assert api["tags"][API_TAG] != deployed.snapshot[f"rest api {old_rest_api_id}"]["tags"][API_TAG]
    resources = apigateway.get_resources(restApiId=new_rest_api_id)["items"]
    assert {(r["path"], m) for r in resources for m in r.get("resourceMethods", {})} == set(REST_OPERATIONS)
    assert [s["stageName"] for s in apigateway.get_stages(restApiId=new_rest_api_id)["item"]] == ["v1"]

    assert deployment.websocket_api_id() == websocket_api_id
    assert permissions(deployment.emulator) == expected_permissions(new_rest_api_id, websocket_api_id)
    summary = json.loads((deployment.state_dir / "summary.json").read_text())["lambdas"]
    assert summary["rest_api"] == f"https://{new_rest_api_id}.execute-api.{REGION}.amazonaws.com/v1"

    settled = snapshot(deployment.emulator)
    again = deployment.run(**changed)
    again.assert_ok()
    assert again.changed == 0, changed_tasks(again)
    assert snapshot(deployment.emulator) == settled


def test_absent_removes_everything_after_a_check_mode_that_removes_nothing(
    deployment: Deployment, deployed: Deployed
) -> None:
    before = snapshot(deployment.emulator)
    rest_api_id = deployment.rest_api_id()
    assert all(before["resources"].values())
    removals = {
        "lambdas : Remove the REST APIs": [rest_api_id],
        "lambdas : Remove the WebSocket API": [""],
        "lambdas : Remove the functions": list(FUNCTIONS),
        "lambdas : Remove the functions' IAM roles and their policies": list(FUNCTIONS),
        "lambdas : Remove the functions' log groups": list(FUNCTIONS),
        # The summary forgets the removed functions and APIs.
        "platform_summary : Write the summary": [""],
    }

    checked = deployment.run("--check", lambdas_state="absent")
    checked.assert_ok()
    assert changed_tasks(checked) == removals
    assert snapshot(deployment.emulator) == before, "check mode removed something"

    removed = deployment.run(lambdas_state="absent")
    removed.assert_ok()
    assert changed_tasks(removed) == removals
    assert lambdas_resources(deployment.emulator) == {
        "functions": [],
        "iam_roles": [],
        "log_groups": [],
        "rest_apis": [],
        "websocket_apis": [],
    }

    assert json.loads((deployment.state_dir / "summary.json").read_text())["lambdas"] == {}

    again = deployment.run(lambdas_state="absent")
    again.assert_ok()
    assert again.changed == 0, changed_tasks(again)
