#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apigateway_websocket
short_description: Manage an API Gateway WebSocket API, its Lambda integrations, routes, authorizer and stage
version_added: 0.1.0
description:
  - Ensures one Amazon API Gateway v2 WebSocket API (C(ProtocolType=WEBSOCKET)), found by O(name),
    exists with the given route selection expression, description and tags, and with exactly the
    Lambda proxy integrations, routes, Lambda C(REQUEST) authorizer and stage of the task; or, with
    O(state=absent), that it does not exist.
  - "Integrations are C(AWS_PROXY) integrations (C(POST)) to Lambda functions, one per function: an
    integration is identified by its function, whose invocation URI is
    C(arn:<partition>:apigateway:<region>:lambda:path/2015-03-31/functions/<function_arn>/invocations)
    (partition and region of the function). API Gateway has no integration names: the names of
    O(integrations) only exist in the task, for O(routes[].integration) to refer to."
  - Routes are identified by their route key. A route whose integration or authorization differs is
    updated in place, so its route id stays.
  - The authorizer is identified by O(authorizer.name). Renaming it creates a new authorizer, moves
    the routes to it and deletes the old one.
  - "What the task does not list is removed: routes (unless O(purge_routes=false)), and integrations
    and authorizers that no remaining route uses. An integration or authorizer that a route kept by
    O(purge_routes=false) uses is kept."
  - "With O(stage), the stage is created or brought in line (auto-deploy and variables; its other
    settings are left alone). With O(stage.auto_deploy=false) a deployment of the stage is created
    when routes, integrations or the authorizer changed, when the stage was created, and when the
    stage has never been deployed. Stages not named in the task are left alone."
  - Every option is checked before any AWS call; bad input fails the task with a message that names
    the option (for example C(routes[1].route_key)) and nothing is read or written.
author:
  - Tenantforge engineering (@tenantforge)
options:
  name:
    description:
      - Name of the WebSocket API, 1 to 128 characters. APIs of other protocols with the same name are
        ignored; two WebSocket APIs with this name fail the task.
    type: str
    required: true
  state:
    description: Whether the API should exist. V(absent) deletes the API with everything in it.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Description of the API. Not changed when omitted.
    type: str
  route_selection_expression:
    description:
      - How API Gateway picks the route of a message, C($request.body.<field>) for WebSocket APIs.
    type: str
    default: $request.body.action
  integrations:
    description:
      - Named Lambda proxy integrations, for O(routes[].integration). A route may also name its
        function directly (O(routes[].function_arn)); its integration then has the defaults.
      - Each function may appear once.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the integration in this task (not stored in AWS).
        type: str
        required: true
      function_arn:
        description:
          - ARN of the Lambda function (with an optional alias or version qualifier), or its API
            Gateway invocation URI.
        type: str
        required: true
      timeout_in_millis:
        description: Integration timeout, 50 to 29000 milliseconds.
        type: int
        default: 29000
  routes:
    description:
      - The routes of the API. Routes of the API not listed here are deleted, unless O(purge_routes=false).
    type: list
    elements: dict
    default: []
    suboptions:
      route_key:
        description:
          - V($connect), V($disconnect), V($default), or a custom route key (what the route selection
            expression selects) of letters, digits, C(_), C(.), C(:) and C(-), at most 128 characters.
          - Other keys starting with C($) are reserved by API Gateway and rejected.
        type: str
        required: true
      integration:
        description: Name of an entry of O(integrations). Exactly one of this and O(routes[].function_arn).
        type: str
      function_arn:
        description:
          - ARN (or invocation URI) of the Lambda function of the route, instead of O(routes[].integration).
            The same function as an entry of O(integrations) uses that integration.
        type: str
      authorization:
        description:
          - V(CUSTOM) protects the route with O(authorizer). API Gateway only runs authorizers on the
            V($connect) route of a WebSocket API, so V(CUSTOM) is only accepted there.
        type: str
        choices: [NONE, CUSTOM]
        default: NONE
  purge_routes:
    description:
      - Delete the routes of the API that O(routes) does not list.
      - With V(false) they are kept, and so are the integrations and the authorizer they use.
    type: bool
    default: true
  authorizer:
    description:
      - The Lambda C(REQUEST) authorizer of the V($connect) route. A route with
        O(routes[].authorization=CUSTOM) must use it, and it must be used by one.
      - Omitted means no authorizer; one the API has is deleted when no remaining route uses it.
      - Authorizer result caching (C(AuthorizerResultTtlInSeconds)), simple responses and payload
        format versions are HTTP API features, which API Gateway rejects for WebSocket APIs; so there
        are no such options.
    type: dict
    suboptions:
      name:
        description: Name of the authorizer, 1 to 128 characters.
        type: str
        required: true
      function_arn:
        description: ARN (or invocation URI) of the authorizer's Lambda function.
        type: str
        required: true
      identity_sources:
        description:
          - Where the identity is in the connection request, at least one of
            C(route.request.header.<name>), C(route.request.querystring.<name>),
            C(stageVariables.<name>) and C(context.<name>).
          - A connection request without all of them is refused with 401 without calling the function.
        type: list
        elements: str
        default: [route.request.querystring.token]
  stage:
    description:
      - The stage to create or update. Omitted means the stages are left alone.
    type: dict
    suboptions:
      name:
        description: Name of the stage, 1 to 128 letters, digits, C(-) and C(_).
        type: str
        required: true
      auto_deploy:
        description:
          - Whether API Gateway deploys every change to the stage by itself.
          - With V(false) this module creates the deployments (see the description).
        type: bool
        default: true
      variables:
        description:
          - Stage variables, exactly (variables not listed are removed). Names of letters, digits and
            C(_) (at most 64), values of letters, digits and C(-._~:/?#&=,) (at most 512).
        type: dict
        default: {}
notes:
  - Supports check mode and diff mode. In check mode only read calls are made (C(GetApis),
    C(GetIntegrations), C(GetRoutes), C(GetAuthorizers), C(GetStages)); the actions and the diff are
    those the run would make, and the ids of what would be created are null.
  - A run where nothing differs makes no write call and reports C(changed=false).
  - The diff shows the managed configuration (API settings, tags, integrations by function, routes by
    key, authorizers by name, the stage). There is no secret in it.
  - API Gateway needs permission to invoke the functions. This module does not grant it; use
    M(amazon.aws.lambda_policy) with principal C(apigateway.amazonaws.com) and source ARN
    C(arn:aws:execute-api:<region>:<account>:<api_id>/*).
  - Calls are retried with jittered backoff when throttled. A write that fails fails the task naming
    the call and the resource; what was written before stays, and the next run completes the rest.
  - "Local emulator (moto, O(endpoint_url)): moto has no C(GetAuthorizers), C(UpdateStage) or
    C(CreateDeployment). The module then finds authorizers through the routes that use them,
    replaces a stage that must change (delete and create, with a warning), and fails when a
    deployment is needed (O(stage.auto_deploy=false)). moto reports the API endpoint as
    C(https://<api_id>.execute-api.<region>.amazonaws.com) where AWS reports C(wss://...)."
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.tags
  - amazon.aws.boto3
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Returns the managed configuration before and after the task (or as it would be after it).
    support: full
"""

EXAMPLES = r"""
- name: Tenantforge's WebSocket API with a token authorizer on $connect
  tenantforge.platform.apigateway_websocket:
    name: tenantforge-dev-ws
    description: Task status events
    integrations:
      - name: websocket
        function_arn: arn:aws:lambda:eu-west-1:123456789012:function:tenantforge-dev-websocket-api
    routes:
      - route_key: $connect
        integration: websocket
        authorization: CUSTOM
      - route_key: $disconnect
        integration: websocket
      - route_key: subscribe
        integration: websocket
    authorizer:
      name: token
      function_arn: arn:aws:lambda:eu-west-1:123456789012:function:tenantforge-dev-authorizer
      identity_sources:
        - route.request.querystring.token
    stage:
      name: dev
      variables:
        environment: dev
    tags:
      tenantforge:environment: dev
  register: websocket_api

- name: Let API Gateway invoke the function
  amazon.aws.lambda_policy:
    function_name: tenantforge-dev-websocket-api
    statement_id: apigateway-websocket
    action: lambda:InvokeFunction
    principal: apigateway.amazonaws.com
    source_arn: "arn:aws:execute-api:eu-west-1:123456789012:{{ websocket_api.api_id }}/*"

- name: The notifier posts to connections through the management endpoint
  ansible.builtin.debug:
    msg: "clients connect to {{ websocket_api.stage_url }}, callbacks go to {{ websocket_api.management_endpoint }}"

- name: Explicit deployments, and a route added by another task kept
  tenantforge.platform.apigateway_websocket:
    name: tenantforge-dev-ws
    routes:
      - route_key: $default
        function_arn: arn:aws:lambda:eu-west-1:123456789012:function:tenantforge-dev-websocket-api
    purge_routes: false
    stage:
      name: dev
      auto_deploy: false

- name: Delete the API
  tenantforge.platform.apigateway_websocket:
    name: tenantforge-dev-ws
    state: absent
"""

RETURN = r"""
api_id:
  description: Id of the API; null when it does not exist (after O(state=absent), or in check mode before it is created).
  returned: always
  type: str
  sample: a1b2c3d4e5
api_endpoint:
  description:
    - The API's endpoint as API Gateway reports it (C(ApiEndpoint)), without a stage.
    - AWS reports C(wss://<api_id>.execute-api.<region>.amazonaws.com); moto reports the C(https://) form.
    - Null when the API does not exist.
  returned: always
  type: str
  sample: wss://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com
stage_url:
  description: The C(wss://) URL clients connect to, C(wss://<host of api_endpoint>/<stage>). Null without O(stage) or API.
  returned: always
  type: str
  sample: wss://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/dev
management_endpoint:
  description:
    - The callback URL of the stage's connections (the C(endpoint_url) of an C(apigatewaymanagementapi)
      client, to post to C(@connections/<connection_id>)), C(https://<host of api_endpoint>/<stage>).
    - With an emulator (O(endpoint_url)) this is built the same way from what the emulator reports, and
      moto reports the AWS host name, which does not resolve. moto answers the management API at its own
      address, without the stage (C(<endpoint_url>/@connections/<connection_id>)), so a client there
      uses O(endpoint_url) itself as its endpoint.
    - Null without O(stage) or API.
  returned: always
  type: str
  sample: https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/dev
integration_ids:
  description:
    - Ids of the API's integrations after the task, by Lambda function ARN (by C(integration <id>) for
      integrations that are not Lambda proxy integrations). Null for one that would be created in check mode.
  returned: always
  type: dict
  sample: {"arn:aws:lambda:eu-west-1:123456789012:function:tenantforge-dev-websocket-api": "k9l8m7n"}
route_ids:
  description: dict[str, str | None] of the API's routes after the task, by route key. Null for one that would be created in check mode.
  returned: always
  type: dict
  sample: {"$connect": "r1s2t3u", "$disconnect": "v4w5x6y", "subscribe": "z7a8b9c"}
authorizer_id:
  description: Id of O(authorizer); null without it (or in check mode before it is created).
  returned: always
  type: str
  sample: q1w2e3
deployment_id:
  description: Id of the deployment this task created; null when it created none.
  returned: always
  type: str
  sample: d3p1oy
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["created API tenantforge-dev-ws", "created route $connect", "created stage dev"]
"""

import re
from dataclasses import dataclass, field
from typing import Any

try:  # noqa: SIM105 - the amazon.aws pattern: AnsibleAWSModule reports a missing botocore
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags

from ansible_collections.tenantforge.platform.plugins.module_utils.secretsmanager import (
    api_name,
    aws_error_text,
)

CONNECT = "$connect"
PREDEFINED_ROUTE_KEYS = (CONNECT, "$disconnect", "$default")
CUSTOM_ROUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
ROUTE_SELECTION_EXPRESSION = re.compile(r"^\$request\.body\.[A-Za-z0-9_][A-Za-z0-9_.-]*$")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
STAGE_VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
STAGE_VARIABLE_VALUE = re.compile(r"^[A-Za-z0-9\-._~:/?#&=,]{1,512}$")
IDENTITY_SOURCE = re.compile(
    r"^(route\.request\.(header|querystring)\.[A-Za-z0-9!#$%&'*+.^_`|~-]+"
    r"|stageVariables\.[A-Za-z0-9_]+|context\.[A-Za-z0-9_.]+)$"
)
LAMBDA_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z]{2}(-[a-z]+)+-\d+):\d{12}:"
    r"function:[A-Za-z0-9_-]{1,64}(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
INVOCATION_URI = re.compile(
    r"^arn:aws[a-z-]*:apigateway:[a-z0-9-]+:lambda:path/2015-03-31/functions/(?P<function>[^/]+)/invocations$"
)
DEFAULT_TIMEOUT = 29000


class WebSocketApiError(Exception):
    """Fails the task; the message names the option or the AWS call and resource."""


class NotImplementedByEndpoint(WebSocketApiError):
    """The endpoint (an emulator) answered an operation it does not implement with a bare HTTP error."""


# ------------------------------------------------------------------------------ the desired state


@dataclass(frozen=True)
class RouteSpec:
    key: str
    function_arn: str
    authorizer: str | None  # the authorizer's name when authorization is CUSTOM

    def view(self) -> dict:
        return route_view(self.function_arn, "CUSTOM" if self.authorizer else "NONE", self.authorizer)


@dataclass(frozen=True)
class AuthorizerSpec:
    name: str
    function_arn: str
    identity_sources: tuple[str, ...]

    def view(self) -> dict:
        return {
            "type": "REQUEST",
            "function_arn": self.function_arn,
            "identity_sources": list(self.identity_sources),
        }


@dataclass(frozen=True)
class StageSpec:
    name: str
    auto_deploy: bool
    variables: dict[str, str]

    def view(self) -> dict:
        return {"name": self.name, "auto_deploy": self.auto_deploy, "variables": dict(self.variables)}


@dataclass
class Desired:
    name: str
    description: str | None
    route_selection_expression: str
    tags: dict[str, str] | None
    purge_tags: bool
    purge_routes: bool
    integrations: dict[str, int]  # timeout by function ARN: the listed ones and those routes name
    routes: dict[str, RouteSpec]
    authorizer: AuthorizerSpec | None
    stage: StageSpec | None


def route_view(integration: str | None, authorization: str, authorizer: str | None) -> dict:
    view: dict[str, Any] = {"integration": integration, "authorization": authorization}
    if authorization == "CUSTOM":
        view["authorizer"] = authorizer
    return view


def function_of(value: str) -> str | None:
    """The Lambda function ARN of an ARN or of an API Gateway invocation URI; None if neither."""
    uri = INVOCATION_URI.match(value)
    if uri:
        value = uri.group("function")
    return value if LAMBDA_ARN.match(value) else None


def invocation_uri(function_arn: str) -> str:
    arn = LAMBDA_ARN.match(function_arn)
    if arn is None:
        raise ValueError(f"not a Lambda function ARN: {function_arn}")
    partition, region = arn.group("partition"), arn.group("region")
    return f"arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"


def checked_function(value: str, option: str) -> str:
    function_arn = function_of(value)
    if function_arn is None:
        raise WebSocketApiError(
            f"{option}: {value!r} is not a Lambda function ARN "
            "(arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]) or its API Gateway invocation URI"
        )
    return function_arn


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 128:
        raise WebSocketApiError(f"name: {name!r} must be 1 to 128 characters long")
    return name


def desired_state(params: dict) -> Desired:
    """The task's options, checked; raises WebSocketApiError naming the first bad option."""
    name = check_name(params["name"])
    expression = params["route_selection_expression"]
    if not ROUTE_SELECTION_EXPRESSION.match(expression):
        raise WebSocketApiError(
            f"route_selection_expression: {expression!r} is not $request.body.<field> "
            "(WebSocket APIs select routes by a field of the message body)"
        )

    named: dict[str, str] = {}
    timeouts: dict[str, int] = {}
    for index, entry in enumerate(params["integrations"] or []):
        option = f"integrations[{index}]"
        if entry["name"] in named:
            raise WebSocketApiError(f"{option}.name: {entry['name']!r} is listed twice")
        function_arn = checked_function(entry["function_arn"], f"{option}.function_arn")
        if function_arn in timeouts:
            raise WebSocketApiError(
                f"{option}.function_arn: {function_arn} already has an integration (one integration per function)"
            )
        timeout = entry["timeout_in_millis"]
        if not 50 <= timeout <= 29000:
            raise WebSocketApiError(f"{option}.timeout_in_millis: {timeout} is not between 50 and 29000")
        named[entry["name"]] = function_arn
        timeouts[function_arn] = timeout

    authorizer = None
    if params["authorizer"] is not None:
        authorizer = desired_authorizer(params["authorizer"])

    routes: dict[str, RouteSpec] = {}
    for index, entry in enumerate(params["routes"] or []):
        option = f"routes[{index}]"
        key = entry["route_key"]
        if key not in PREDEFINED_ROUTE_KEYS and not CUSTOM_ROUTE_KEY.match(key):
            raise WebSocketApiError(
                f"{option}.route_key: {key!r} is not $connect, $disconnect, $default or a custom route key of "
                "letters, digits, _ . : and - (at most 128 characters, not starting with . : or -)"
            )
        if key in routes:
            raise WebSocketApiError(f"{option}.route_key: {key} is listed twice")
        if entry["integration"] is not None:
            if entry["integration"] not in named:
                known = ", ".join(sorted(named)) or "none"
                raise WebSocketApiError(
                    f"{option}.integration: no entry of integrations is named {entry['integration']!r} (known: {known})"
                )
            function_arn = named[entry["integration"]]
        else:
            function_arn = checked_function(entry["function_arn"], f"{option}.function_arn")
            timeouts.setdefault(function_arn, DEFAULT_TIMEOUT)
        if entry["authorization"] == "CUSTOM":
            if authorizer is None:
                raise WebSocketApiError(f"{option}.authorization: CUSTOM needs the authorizer option")
            if key != CONNECT:
                raise WebSocketApiError(
                    f"{option}.authorization: CUSTOM on {key}: WebSocket APIs only run authorizers on $connect"
                )
        custom = authorizer is not None and entry["authorization"] == "CUSTOM"
        routes[key] = RouteSpec(key, function_arn, authorizer.name if authorizer and custom else None)

    if authorizer is not None and not any(route.authorizer for route in routes.values()):
        raise WebSocketApiError(
            "authorizer: no route uses it; set authorization: CUSTOM on the $connect route (or drop the authorizer)"
        )

    stage = desired_stage(params["stage"]) if params["stage"] is not None else None
    tags = params["tags"]
    return Desired(
        name=name,
        description=params["description"],
        route_selection_expression=expression,
        tags={str(key): str(value) for key, value in tags.items()} if tags is not None else None,
        purge_tags=params["purge_tags"],
        purge_routes=params["purge_routes"],
        integrations=timeouts,
        routes=routes,
        authorizer=authorizer,
        stage=stage,
    )


def desired_authorizer(options: dict) -> AuthorizerSpec:
    name = options["name"]
    if not 1 <= len(name) <= 128:
        raise WebSocketApiError(f"authorizer.name: {name!r} must be 1 to 128 characters long")
    function_arn = checked_function(options["function_arn"], "authorizer.function_arn")
    sources = options["identity_sources"] or []
    if not sources:
        raise WebSocketApiError("authorizer.identity_sources: at least one identity source is needed")
    for index, source in enumerate(sources):
        if not IDENTITY_SOURCE.match(source):
            raise WebSocketApiError(
                f"authorizer.identity_sources[{index}]: {source!r} is not route.request.header.<name>, "
                "route.request.querystring.<name>, stageVariables.<name> or context.<name>"
            )
    if len(set(sources)) != len(sources):
        raise WebSocketApiError("authorizer.identity_sources: an identity source is listed twice")
    return AuthorizerSpec(name, function_arn, tuple(sources))


def desired_stage(options: dict) -> StageSpec:
    name = options["name"]
    if not STAGE_NAME.match(name):
        raise WebSocketApiError(
            f"stage.name: {name!r} may only hold letters, digits, - and _ (1 to 128 characters)"
        )
    variables: dict[str, str] = {}
    for key, value in (options["variables"] or {}).items():
        if not STAGE_VARIABLE_NAME.match(str(key)):
            raise WebSocketApiError(
                f"stage.variables: the name {key!r} may only hold letters, digits and _ (1 to 64 characters)"
            )
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not STAGE_VARIABLE_VALUE.match(text):
            raise WebSocketApiError(
                f"stage.variables.{key}: the value may only hold letters, digits and -._~:/?#&=, (1 to 512 characters)"
            )
        variables[str(key)] = text
    return StageSpec(name, options["auto_deploy"], variables)


# ---------------------------------------------------------------------------- the current state


@dataclass
class Ids:
    """Id by key of the integrations, routes and authorizers; None for what check mode would create."""

    integrations: dict[str, str | None]
    routes: dict[str, str | None]
    authorizers: dict[str, str | None]


@dataclass
class Remote:
    """The API as read from API Gateway (raw items), and the stage of the task if it exists."""

    api: dict | None = None
    integrations: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    authorizers: list[dict] = field(default_factory=list)
    stage: dict | None = None

    def integration_keys(self) -> dict[str, str]:
        """Integration id -> key: the function ARN of a Lambda proxy integration (the first one by id
        when several invoke one function), else ``integration <id>``."""
        keys: dict[str, str] = {}
        taken: set[str] = set()
        for item in sorted(self.integrations, key=lambda item: item["IntegrationId"]):
            function_arn = (
                function_of(item.get("IntegrationUri") or "")
                if item.get("IntegrationType") == "AWS_PROXY"
                else None
            )
            key = (
                function_arn
                if function_arn and function_arn not in taken
                else f"integration {item['IntegrationId']}"
            )
            taken.add(key)
            keys[item["IntegrationId"]] = key
        return keys

    def authorizer_names(self) -> dict[str, str]:
        """Authorizer id -> name (``authorizer <id>`` for a second authorizer of the same name)."""
        names: dict[str, str] = {}
        for item in sorted(self.authorizers, key=lambda item: item["AuthorizerId"]):
            name = item.get("Name") or ""
            names[item["AuthorizerId"]] = (
                name if name and name not in names.values() else f"authorizer {item['AuthorizerId']}"
            )
        return names

    def ids(self) -> Ids:
        return Ids(
            integrations={key: item_id for item_id, key in self.integration_keys().items()},
            routes={item["RouteKey"]: item["RouteId"] for item in self.routes},
            authorizers={name: item_id for item_id, name in self.authorizer_names().items()},
        )

    def view(self, stage_name: str | None) -> dict:
        """The managed configuration, as the diff shows it."""
        if self.api is None:
            return {"state": "absent"}
        keys, names = self.integration_keys(), self.authorizer_names()
        integrations: dict[str, dict] = {}
        for item in self.integrations:
            key = keys[item["IntegrationId"]]
            if key.startswith("integration "):
                integrations[key] = {"type": item.get("IntegrationType"), "uri": item.get("IntegrationUri")}
            else:
                integrations[key] = {"timeout_in_millis": item.get("TimeoutInMillis")}
        routes = {}
        for item in self.routes:
            target = item.get("Target") or ""
            integration_id = target[len("integrations/") :] if target.startswith("integrations/") else None
            integration = keys.get(
                integration_id or "", f"integration {integration_id}" if integration_id else None
            )
            authorizer_id = item.get("AuthorizerId") or ""
            authorizer = names.get(authorizer_id, f"authorizer {authorizer_id}" if authorizer_id else None)
            routes[item["RouteKey"]] = route_view(
                integration, item.get("AuthorizationType") or "NONE", authorizer
            )
        authorizers = {}
        for item in self.authorizers:
            uri = item.get("AuthorizerUri") or ""
            authorizers[names[item["AuthorizerId"]]] = {
                "type": item.get("AuthorizerType"),
                "function_arn": function_of(uri) or uri,
                "identity_sources": list(item.get("IdentitySource") or []),
            }
        view: dict[str, Any] = {
            "state": "present",
            "name": self.api.get("Name"),
            "description": self.api.get("Description"),
            "route_selection_expression": self.api.get("RouteSelectionExpression"),
            "tags": dict(self.api.get("Tags") or {}),
            "integrations": integrations,
            "routes": routes,
            "authorizers": authorizers,
        }
        if stage_name is not None:
            view["stage"] = (
                {
                    "name": stage_name,
                    "auto_deploy": bool(self.stage.get("AutoDeploy")),
                    "variables": dict(self.stage.get("StageVariables") or {}),
                }
                if self.stage is not None
                else None
            )
        return view


# -------------------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """What differs between the current view and the task, by key (ids are resolved when writing)."""

    before: dict
    after: dict
    create_api: bool = False
    api_update: dict[str, str] = field(default_factory=dict)
    tags_to_set: dict[str, str] = field(default_factory=dict)
    tags_to_unset: list[str] = field(default_factory=list)
    create_authorizer: bool = False
    update_authorizer: bool = False
    create_integrations: list[str] = field(default_factory=list)
    update_integrations: list[str] = field(default_factory=list)
    create_routes: list[str] = field(default_factory=list)
    update_routes: list[str] = field(default_factory=list)
    delete_routes: list[str] = field(default_factory=list)
    delete_integrations: list[str] = field(default_factory=list)
    delete_authorizers: list[str] = field(default_factory=list)
    create_stage: bool = False
    stage_update: dict[str, Any] = field(default_factory=dict)
    deploy: bool = False


def plan_changes(before: dict, desired: Desired, stage_deployed: bool) -> Plan:
    """Compare the current view (``Remote.view``) with the task. Pure: views in, a Plan out."""
    exists = before["state"] == "present"
    current_integrations: dict[str, dict] = before.get("integrations", {})
    current_routes: dict[str, dict] = before.get("routes", {})
    current_authorizers: dict[str, dict] = before.get("authorizers", {})
    plan = Plan(before=before, after={})
    plan.create_api = not exists

    description = before.get("description")
    if desired.description is not None and desired.description != (description or ""):
        if exists:
            plan.api_update["Description"] = desired.description
        description = desired.description
    if exists and before["route_selection_expression"] != desired.route_selection_expression:
        plan.api_update["RouteSelectionExpression"] = desired.route_selection_expression
    tags = dict(before.get("tags", {}))
    if desired.tags is not None:
        if exists:
            plan.tags_to_set, plan.tags_to_unset = compare_aws_tags(tags, desired.tags, desired.purge_tags)
            for key in plan.tags_to_unset:
                tags.pop(key, None)
            tags.update(plan.tags_to_set)
        else:
            tags = dict(desired.tags)

    # Routes: the listed ones, and the others unless purged.
    routes = {key: route.view() for key, route in desired.routes.items()}
    for key, view in current_routes.items():
        if key not in routes:
            if desired.purge_routes:
                plan.delete_routes.append(key)
            else:
                routes[key] = view
    plan.create_routes = [key for key in desired.routes if key not in current_routes]
    plan.update_routes = [
        key for key in desired.routes if key in current_routes and current_routes[key] != routes[key]
    ]

    # Integrations and authorizers: the task's, and those a remaining route uses.
    used_integrations = {view["integration"] for view in routes.values()}
    integrations = {key: {"timeout_in_millis": timeout} for key, timeout in desired.integrations.items()}
    for key, view in current_integrations.items():
        if key not in integrations:
            if key in used_integrations:
                integrations[key] = view
            else:
                plan.delete_integrations.append(key)
    plan.create_integrations = [key for key in desired.integrations if key not in current_integrations]
    plan.update_integrations = [
        key
        for key in desired.integrations
        if key in current_integrations and current_integrations[key] != integrations[key]
    ]

    used_authorizers = {view.get("authorizer") for view in routes.values()} - {None}
    authorizers = {}
    if desired.authorizer is not None:
        name = desired.authorizer.name
        authorizers[name] = desired.authorizer.view()
        plan.create_authorizer = name not in current_authorizers
        plan.update_authorizer = not plan.create_authorizer and current_authorizers[name] != authorizers[name]
    for name, view in current_authorizers.items():
        if name not in authorizers:
            if name in used_authorizers:
                authorizers[name] = view
            else:
                plan.delete_authorizers.append(name)

    plan.after = {
        "state": "present",
        "name": desired.name,
        "description": description,
        "route_selection_expression": desired.route_selection_expression,
        "tags": tags,
        "integrations": integrations,
        "routes": routes,
        "authorizers": authorizers,
    }

    if desired.stage is not None:
        current_stage = before.get("stage")
        plan.after["stage"] = desired.stage.view()
        plan.create_stage = current_stage is None
        if current_stage is not None:
            if current_stage["auto_deploy"] != desired.stage.auto_deploy:
                plan.stage_update["AutoDeploy"] = desired.stage.auto_deploy
            if current_stage["variables"] != desired.stage.variables:
                # UpdateStage merges variables: one is removed by setting it to "".
                removed = {
                    key: "" for key in current_stage["variables"] if key not in desired.stage.variables
                }
                plan.stage_update["StageVariables"] = {**removed, **desired.stage.variables}
        api_changed = any(
            before.get(part) != plan.after[part] for part in ("integrations", "routes", "authorizers")
        )
        plan.deploy = (
            not desired.stage.auto_deploy
            and bool(routes)
            and (api_changed or plan.create_stage or not stage_deployed)
        )
    return plan


# ----------------------------------------------------------------------------- API Gateway calls


class Gateway:
    """The apigatewayv2 calls: each retried (``aws_retry=True``), AWS errors become WebSocketApiError."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, operation: str, what: str, **kwargs: Any) -> dict:
        try:
            return getattr(self.client, operation)(aws_retry=True, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code.isdigit():
                raise NotImplementedByEndpoint(
                    f"{api_name(operation)} failed for {what}: the endpoint does not implement it (HTTP {code})"
                ) from None
            raise WebSocketApiError(
                f"{api_name(operation)} failed for {what}: {aws_error_text(exc)}"
            ) from None
        except BotoCoreError as exc:
            raise WebSocketApiError(
                f"{api_name(operation)} failed for {what}: {aws_error_text(exc)}"
            ) from None

    def items(self, operation: str, what: str, **kwargs: Any) -> list[dict]:
        """Every page of a Get* list call."""
        items: list[dict] = []
        while True:
            page = self.call(operation, what, **kwargs)
            items.extend(page.get("Items") or [])
            if not page.get("NextToken"):
                return items
            kwargs["NextToken"] = page["NextToken"]

    def api_arn(self, api_id: str | None) -> str:
        return f"arn:{self.client.meta.partition}:apigateway:{self.client.meta.region_name}::/apis/{api_id}"

    def find(self, name: str) -> dict | None:
        found = [
            api
            for api in self.items("get_apis", f"API {name}")
            if api.get("Name") == name and api.get("ProtocolType") == "WEBSOCKET"
        ]
        if len(found) > 1:
            ids = ", ".join(sorted(api["ApiId"] for api in found))
            raise WebSocketApiError(
                f"name: {len(found)} WebSocket APIs are named {name} ({ids}); delete all but one"
            )
        return found[0] if found else None

    def read(self, name: str, stage_name: str | None) -> Remote:
        api = self.find(name)
        if api is None:
            return Remote()
        api_id, what = api["ApiId"], f"API {name}"
        routes = self.items("get_routes", what, ApiId=api_id)
        stages = self.items("get_stages", what, ApiId=api_id)
        return Remote(
            api=api,
            integrations=self.items("get_integrations", what, ApiId=api_id),
            routes=routes,
            authorizers=self.authorizers(api_id, what, routes),
            stage=next((stage for stage in stages if stage.get("StageName") == stage_name), None),
        )

    def authorizers(self, api_id: str, what: str, routes: list[dict]) -> list[dict]:
        try:
            return self.items("get_authorizers", what, ApiId=api_id)
        except NotImplementedByEndpoint:
            pass
        # moto has no GetAuthorizers: the authorizers the routes use are all it can find.
        found = []
        used = {
            route.get("AuthorizerId") or "" for route in routes if route.get("AuthorizationType") == "CUSTOM"
        }
        for authorizer_id in sorted(used - {""}):
            try:
                found.append(
                    self.client.get_authorizer(aws_retry=True, ApiId=api_id, AuthorizerId=authorizer_id)
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NotFoundException":
                    raise WebSocketApiError(
                        f"GetAuthorizer failed for {what}: {aws_error_text(exc)}"
                    ) from None
        return [{key: value for key, value in item.items() if key != "ResponseMetadata"} for item in found]


# ------------------------------------------------------------------------------------- the run


class Run:
    """Carries out a Plan in dependency order: what routes need first, what they stop using last."""

    def __init__(self, gateway: Gateway, check_mode: bool) -> None:
        self.gateway = gateway
        self.check_mode = check_mode
        self.actions: list[str] = []
        self.warnings: list[str] = []

    def did(self, action: str) -> None:
        self.actions.append(action)

    def write(self, operation: str, what: str, **kwargs: Any) -> dict:
        """A write call, or nothing in check mode."""
        if self.check_mode:
            return {}
        return self.gateway.call(operation, what, **kwargs)

    def absent(self, name: str, stage_name: str | None) -> dict:
        remote = self.gateway.read(name, stage_name)
        before = remote.view(stage_name)
        if remote.api is not None:
            api_id = remote.api["ApiId"]
            self.write("delete_api", f"API {name} ({api_id})", ApiId=api_id)
            self.did(f"deleted API {name} ({api_id})")
        return {
            "changed": bool(self.actions),
            **self.summary(None, None, {}, {}, None),
            "diff": {"before": before, "after": {"state": "absent"}},
        }

    def present(self, desired: Desired) -> dict:
        stage_name = desired.stage.name if desired.stage else None
        remote = self.gateway.read(desired.name, stage_name)
        stage_deployed = bool(remote.stage and remote.stage.get("DeploymentId"))
        plan = plan_changes(remote.view(stage_name), desired, stage_deployed)
        ids = remote.ids()

        api = self.api(remote.api, desired, plan)
        api_id = api["ApiId"] if api else None
        self.authorizer(api_id, desired.authorizer, plan, ids)
        self.integrations(api_id, desired, plan, ids)
        self.routes(api_id, desired, plan, ids)
        self.prune(api_id, plan, ids)
        deployment_id = self.stage(api_id, desired.stage, plan) if desired.stage else None
        authorizer_id = ids.authorizers.get(desired.authorizer.name) if desired.authorizer else None
        return {
            "changed": bool(self.actions),
            **self.summary(api, stage_name, ids.integrations, ids.routes, authorizer_id),
            "deployment_id": deployment_id,
            "diff": {"before": plan.before, "after": plan.after},
        }

    def api(self, api: dict | None, desired: Desired, plan: Plan) -> dict | None:
        """The API itself, its settings and tags; returns it (None when check mode would create it)."""
        what = f"API {desired.name}"
        if plan.create_api:
            kwargs: dict[str, Any] = {
                "Name": desired.name,
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": desired.route_selection_expression,
            }
            if desired.description is not None:
                kwargs["Description"] = desired.description
            if desired.tags:
                kwargs["Tags"] = desired.tags
            created = self.write("create_api", what, **kwargs) or None
            self.did(f"created API {desired.name}")
            return created
        api_id = api["ApiId"] if api else None
        if plan.api_update:
            self.write("update_api", what, ApiId=api_id, **plan.api_update)
            fields = {"Description": "description", "RouteSelectionExpression": "route selection expression"}
            self.did("updated API " + " and ".join(fields[key] for key in sorted(plan.api_update)))
        if plan.tags_to_unset:
            arn = self.gateway.api_arn(api_id)
            self.write("untag_resource", what, ResourceArn=arn, TagKeys=plan.tags_to_unset)
            self.did("removed tags " + ", ".join(sorted(plan.tags_to_unset)))
        if plan.tags_to_set:
            self.write("tag_resource", what, ResourceArn=self.gateway.api_arn(api_id), Tags=plan.tags_to_set)
            self.did("set tags " + ", ".join(sorted(plan.tags_to_set)))
        return api

    def authorizer(self, api_id: str | None, authorizer: AuthorizerSpec | None, plan: Plan, ids: Ids) -> None:
        if authorizer is None or not (plan.create_authorizer or plan.update_authorizer):
            return
        what = f"authorizer {authorizer.name}"
        kwargs = {
            "AuthorizerType": "REQUEST",
            "Name": authorizer.name,
            "AuthorizerUri": invocation_uri(authorizer.function_arn),
            "IdentitySource": list(authorizer.identity_sources),
        }
        if plan.create_authorizer:
            created = self.write("create_authorizer", what, ApiId=api_id, **kwargs)
            ids.authorizers[authorizer.name] = created.get("AuthorizerId")
            self.did(f"created authorizer {authorizer.name}")
        else:
            authorizer_id = ids.authorizers[authorizer.name]
            self.write("update_authorizer", what, ApiId=api_id, AuthorizerId=authorizer_id, **kwargs)
            self.did(f"updated authorizer {authorizer.name}")

    def integrations(self, api_id: str | None, desired: Desired, plan: Plan, ids: Ids) -> None:
        for function_arn in plan.create_integrations:
            created = self.write(
                "create_integration",
                f"integration of {function_arn}",
                ApiId=api_id,
                IntegrationType="AWS_PROXY",
                IntegrationMethod="POST",
                IntegrationUri=invocation_uri(function_arn),
                TimeoutInMillis=desired.integrations[function_arn],
            )
            ids.integrations[function_arn] = created.get("IntegrationId")
            self.did(f"created integration {function_arn}")
        for function_arn in plan.update_integrations:
            self.write(
                "update_integration",
                f"integration of {function_arn}",
                ApiId=api_id,
                IntegrationId=ids.integrations[function_arn],
                TimeoutInMillis=desired.integrations[function_arn],
            )
            self.did(f"updated integration {function_arn}")

    def routes(self, api_id: str | None, desired: Desired, plan: Plan, ids: Ids) -> None:
        for key in plan.create_routes + plan.update_routes:
            route = desired.routes[key]
            # AuthorizationType goes with every write: NONE is what detaches an authorizer, and AWS
            # refuses an AuthorizerId without it.
            kwargs: dict[str, Any] = {
                "Target": f"integrations/{ids.integrations[route.function_arn]}",
                "AuthorizationType": "CUSTOM" if route.authorizer else "NONE",
            }
            if route.authorizer:
                kwargs["AuthorizerId"] = ids.authorizers[route.authorizer]
            if key in plan.create_routes:
                created = self.write("create_route", f"route {key}", ApiId=api_id, RouteKey=key, **kwargs)
                ids.routes[key] = created.get("RouteId")
                self.did(f"created route {key}")
            else:
                self.write("update_route", f"route {key}", ApiId=api_id, RouteId=ids.routes[key], **kwargs)
                self.did(f"updated route {key}")

    def prune(self, api_id: str | None, plan: Plan, ids: Ids) -> None:
        """Routes first: API Gateway keeps an integration or authorizer that a route still uses."""
        for key in plan.delete_routes:
            self.write("delete_route", f"route {key}", ApiId=api_id, RouteId=ids.routes.pop(key))
            self.did(f"deleted route {key}")
        for key in plan.delete_integrations:
            self.write("delete_integration", key, ApiId=api_id, IntegrationId=ids.integrations.pop(key))
            self.did(f"deleted integration {key}")
        for name in plan.delete_authorizers:
            authorizer_id = ids.authorizers.pop(name)
            self.write("delete_authorizer", f"authorizer {name}", ApiId=api_id, AuthorizerId=authorizer_id)
            self.did(f"deleted authorizer {name}")

    def stage(self, api_id: str | None, stage: StageSpec, plan: Plan) -> str | None:
        what = f"stage {stage.name}"
        create: dict[str, Any] = {"ApiId": api_id, "StageName": stage.name, "AutoDeploy": stage.auto_deploy}
        if stage.variables:
            create["StageVariables"] = stage.variables
        if plan.create_stage:
            self.write("create_stage", what, **create)
            self.did(f"created stage {stage.name}")
        elif plan.stage_update:
            try:
                self.write("update_stage", what, ApiId=api_id, StageName=stage.name, **plan.stage_update)
            except NotImplementedByEndpoint:
                self.warnings.append(
                    f"the endpoint does not implement UpdateStage: stage {stage.name} was deleted and created again"
                )
                self.write("delete_stage", what, ApiId=api_id, StageName=stage.name)
                self.write("create_stage", what, **create)
            self.did(f"updated stage {stage.name}")
        if not plan.deploy:
            return None
        try:
            deployed = self.write(
                "create_deployment",
                what,
                ApiId=api_id,
                StageName=stage.name,
                Description="tenantforge.platform.apigateway_websocket",
            )
        except NotImplementedByEndpoint as exc:
            raise WebSocketApiError(f"{exc}; use stage.auto_deploy: true with this endpoint") from None
        self.did(f"deployed stage {stage.name}")
        return deployed.get("DeploymentId")

    def summary(
        self,
        api: dict | None,
        stage_name: str | None,
        integration_ids: dict[str, str | None],
        route_ids: dict[str, str | None],
        authorizer_id: str | None,
    ) -> dict:
        endpoint = api.get("ApiEndpoint") if api else None
        host = endpoint.split("://", 1)[-1].rstrip("/") if endpoint else None
        return {
            "api_id": api["ApiId"] if api else None,
            "api_endpoint": endpoint,
            "stage_url": f"wss://{host}/{stage_name}" if host and stage_name else None,
            "management_endpoint": f"https://{host}/{stage_name}" if host and stage_name else None,
            "integration_ids": dict(sorted(integration_ids.items())),
            "route_ids": dict(sorted(route_ids.items())),
            "authorizer_id": authorizer_id,
            "deployment_id": None,
        }


def ensure(gateway: Gateway, params: dict, check_mode: bool) -> dict:
    """The module's work. Every option is checked before the first call; raises WebSocketApiError.

    Returns changed, actions, warnings, diff and the ids and endpoints of RETURN.
    """
    run = Run(gateway, check_mode)
    if params["state"] == "absent":
        name = check_name(params["name"])
        stage_name = desired_stage(params["stage"]).name if params["stage"] is not None else None
        result = run.absent(name, stage_name)
    else:
        result = run.present(desired_state(params))
    result.update(actions=run.actions, warnings=run.warnings)
    return result


def argument_spec() -> dict:
    integration = {
        "name": {"type": "str", "required": True},
        "function_arn": {"type": "str", "required": True},
        "timeout_in_millis": {"type": "int", "default": DEFAULT_TIMEOUT},
    }
    route = {
        "route_key": {"type": "str", "required": True, "no_log": False},
        "integration": {"type": "str"},
        "function_arn": {"type": "str"},
        "authorization": {"type": "str", "choices": ["NONE", "CUSTOM"], "default": "NONE"},
    }
    authorizer = {
        "name": {"type": "str", "required": True},
        "function_arn": {"type": "str", "required": True},
        "identity_sources": {
            "type": "list",
            "elements": "str",
            "default": ["route.request.querystring.token"],
        },
    }
    stage = {
        "name": {"type": "str", "required": True},
        "auto_deploy": {"type": "bool", "default": True},
        "variables": {"type": "dict", "default": {}},
    }
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "description": {"type": "str"},
        "route_selection_expression": {"type": "str", "default": "$request.body.action"},
        "integrations": {"type": "list", "elements": "dict", "options": integration, "default": []},
        "routes": {
            "type": "list",
            "elements": "dict",
            "options": route,
            "default": [],
            "mutually_exclusive": [("integration", "function_arn")],
            "required_one_of": [("integration", "function_arn")],
        },
        "purge_routes": {"type": "bool", "default": True},
        "authorizer": {"type": "dict", "options": authorizer},
        "stage": {"type": "dict", "options": stage},
        "tags": {"type": "dict", "aliases": ["resource_tags"]},
        "purge_tags": {"type": "bool", "default": True},
    }


def main() -> None:
    module = AnsibleAWSModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        gateway = Gateway(module.client("apigatewayv2", retry_decorator=AWSRetry.jittered_backoff()))
        result = ensure(gateway, module.params, module.check_mode)
    except WebSocketApiError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
