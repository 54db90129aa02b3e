# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The timings benchmarks/tenants.py reads from its playbook runs, taken beside the default stdout
callback: the json stdout callback would time its own dump of the module's whole result as well."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: tenants_benchmark
type: aggregate
short_description: Task timings and tenant_bootstrap's changed organizations, for benchmarks/tenants.py
description:
  - Writes, when the playbook ends, a JSON file (environment variable TENANTS_BENCHMARK_OUTPUT) with
    time.monotonic() at the first play's start and at the recap, each task's seconds from its start
    to its last result, the recap of localhost, and the number of organizations the
    tenantforge.platform.tenant_bootstrap results report changed.
"""

MODULE = "tenantforge.platform.tenant_bootstrap"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "tenants_benchmark"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.play_started: float | None = None
        self.tasks: list[dict[str, Any]] = []
        self.changed_organizations: int | None = None

    def v2_playbook_on_play_start(self, play: Any) -> None:
        if self.play_started is None:
            self.play_started = time.monotonic()

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.tasks.append(
            {"name": task.get_name(), "action": task.action, "started": time.monotonic(), "ended": None}
        )

    def _result(self, result: Any, *_args: Any, **_kwargs: Any) -> None:
        if not self.tasks:
            return
        task = self.tasks[-1]
        task["ended"] = time.monotonic()
        payload = getattr(result, "result", None)
        if payload is None:
            payload = result._result  # ansible-core before 2.19
        if task["action"] == MODULE and isinstance(payload.get("tenants"), list):
            self.changed_organizations = sum(bool(item.get("changed")) for item in payload["tenants"])

    v2_runner_on_ok = _result
    v2_runner_on_failed = _result
    v2_runner_on_skipped = _result
    v2_runner_on_unreachable = _result

    def v2_playbook_on_stats(self, stats: Any) -> None:
        output = os.environ.get("TENANTS_BENCHMARK_OUTPUT")
        if not output:
            return
        document = {
            "play_started": self.play_started,
            "stats": time.monotonic(),
            "tasks": [
                {"name": task["name"], "action": task["action"], "seconds": task["ended"] - task["started"]}
                for task in self.tasks
                if task["ended"] is not None
            ],
            "recap": stats.summarize("localhost"),
            "changed_organizations": self.changed_organizations,
        }
        with open(output, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
