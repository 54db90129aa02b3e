"""apigateway_websocket against the tests' AWS emulator (moto).

The module runs through ``ansible-playbook`` (``run_module``): argument spec, check mode and diff mode
are Ansible's own. Each test manages an API of its own name and checks the results, ``changed``, the
diff and the API as boto3 reads it back: created, modified and deleted; each normally, in check mode
and again for idempotency.

API calls are counted in the module's own process: the runs get a ``sitecustomize`` (on PYTHONPATH)
that appends the name of every botocore operation to a file, so a test can say "this run only read".
The Lambda functions are ARNs only: API Gateway (and moto) do not look the functions up when an
integration or an authorizer is created, only when a client connects.

Set-ups, and what needs no Ansible (each input check, tags, authorizer removal), run the module's
core in-process on a counting client: an ansible-playbook run costs seconds. moto lacks
GetAuthorizers, UpdateStage and CreateDeployment, which the module uses on AWS; the last tests give
the core a client that adds those three calls to the emulator the way AWS answers them.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry, RetryingBotoClientWrapper
from ansible_module import run_module
from api_calls import CALL_LOG, install_call_logger, logged_calls
from conftest import Emulator

from ansible_collections.tenantforge.platform.plugins.modules import apigateway_websocket

pytestmark = pytest.mark.integration

MODULE = "tenantforge.platform.apigateway_websocket"
REGION = "us-east-1"
ACCOUNT = "123456789012"
READS = {"GetApis", "GetIntegrations", "GetRoutes", "GetAuthorizers", "GetAuthorizer", "GetStages"}


def function(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def uri(function_arn: str) -> str:
    return f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{function_arn}/invocations"


@dataclass
class Run:
    result: dict[str, Any]
    calls: Counter[str]
    output: str

    @property
    def writes(self) -> Counter[str]:
        return Counter({name: count for name, count in self.calls.items() if name not in READS})


Runner = Callable[..., Run]


@pytest.fixture(scope="module")
def aws(emulator: Emulator) -> Any:
    return emulator.client("apigatewayv2")


@pytest.fixture(scope="module")
def run(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Runs the module in a one-task playbook; returns the task result and the API calls it made."""
    state_dir = tmp_path_factory.mktemp("apigateway-websocket")
    pythonpath = install_call_logger(state_dir / "hooks")
    connection = {
        "endpoint_url": emulator.endpoint_url,
        "region": REGION,
        "access_key": "testing",
        "secret_key": "testing",
    }
    counter = iter(range(1_000_000))

    def runner(params: dict[str, Any], check: bool = False, fails: bool = False) -> Run:
        calls_log = state_dir / f"calls-{next(counter)}.log"
        with mock.patch.dict(os.environ, {CALL_LOG: str(calls_log), "PYTHONPATH": pythonpath}):
            ran = run_module(MODULE, {**connection, **params}, state_dir, check=check, diff=True)
        assert ran.failed == fails, ran.output[-4000:]
        return Run(ran.result, logged_calls(calls_log), ran.output)

    return runner


@dataclass
class Names:
    """An API name and Lambda ARNs of one test's own."""

    api: str
    handler: str
    notifier: str
    disconnect: str
    authorizer: str
    authorizer_v2: str


@pytest.fixture
def names(aws: Any) -> Iterator[Names]:
    """Names of the test's own; the API is deleted afterwards, whatever the test left."""
    tag = uuid.uuid4().hex[:8]
    yield Names(
        api=f"tf-ws-{tag}",
        handler=function(f"tf-{tag}-websocket-api"),
        notifier=function(f"tf-{tag}-notifier"),
        disconnect=function(f"tf-{tag}-disconnect"),
        authorizer=function(f"tf-{tag}-authorizer"),
        authorizer_v2=function(f"tf-{tag}-authorizer:live"),
    )
    for api in aws.get_apis()["Items"]:
        if api["Name"] == f"tf-ws-{tag}":
            aws.delete_api(ApiId=api["ApiId"])


def base_params(names: Names) -> dict[str, Any]:
    return {
        "name": names.api,
        "description": "Task status events",
        "integrations": [{"name": "websocket", "function_arn": names.handler}],
        "routes": [
            {"route_key": "$connect", "integration": "websocket", "authorization": "CUSTOM"},
            # An invocation URI is accepted as well as a function ARN.
            {"route_key": "$disconnect", "function_arn": uri(names.disconnect)},
            {"route_key": "subscribe", "integration": "websocket"},
        ],
        "authorizer": {"name": "token", "function_arn": names.authorizer},
        "stage": {"name": "dev", "variables": {"environment": "test"}},
        "tags": {"tenantforge:environment": "test"},
    }


def base_view(names: Names) -> dict[str, Any]:
    return {
        "state": "present",
        "name": names.api,
        "description": "Task status events",
        "route_selection_expression": "$request.body.action",
        "tags": {"tenantforge:environment": "test"},
        "integrations": {
            names.handler: {"timeout_in_millis": 29000},
            names.disconnect: {"timeout_in_millis": 29000},
        },
        "routes": {
            "$connect": {"integration": names.handler, "authorization": "CUSTOM", "authorizer": "token"},
            "$disconnect": {"integration": names.disconnect, "authorization": "NONE"},
            "subscribe": {"integration": names.handler, "authorization": "NONE"},
        },
        "authorizers": {
            "token": {
                "type": "REQUEST",
                "function_arn": names.authorizer,
                "identity_sources": ["route.request.querystring.token"],
            }
        },
        "stage": {"name": "dev", "auto_deploy": True, "variables": {"environment": "test"}},
    }


def strip(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "ResponseMetadata"}


def snapshot(aws: Any, name: str) -> dict[str, Any]:
    """Everything of the API moto can tell (authorizers through the routes: moto has no GetAuthorizers)."""
    apis = [strip(api) for api in aws.get_apis()["Items"] if api["Name"] == name]
    if not apis:
        return {}
    assert len(apis) == 1
    api_id = apis[0]["ApiId"]
    routes = sorted(aws.get_routes(ApiId=api_id)["Items"], key=lambda item: item["RouteKey"])
    authorizer_ids = sorted(
        {route["AuthorizerId"] for route in routes if route["AuthorizationType"] == "CUSTOM"}
    )
    return {
        "api": apis[0],
        "integrations": sorted(
            aws.get_integrations(ApiId=api_id)["Items"], key=lambda item: item["IntegrationId"]
        ),
        "routes": routes,
        "authorizers": [
            strip(aws.get_authorizer(ApiId=api_id, AuthorizerId=item)) for item in authorizer_ids
        ],
        "stages": aws.get_stages(ApiId=api_id)["Items"],
    }


def routes_by_key(aws: Any, api_id: str) -> dict[str, dict[str, Any]]:
    return {route["RouteKey"]: route for route in aws.get_routes(ApiId=api_id)["Items"]}


def integrations_by_uri(aws: Any, api_id: str) -> dict[str, dict[str, Any]]:
    return {item["IntegrationUri"]: item for item in aws.get_integrations(ApiId=api_id)["Items"]}


# ------------------------------------------------------------------------ create, check, idempotent


def test_create_in_check_mode_then_for_real_then_idempotent(run: Runner, aws: Any, names: Names) -> None:
    params = base_params(names)
    expected_actions = [
        f"created API {names.api}",
        "created authorizer token",
        f"created integration {names.handler}",
        f"created integration {names.disconnect}",
        "created route $connect",
        "created route $disconnect",
        "created route subscribe",
        "created stage dev",
    ]

    checked = run(params, check=True)
    assert checked.result["changed"] is True
    assert checked.result["actions"] == expected_actions
    assert checked.result["diff"] == {"before": {"state": "absent"}, "after": base_view(names)}
    assert checked.result["api_id"] is None and checked.result["stage_url"] is None
    assert checked.result["route_ids"] == {"$connect": None, "$disconnect": None, "subscribe": None}
    assert checked.calls == Counter({"GetApis": 1})
    assert snapshot(aws, names.api) == {}

    created = run(params)
    result = created.result
    assert result["changed"] is True
    assert result["actions"] == expected_actions
    assert result["diff"] == {"before": {"state": "absent"}, "after": base_view(names)}
    assert created.writes == Counter(
        {"CreateApi": 1, "CreateAuthorizer": 1, "CreateIntegration": 2, "CreateRoute": 3, "CreateStage": 1}
    )
    api_id = result["api_id"]
    host = f"{api_id}.execute-api.{REGION}.amazonaws.com"
    assert result["api_endpoint"] == f"https://{host}"  # moto's form; AWS answers wss://
    assert result["stage_url"] == f"wss://{host}/dev"
    assert result["management_endpoint"] == f"https://{host}/dev"
    assert result["deployment_id"] is None

    api = aws.get_api(ApiId=api_id)
    assert (api["Name"], api["ProtocolType"], api["RouteSelectionExpression"], api["Description"]) == (
        names.api,
        "WEBSOCKET",
        "$request.body.action",
        "Task status events",
    )
    assert api["Tags"] == {"tenantforge:environment": "test"}
    integrations = integrations_by_uri(aws, api_id)
    assert set(integrations) == {uri(names.handler), uri(names.disconnect)}
    for item in integrations.values():
        assert (item["IntegrationType"], item["IntegrationMethod"], item["TimeoutInMillis"]) == (
            "AWS_PROXY",
            "POST",
            29000,
        )
    assert result["integration_ids"] == {
        names.disconnect: integrations[uri(names.disconnect)]["IntegrationId"],
        names.handler: integrations[uri(names.handler)]["IntegrationId"],
    }
    handler_target = f"integrations/{integrations[uri(names.handler)]['IntegrationId']}"
    authorizer_id = result["authorizer_id"]
    authorizer = aws.get_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)
    assert (authorizer["Name"], authorizer["AuthorizerType"], authorizer["AuthorizerUri"]) == (
        "token",
        "REQUEST",
        uri(names.authorizer),
    )
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    routes = routes_by_key(aws, api_id)
    assert {key: (route["Target"], route["AuthorizationType"]) for key, route in routes.items()} == {
        "$connect": (handler_target, "CUSTOM"),
        "$disconnect": (f"integrations/{integrations[uri(names.disconnect)]['IntegrationId']}", "NONE"),
        "subscribe": (handler_target, "NONE"),
    }
    assert routes["$connect"]["AuthorizerId"] == authorizer_id
    assert result["route_ids"] == {key: route["RouteId"] for key, route in routes.items()}
    [stage] = aws.get_stages(ApiId=api_id)["Items"]
    assert (stage["StageName"], stage["AutoDeploy"], stage["StageVariables"]) == (
        "dev",
        True,
        {"environment": "test"},
    )
    state = snapshot(aws, names.api)

    again = run(params)
    assert again.result["changed"] is False
    assert again.result["actions"] == []
    assert again.result["diff"]["before"] == again.result["diff"]["after"] == base_view(names)
    # GetAuthorizers is tried (moto answers 500, then the routes' authorizer is read by id).
    assert again.calls == Counter(
        {
            "GetApis": 1,
            "GetIntegrations": 1,
            "GetRoutes": 1,
            "GetStages": 1,
            "GetAuthorizers": 1,
            "GetAuthorizer": 1,
        }
    )
    for key in ("api_id", "api_endpoint", "stage_url", "management_endpoint", "integration_ids", "route_ids"):
        assert again.result[key] == result[key], key
    assert again.result["authorizer_id"] == authorizer_id
    assert snapshot(aws, names.api) == state

    checked_again = run(params, check=True)
    assert checked_again.result["changed"] is False and checked_again.writes == Counter()
    assert snapshot(aws, names.api) == state


# ---------------------------------------------------------------------------------------- modify


def test_modify_in_check_mode_then_for_real_then_idempotent(
    run: Runner, moto: tuple[Core, CountingClient], aws: Any, names: Names
) -> None:
    core, _ = moto
    created = core(base_params(names))
    api_id = created["api_id"]
    before_routes = routes_by_key(aws, api_id)
    state = snapshot(aws, names.api)
    params = {
        **base_params(names),
        "integrations": [
            {"name": "websocket", "function_arn": names.handler},
            {"name": "notify", "function_arn": names.notifier, "timeout_in_millis": 10000},
        ],
        "routes": [
            {"route_key": "$connect", "integration": "websocket", "authorization": "CUSTOM"},
            {"route_key": "subscribe", "integration": "notify"},  # another integration
            {"route_key": "unsubscribe", "function_arn": names.notifier},  # a new route
        ],  # $disconnect is gone, and with it the integration only it used
        "authorizer": {"name": "token", "function_arn": names.authorizer_v2},
        "stage": {"name": "dev", "variables": {"environment": "test", "tier": "blue"}},
    }
    expected_actions = [
        "updated authorizer token",
        f"created integration {names.notifier}",
        "created route unsubscribe",
        "updated route subscribe",
        "deleted route $disconnect",
        f"deleted integration {names.disconnect}",
        "updated stage dev",
    ]
    after = base_view(names)
    after["integrations"] = {
        names.handler: {"timeout_in_millis": 29000},
        names.notifier: {"timeout_in_millis": 10000},
    }
    after["routes"] = {
        "$connect": {"integration": names.handler, "authorization": "CUSTOM", "authorizer": "token"},
        "subscribe": {"integration": names.notifier, "authorization": "NONE"},
        "unsubscribe": {"integration": names.notifier, "authorization": "NONE"},
    }
    after["authorizers"]["token"]["function_arn"] = names.authorizer_v2
    after["stage"]["variables"] = {"environment": "test", "tier": "blue"}

    checked = run(params, check=True)
    assert checked.result["changed"] is True
    assert checked.result["actions"] == expected_actions
    assert checked.result["diff"] == {"before": base_view(names), "after": after}
    assert checked.result["route_ids"]["unsubscribe"] is None
    assert checked.result["integration_ids"][names.notifier] is None
    assert checked.writes == Counter()
    assert snapshot(aws, names.api) == state

    modified = run(params)
    assert modified.result["changed"] is True
    assert modified.result["actions"] == expected_actions
    assert modified.result["diff"] == {"before": base_view(names), "after": after}
    # moto has no UpdateStage: the stage is replaced, and the run says so.
    assert modified.result["warnings"] == [
        "the endpoint does not implement UpdateStage: stage dev was deleted and created again"
    ]
    assert modified.writes == Counter(
        {
            "UpdateAuthorizer": 1,
            "CreateIntegration": 1,
            "CreateRoute": 1,
            "UpdateRoute": 1,
            "DeleteRoute": 1,
            "DeleteIntegration": 1,
            "UpdateStage": 1,
            "DeleteStage": 1,
            "CreateStage": 1,
        }
    )
    integrations = integrations_by_uri(aws, api_id)
    assert set(integrations) == {uri(names.handler), uri(names.notifier)}
    assert integrations[uri(names.notifier)]["TimeoutInMillis"] == 10000
    notifier_target = f"integrations/{integrations[uri(names.notifier)]['IntegrationId']}"
    routes = routes_by_key(aws, api_id)
    assert set(routes) == {"$connect", "subscribe", "unsubscribe"}
    assert routes["subscribe"]["RouteId"] == before_routes["subscribe"]["RouteId"]  # updated in place
    assert routes["subscribe"]["Target"] == routes["unsubscribe"]["Target"] == notifier_target
    authorizer = aws.get_authorizer(ApiId=api_id, AuthorizerId=created["authorizer_id"])
    assert authorizer["AuthorizerUri"] == uri(names.authorizer_v2)
    [stage] = aws.get_stages(ApiId=api_id)["Items"]
    assert stage["StageVariables"] == {"environment": "test", "tier": "blue"}
    state = snapshot(aws, names.api)

    again = run(params)
    assert again.result["changed"] is False and again.result["actions"] == []
    assert again.result["diff"]["before"] == again.result["diff"]["after"] == after
    assert again.writes == Counter()
    assert snapshot(aws, names.api) == state


def test_dropping_the_authorizer_and_keeping_unlisted_routes(
    moto: tuple[Core, CountingClient], aws: Any, names: Names
) -> None:
    core, client = moto
    created = core(base_params(names))
    api_id = created["api_id"]
    params = {
        "name": names.api,
        "routes": [{"route_key": "$connect", "function_arn": names.handler}],
        "purge_routes": False,
    }

    changed = core(params)
    assert changed["actions"] == ["updated route $connect", "deleted authorizer token"]
    assert client.calls["UpdateRoute"] == client.calls["DeleteAuthorizer"] == 1
    assert changed["authorizer_id"] is None
    routes = routes_by_key(aws, api_id)
    assert set(routes) == {"$connect", "$disconnect", "subscribe"}  # purge_routes=false keeps them
    assert routes["$connect"]["AuthorizationType"] == "NONE"
    with pytest.raises(aws.exceptions.NotFoundException):
        aws.get_authorizer(ApiId=api_id, AuthorizerId=created["authorizer_id"])
    # Description, tags and the stage are not managed when omitted.
    assert changed["diff"]["after"]["description"] == "Task status events"
    assert aws.get_api(ApiId=api_id)["Tags"] == {"tenantforge:environment": "test"}
    assert len(aws.get_stages(ApiId=api_id)["Items"]) == 1

    again = core(params)
    assert again["changed"] is False and set(client.calls) <= READS


def test_api_settings_and_tags_are_updated(moto: tuple[Core, CountingClient], aws: Any, names: Names) -> None:
    core, client = moto
    api_id = core(base_params(names))["api_id"]
    params = {
        **base_params(names),
        "description": "Task events",
        "route_selection_expression": "$request.body.type",
        "tags": {"tenantforge:tier": "blue"},
    }

    kept = core({**params, "purge_tags": False})
    assert kept["actions"] == [
        "updated API description and route selection expression",
        "set tags tenantforge:tier",
    ]
    api = aws.get_api(ApiId=api_id)
    assert (api["Description"], api["RouteSelectionExpression"]) == ("Task events", "$request.body.type")
    assert api["Tags"] == {"tenantforge:environment": "test", "tenantforge:tier": "blue"}
    purged = core(params)
    assert purged["actions"] == ["removed tags tenantforge:environment"]
    assert client.calls["UntagResource"] == 1 and client.calls["TagResource"] == 0
    assert aws.get_api(ApiId=api_id)["Tags"] == {"tenantforge:tier": "blue"}
    assert core(params)["changed"] is False and set(client.calls) <= READS


# ---------------------------------------------------------------------------------------- delete


def test_delete_in_check_mode_then_for_real_then_idempotent(
    run: Runner, moto: tuple[Core, CountingClient], aws: Any, names: Names
) -> None:
    core, _ = moto
    api_id = core(base_params(names))["api_id"]
    state = snapshot(aws, names.api)
    params = {"name": names.api, "state": "absent", "stage": {"name": "dev"}}

    checked = run(params, check=True)
    assert checked.result["changed"] is True
    assert checked.result["actions"] == [f"deleted API {names.api} ({api_id})"]
    assert checked.result["diff"] == {"before": base_view(names), "after": {"state": "absent"}}
    assert checked.writes == Counter()
    assert snapshot(aws, names.api) == state

    deleted = run(params)
    assert deleted.result["changed"] is True
    assert deleted.result["actions"] == [f"deleted API {names.api} ({api_id})"]
    assert deleted.result["api_id"] is None and deleted.result["route_ids"] == {}
    assert deleted.writes == Counter({"DeleteApi": 1})
    assert snapshot(aws, names.api) == {}

    again = run(params)
    assert again.result["changed"] is False and again.result["actions"] == []
    assert again.result["diff"] == {"before": {"state": "absent"}, "after": {"state": "absent"}}
    assert again.calls == Counter({"GetApis": 1})


# ------------------------------------------------------------------------------------- bad input


def test_bad_input_fails_through_ansible_naming_the_option_before_any_call(
    run: Runner, aws: Any, names: Names
) -> None:
    """One check of the module's own and one of the argument spec's; the other cases run in-process."""
    routes = [{"route_key": "send message", "integration": "websocket"}]
    failed = run({**base_params(names), "routes": routes}, fails=True)
    assert failed.result["msg"].startswith("routes[0].route_key: 'send message' is not $connect")
    assert failed.calls == Counter()
    routes = [{"route_key": "subscribe", "integration": "websocket", "function_arn": names.handler}]
    failed = run({**base_params(names), "routes": routes}, fails=True)
    assert (
        "parameters are mutually exclusive: integration|function_arn found in routes" in failed.result["msg"]
    )
    assert failed.calls == Counter()
    assert snapshot(aws, names.api) == {}


BAD_INPUT = [
    ("name", "x" * 129, "name: 'xxxxx"),
    ("routes", [{"route_key": "$message", "integration": "websocket"}], "routes[0].route_key: '$message'"),
    (
        "routes",
        [
            {"route_key": "subscribe", "integration": "websocket"},
            {"route_key": "subscribe", "integration": "websocket"},
        ],
        "routes[1].route_key: subscribe is listed twice",
    ),
    (
        "routes",
        [{"route_key": "subscribe", "integration": "notify"}],
        "routes[0].integration: no entry of integrations is named 'notify' (known: websocket)",
    ),
    (
        "routes",
        [{"route_key": "subscribe", "integration": "websocket", "authorization": "CUSTOM"}],
        "routes[0].authorization: CUSTOM on subscribe: WebSocket APIs only run authorizers on $connect",
    ),
    (
        "routes",
        [{"route_key": "$connect", "integration": "websocket"}],
        "authorizer: no route uses it; set authorization: CUSTOM on the $connect route",
    ),
    ("authorizer", None, "routes[0].authorization: CUSTOM needs the authorizer option"),
    (
        "authorizer",
        {"name": "token", "function_arn": function("a"), "identity_sources": ["$request.header.Auth"]},
        "authorizer.identity_sources[0]: '$request.header.Auth' is not route.request.header.<name>",
    ),
    (
        "authorizer",
        {"name": "token", "function_arn": function("a"), "identity_sources": []},
        "authorizer.identity_sources: at least one identity source is needed",
    ),
    ("stage", {"name": "dev stage"}, "stage.name: 'dev stage' may only hold letters, digits, - and _"),
    ("stage", {"name": "dev", "variables": {"url": "a b"}}, "stage.variables.url: the value may only hold"),
    (
        "stage",
        {"name": "dev", "variables": {"my-var": "a"}},
        "stage.variables: the name 'my-var' may only hold",
    ),
    (
        "integrations",
        [{"name": "websocket", "function_arn": "lambda:websocket-api"}],
        "integrations[0].function_arn: 'lambda:websocket-api' is not a Lambda function ARN",
    ),
    (
        "integrations",
        [
            {"name": "websocket", "function_arn": function("a")},
            {"name": "again", "function_arn": function("a")},
        ],
        f"integrations[1].function_arn: {function('a')} already has an integration",
    ),
    (
        "integrations",
        [{"name": "websocket", "function_arn": function("a"), "timeout_in_millis": 30000}],
        "integrations[0].timeout_in_millis: 30000 is not between 50 and 29000",
    ),
    (
        "route_selection_expression",
        "$request.header.action",
        "route_selection_expression: '$request.header.action'",
    ),
]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    BAD_INPUT,
    ids=[
        "name too long",
        "reserved route key",
        "route listed twice",
        "unknown integration",
        "authorizer off $connect",
        "authorizer unused",
        "custom without authorizer",
        "identity source",
        "no identity source",
        "stage name",
        "stage variable value",
        "stage variable name",
        "function arn",
        "function twice",
        "timeout",
        "route selection expression",
    ],
)
def test_bad_input_fails_naming_the_option_before_any_call(
    moto: tuple[Core, CountingClient], names: Names, option: str, value: Any, message: str
) -> None:
    core, client = moto
    with pytest.raises(apigateway_websocket.WebSocketApiError) as failure:
        core({**base_params(names), option: value})
    assert str(failure.value).startswith(message)
    assert client.calls == Counter()


def test_explicit_deployments_fail_clearly_against_moto(
    moto: tuple[Core, CountingClient], names: Names
) -> None:
    core, _ = moto
    with pytest.raises(apigateway_websocket.WebSocketApiError) as failure:
        core({**base_params(names), "stage": {"name": "dev", "auto_deploy": False}})
    assert str(failure.value) == (
        "CreateDeployment failed for stage dev: the endpoint does not implement it (HTTP 404); "
        "use stage.auto_deploy: true with this endpoint"
    )


# ------------------------------------------------------------------------ the core, in-process


class CountingClient:
    """The emulator's boto3 client, counting the operations called on it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not callable(method) or name.startswith("_"):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls["".join(part.capitalize() for part in name.split("_"))] += 1
            return method(*args, **kwargs)

        return counted


class AwsLikeClient(CountingClient):
    """The emulator's client plus GetAuthorizers, UpdateStage and CreateDeployment, answered as AWS does.

    UpdateStage merges variables (an empty value removes one); CreateDeployment sets the stage's
    DeploymentId, which GetStages then reports.
    """

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.authorizer_ids: dict[str, set[str]] = {}
        self.deployments: dict[tuple[str, str], str] = {}
        self.update_stage_calls: list[dict[str, Any]] = []

    def create_authorizer(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["CreateAuthorizer"] += 1
        created = self.client.create_authorizer(**kwargs)
        self.authorizer_ids.setdefault(kwargs["ApiId"], set()).add(created["AuthorizerId"])
        return dict(created)

    def delete_authorizer(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["DeleteAuthorizer"] += 1
        self.authorizer_ids.get(kwargs["ApiId"], set()).discard(kwargs["AuthorizerId"])
        return dict(self.client.delete_authorizer(**kwargs))

    def get_authorizers(self, ApiId: str) -> dict[str, Any]:
        self.calls["GetAuthorizers"] += 1
        ids = sorted(self.authorizer_ids.get(ApiId, set()))
        return {"Items": [strip(self.client.get_authorizer(ApiId=ApiId, AuthorizerId=item)) for item in ids]}

    def get_stages(self, ApiId: str) -> dict[str, Any]:
        self.calls["GetStages"] += 1
        stages = self.client.get_stages(ApiId=ApiId)["Items"]
        for stage in stages:
            if (ApiId, stage["StageName"]) in self.deployments:
                stage["DeploymentId"] = self.deployments[(ApiId, stage["StageName"])]
        return {"Items": stages}

    def update_stage(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["UpdateStage"] += 1
        self.update_stage_calls.append(kwargs)
        [stage] = [
            item
            for item in self.client.get_stages(ApiId=kwargs["ApiId"])["Items"]
            if item["StageName"] == kwargs["StageName"]
        ]
        variables = {**stage.get("StageVariables", {}), **kwargs.get("StageVariables", {})}
        self.client.delete_stage(ApiId=kwargs["ApiId"], StageName=kwargs["StageName"])
        return dict(
            self.client.create_stage(
                ApiId=kwargs["ApiId"],
                StageName=kwargs["StageName"],
                AutoDeploy=kwargs.get("AutoDeploy", stage.get("AutoDeploy", False)),
                StageVariables={key: value for key, value in variables.items() if value != ""},
            )
        )

    def create_deployment(self, ApiId: str, StageName: str, Description: str) -> dict[str, Any]:
        self.calls["CreateDeployment"] += 1
        deployment_id = f"d{len(self.deployments) + 1}{uuid.uuid4().hex[:5]}"
        self.deployments[(ApiId, StageName)] = deployment_id
        return {"DeploymentId": deployment_id, "DeploymentStatus": "DEPLOYED", "Description": Description}


def with_defaults(spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """What Ansible's argument spec makes of params: every option present, suboption defaults filled."""
    done = {}
    for name, option in spec.items():
        value = params.get(name, option.get("default"))
        if value is not None and "options" in option:
            if option["type"] == "list":
                value = [with_defaults(option["options"], item) for item in value]
            else:
                value = with_defaults(option["options"], value)
        done[name] = value
    return done


Core = Callable[..., dict[str, Any]]


def make_core(client: CountingClient) -> Core:
    """The module's core, in-process, on ``client``: takes the task's options, returns the result."""
    gateway = apigateway_websocket.Gateway(
        RetryingBotoClientWrapper(client, AWSRetry.jittered_backoff(delay=0.01))
    )

    def call(params: dict[str, Any], check: bool = False) -> dict[str, Any]:
        client.calls.clear()
        full = with_defaults(apigateway_websocket.argument_spec(), params)
        return apigateway_websocket.ensure(gateway, full, check)

    return call


@pytest.fixture
def moto(aws: Any) -> Iterator[tuple[Core, CountingClient]]:
    """The core on the emulator as it is (set-ups, and what needs no Ansible)."""
    client = CountingClient(aws)
    yield make_core(client), client


@pytest.fixture
def aws_like(aws: Any) -> Iterator[tuple[Core, AwsLikeClient]]:
    """The core on the emulator completed with the calls moto lacks."""
    client = AwsLikeClient(aws)
    yield make_core(client), client


def test_explicit_deployments_on_aws(aws_like: tuple[Core, AwsLikeClient], names: Names) -> None:
    call, client = aws_like
    params = {**base_params(names), "stage": {"name": "dev", "auto_deploy": False}}

    checked = call(params, check=True)
    assert checked["actions"][-2:] == ["created stage dev", "deployed stage dev"]
    assert checked["deployment_id"] is None and client.calls["CreateDeployment"] == 0

    created = call(params)
    assert created["actions"][-2:] == ["created stage dev", "deployed stage dev"]
    assert client.calls["CreateDeployment"] == 1
    assert created["deployment_id"] == client.deployments[(created["api_id"], "dev")]

    again = call(params)
    assert again["changed"] is False and again["deployment_id"] is None
    assert set(client.calls) <= READS and client.calls["GetAuthorizers"] == 1

    # A route change is deployed; a stage variable change alone is not (variables need no deployment).
    routes = [*params["routes"], {"route_key": "ping", "integration": "websocket"}]
    redeployed = call({**params, "routes": routes})
    assert redeployed["actions"] == ["created route ping", "deployed stage dev"]
    assert (
        redeployed["deployment_id"]
        == client.deployments[(created["api_id"], "dev")]
        != created["deployment_id"]
    )
    variables = call(
        {**params, "routes": routes, "stage": {"name": "dev", "auto_deploy": False, "variables": {"v": "1"}}}
    )
    assert variables["actions"] == ["updated stage dev"] and client.calls["CreateDeployment"] == 0


def test_update_stage_on_aws_merges_and_blanks_variables(
    aws_like: tuple[Core, AwsLikeClient], names: Names
) -> None:
    call, client = aws_like
    params = {**base_params(names), "stage": {"name": "dev", "variables": {"a": "1", "b": "2"}}}
    api_id = call(params)["api_id"]

    updated = call(
        {**params, "stage": {"name": "dev", "auto_deploy": False, "variables": {"b": "3", "c": "4"}}}
    )
    assert updated["warnings"] == []  # UpdateStage exists: no delete and create
    assert client.update_stage_calls == [
        {
            "ApiId": api_id,
            "StageName": "dev",
            "AutoDeploy": False,
            "StageVariables": {"a": "", "b": "3", "c": "4"},
        }
    ]
    assert client.calls["DeleteStage"] == 0


def test_an_unused_authorizer_is_found_by_get_authorizers_and_deleted(
    aws_like: tuple[Core, AwsLikeClient], names: Names
) -> None:
    call, client = aws_like
    api_id = call(base_params(names))["api_id"]
    # One more authorizer, which no route uses: only GetAuthorizers can find it.
    client.create_authorizer(
        ApiId=api_id,
        AuthorizerType="REQUEST",
        Name="stray",
        AuthorizerUri=uri(names.authorizer),
        IdentitySource=["route.request.header.Auth"],
    )

    cleaned = call(base_params(names))
    assert cleaned["actions"] == ["deleted authorizer stray"]
    assert cleaned["diff"]["before"]["authorizers"]["stray"] == {
        "type": "REQUEST",
        "function_arn": names.authorizer,
        "identity_sources": ["route.request.header.Auth"],
    }
    assert "stray" not in cleaned["diff"]["after"]["authorizers"]
    assert client.authorizer_ids[api_id] == {cleaned["authorizer_id"]}
