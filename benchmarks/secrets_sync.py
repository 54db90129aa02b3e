"""Time tenantforge.platform.secrets_sync on many secrets, cold and warm, and count its API calls.

One private moto server (recording on, from ``infrastructure.py``), N secrets under one prefix, the
directory target in a temporary directory. Measured, each with the wall time and moto's recorded
calls per operation:

1. ``ansible-playbook`` with one secrets_sync task: the cold run (empty directory), the warm run(s)
   (nothing changed: no GetSecretValue expected), and a run after one secret got a new value;
2. the module's core function (``secrets_sync.sync``) in this process, cold and warm, without
   Ansible's process start and module transfer.

Nothing is asserted; a warm run that reads a value or reports a change prints a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure import ACCESS_KEY, BIN, REGION, REPO, SECRET_KEY, Call, Emulator, table, versions

PREFIX = "bench/"
NAMESPACE = "bench"


@dataclass
class Measurement:
    name: str
    seconds: float
    calls: list[Call]
    changed: bool | None
    extra: dict[str, Any] = field(default_factory=dict)

    def operations(self) -> Counter[str]:
        return Counter(call.label for call in self.calls if call.service == "secretsmanager")


def create_secrets(emulator: Emulator, count: int) -> Any:
    import boto3

    client = boto3.client(
        "secretsmanager",
        endpoint_url=emulator.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    for index in range(count):
        value = {"username": f"user{index}", "password": secrets.token_urlsafe(24)}
        client.create_secret(Name=f"{PREFIX}service-{index:04d}/db", SecretString=json.dumps(value))
    return client


def playbook_runner(emulator: Emulator, workdir: Path, timeout: float) -> Callable[[str], Measurement]:
    task_args = {
        "endpoint_url": emulator.endpoint_url,
        "region": REGION,
        "name_prefix": PREFIX,
        "namespace": NAMESPACE,
        "target": "directory",
        "directory": str(workdir / "playbook-target"),
    }
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {"name": "Sync secrets", "tenantforge.platform.secrets_sync": task_args, "register": "synced"}
        ],
    }
    playbook = workdir / "sync.yml"
    playbook.write_text(json.dumps([play], indent=2))  # JSON is YAML
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_NOCOLOR": "1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]

    def run(name: str) -> Measurement:
        print(f"{name}: ansible-playbook ...", end=" ", flush=True)
        with emulator.recording() as calls:
            started = time.perf_counter()
            completed = subprocess.run(
                command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
            seconds = time.perf_counter() - started
        try:
            result = json.loads(completed.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            print(completed.stdout[-3000:] + completed.stderr[-3000:], file=sys.stderr)
            raise RuntimeError(
                f"{name}: ansible-playbook failed with exit code {completed.returncode}"
            ) from None
        if result.get("failed"):
            raise RuntimeError(f"{name}: the task failed: {result.get('msg')}")
        actions = Counter(entry["action"] for entry in result["secrets"])
        print(f"{seconds:.1f}s, {len(calls)} API calls", flush=True)
        return Measurement(name, seconds, calls, bool(result["changed"]), {"actions": dict(actions)})

    return run


def core_runner(emulator: Emulator, workdir: Path) -> Callable[[str], Measurement]:
    """The module's sync() in this process, with the client main() would build."""
    sys.path.insert(0, str(REPO / ".local" / "collections"))
    import boto3
    from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper

    from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync_targets import (
        DirectoryTarget,
    )
    from ansible_collections.tenantforge.platform.plugins.modules import secrets_sync

    defaults = {name: spec.get("default") for name, spec in secrets_sync.argument_spec().items()}
    params = {
        **defaults,
        "name_prefix": PREFIX,
        "namespace": NAMESPACE,
        "target": "directory",
        "directory": str(workdir / "core-target"),
    }

    def run(name: str) -> Measurement:
        print(f"{name}: secrets_sync.sync() in-process ...", end=" ", flush=True)
        with emulator.recording() as calls:
            started = time.perf_counter()
            client = boto3.client(
                "secretsmanager",
                endpoint_url=emulator.endpoint_url,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
            )
            source = secrets_sync.SecretsManagerSource(
                RetryingBotoClientWrapper(client, secrets_sync.retry_decorator())
            )
            result = secrets_sync.sync(source, DirectoryTarget(params["directory"]), params, check_mode=False)
            seconds = time.perf_counter() - started
        actions = Counter(entry["action"] for entry in result["secrets"])
        print(f"{seconds:.2f}s, {len(calls)} API calls", flush=True)
        return Measurement(name, seconds, calls, bool(result["changed"]), {"actions": dict(actions)})

    return run


OPERATIONS = ("ListSecrets", "DescribeSecret", "GetSecretValue")


def report(measurements: Sequence[Measurement], count: int) -> dict[str, Any]:
    v = versions()
    print(
        f"\nsecrets_sync, {count} secrets, directory target, private moto {v['moto']} server; "
        f"ansible-core {v['ansible-core']}, Python {sys.version.split()[0]}\n"
    )
    rows = []
    data: dict[str, Any] = {"secrets": count, "versions": v, "runs": []}
    for m in measurements:
        ops = m.operations()
        other = len(m.calls) - sum(ops[op] for op in OPERATIONS)
        actions = ", ".join(f"{n} {a}" for a, n in sorted(m.extra.get("actions", {}).items()))
        rows.append(
            [m.name, f"{m.seconds:.2f}", len(m.calls), *(ops[op] for op in OPERATIONS), other, actions]
        )
        data["runs"].append(
            {
                "name": m.name,
                "seconds": round(m.seconds, 3),
                "api_calls": len(m.calls),
                "per_operation": dict(sorted(ops.items())),
                "changed": m.changed,
                "actions": m.extra.get("actions", {}),
            }
        )
    headers = ["run", "seconds", "API calls", *OPERATIONS, "other", "actions"]
    print("\n".join(table(headers, rows)))
    for m in measurements:
        if m.name.startswith(("warm", "core warm")):
            if m.operations()["GetSecretValue"]:
                print(f"WARNING: {m.name} read {m.operations()['GetSecretValue']} secret values")
            if m.changed:
                print(f"WARNING: {m.name} reported changes")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--secrets", type=int, default=500, help="secrets to create (default 500)")
    parser.add_argument("--runs", type=int, default=1, help="warm playbook runs (median reported in JSON)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one playbook run may take")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tenantforge-secrets-sync-") as tmp:
        workdir = Path(tmp).resolve()
        emulator = Emulator(workdir)
        try:
            with emulator.running():
                started = time.perf_counter()
                client = create_secrets(emulator, args.secrets)
                print(f"created {args.secrets} secrets in {time.perf_counter() - started:.1f}s", flush=True)

                playbook = playbook_runner(emulator, workdir, args.timeout)
                measurements = [playbook("cold (playbook)")]
                warm = [playbook(f"warm {i} (playbook)") for i in range(1, args.runs + 1)]
                measurements += warm
                client.put_secret_value(
                    SecretId=f"{PREFIX}service-0000/db",
                    SecretString=json.dumps({"username": "user0", "password": secrets.token_urlsafe(24)}),
                )
                measurements.append(playbook("one rotated (playbook)"))

                core = core_runner(emulator, workdir)
                measurements += [core("core cold (in-process)"), core("core warm (in-process)")]
                data = report(measurements, args.secrets)
                if len(warm) > 1:
                    median = statistics.median(m.seconds for m in warm)
                    print(f"warm playbook runs: median {median:.2f}s of {len(warm)}")
        except Exception as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            return 1
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
