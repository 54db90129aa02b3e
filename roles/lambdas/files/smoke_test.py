"""The smoke test at the end of ``make run``: one task from an HTTP request to a worker and back.

Each step calls a deployed function's own entry point, ``handler(event, context)``, in this process
(the emulator cannot invoke a Lambda without Docker), with the environment the function is deployed
with, against the running services: a token for the demo user (the token function's issuer), the
authorizer on the REST API's method ARN and on the WebSocket API's ``$connect``, the WebSocket routes
(``$connect``, then ``subscribe`` to all the organization's tasks), ``POST /api/tasks`` through the
orchestrator (the row and the confirmed publish to RabbitMQ), then the worker process consuming it
from the cluster and the notifier posting the status events to the Management API, whose local
stand-in records them. Prints one JSON document: each step, what it saw, and the task's final
status. Exit status 0 when the task reached ``succeeded`` and the connection received its events.

    python smoke_test.py --lambdas DIR --org acme --email ada@acme.example \
        --rest-api-arn ARN --websocket-api-arn ARN --record posts.jsonl [--timeout 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any


def load(lambdas: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"smoke_{name}", lambdas / name / "handler.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(lambdas / name / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Failed(Exception):
    pass


class Smoke:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, ok: bool, **seen: Any) -> None:
        self.steps.append({"step": name, "ok": ok, **seen})
        if not ok:
            raise Failed(name)

    def run(self) -> dict[str, Any]:
        args = self.args
        sys.path.insert(0, str(args.lambdas))
        from tenantforge_lambda import issuing

        authorizer = load(args.lambdas, "authorizer")
        orchestrator = load(args.lambdas, "orchestrator")
        websocket = load(args.lambdas, "websocket_api")

        issued = issuing.from_env().issue(args.org, args.email)
        token = issued.token
        self.step("issue a token", True, org=args.org, email=args.email, expires_at=issued.expires_at)

        rest_arn = f"{args.rest_api_arn}/{args.stage}/POST/api/tasks"
        policy = authorizer.handler(
            {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": rest_arn}, None
        )
        effect = policy["policyDocument"]["Statement"][0]["Effect"]
        context = dict(policy.get("context", {}))
        self.step("authorizer (REST API)", effect == "Allow", effect=effect, org_slug=context.get("org_slug"))

        connection_id = f"smoke-{uuid.uuid4().hex[:16]}="
        ws_arn = f"{args.websocket_api_arn}/{args.stage}/$connect"
        ws_policy = authorizer.handler(
            {
                "type": "REQUEST",
                "methodArn": ws_arn,
                "queryStringParameters": {"token": token},
                "requestContext": {
                    "routeKey": "$connect",
                    "eventType": "CONNECT",
                    "connectionId": connection_id,
                },
            },
            None,
        )
        ws_context = dict(ws_policy.get("context", {}))
        ws_effect = ws_policy["policyDocument"]["Statement"][0]["Effect"]
        self.step("authorizer (WebSocket $connect)", ws_effect == "Allow", effect=ws_effect)

        def ws(route: str, body: Any = None, query: dict[str, str] | None = None) -> int:
            event: dict[str, Any] = {
                "requestContext": {
                    "routeKey": route,
                    "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
                    "connectionId": connection_id,
                    "stage": args.stage,
                    "authorizer": ws_context,
                },
                "isBase64Encoded": False,
            }
            if query is not None:
                event["queryStringParameters"] = query
            if body is not None:
                event["body"] = json.dumps(body)
            return int(websocket.handler(event, None)["statusCode"])

        status = ws("$connect", query={"token": token})
        self.step("WebSocket $connect", status == 200, status=status, connection_id=connection_id)
        status = ws("subscribe", body={"action": "subscribe", "all": True})
        self.step("WebSocket subscribe (all tasks)", status == 200, status=status)

        def api(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
            event = {
                "resource": path,
                "path": path,
                "httpMethod": method,
                "headers": {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                "queryStringParameters": None,
                "body": None if body is None else json.dumps(body),
                "isBase64Encoded": False,
                "requestContext": {
                    "stage": args.stage,
                    "requestId": str(uuid.uuid4()),
                    "authorizer": context,
                },
            }
            answer = orchestrator.handler(event, None)
            return int(answer["statusCode"]), json.loads(answer["body"])

        try:
            message = f"hello from make run {uuid.uuid4().hex[:8]}"
            status, body = api("POST", "/api/tasks", {"type": "echo", "payload": {"message": message}})
            task_id = str(body.get("task_id"))
            self.step("POST /api/tasks (orchestrator)", status == 202, status=status, task_id=task_id)

            deadline = time.monotonic() + args.timeout
            task: dict[str, Any] = {}
            while time.monotonic() < deadline:
                status, task = api("GET", f"/api/tasks/{task_id}")
                if task.get("status") in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            self.step(
                "worker ran the task (GET /api/tasks/{id})",
                task.get("status") == "succeeded",
                status=task.get("status"),
                result=task.get("result"),
            )

            seen: list[str] = []
            while time.monotonic() < deadline and "succeeded" not in seen:
                seen = self.statuses(connection_id, task_id)
                time.sleep(0.2)
            self.step("status events reached the connection", "succeeded" in seen, events=seen)
        finally:
            ws("$disconnect")
        return {"task_id": task_id, "final_status": task.get("status")}

    def statuses(self, connection_id: str, task_id: str) -> list[str]:
        seen: list[str] = []
        if not self.args.record.exists():
            return seen
        for line in self.args.record.read_text().splitlines():
            post = json.loads(line)
            if post["connection_id"] != connection_id:
                continue
            event = json.loads(post["data"])
            if event.get("task_id") == task_id:
                seen.append(event.get("status"))
        return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambdas", type=Path, required=True)
    parser.add_argument("--org", required=True)
    parser.add_argument("--email", required=True)
    parser.add_argument("--rest-api-arn", required=True)
    parser.add_argument("--websocket-api-arn", required=True)
    parser.add_argument("--stage", default="v1")
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    smoke = Smoke(args)
    try:
        outcome: dict[str, Any] = {"ok": True, **smoke.run()}
    except Failed as failed:
        outcome = {"ok": False, "failed_step": str(failed)}
    except Exception as error:  # reported, not raised: the summary names the step it stopped at
        traceback.print_exc()  # code lines and exception, no local values
        outcome = {
            "ok": False,
            "failed_step": f"after {len(smoke.steps)} steps",
            "error": type(error).__name__,
        }
    print(json.dumps({**outcome, "steps": smoke.steps}, indent=2))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
