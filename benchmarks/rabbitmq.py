"""Publish rate with publisher confirms to a quorum queue on the local 3-node RabbitMQ cluster.

Starts a temporary stack of the rabbitmq role's local target (``playbooks/platform.yml``: three
nodes, their own epmd, free ports, everything in a temporary directory) and stops it at the end, also
on error, Ctrl-C or SIGTERM. The stack of ``make run`` is not touched. Measured, each with the same
messages published one at a time over one connection (pika's BlockingConnection):

1. **quorum, 3 nodes, confirms**: the orchestrator's path: the user tenantforge_orchestrator
   publishes persistent messages to the topic exchange ``tasks``, routed to the quorum queue
   ``tasks.echo`` (three members); each publish waits for its confirm, i.e. for a majority of the
   members to have written the message;
2. **quorum, 1 node, confirms**: the same to a quorum queue with a single member (no replication);
3. **classic durable, confirms**: persistent messages to a durable classic queue (one node's disk);
4. **classic transient, no confirms** (the baseline): transient messages to a non-durable classic
   queue, without confirms.

Rates are messages per second; the ratio column divides each rate by the baseline's, measured in the
same run. Nothing is asserted. The extra queues are declared (and deleted) by the administrator.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import secrets
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
from infrastructure import BIN, REPO, free_port, table

PLAYBOOK = "playbooks/platform.yml"
VHOST = "tenantforge"
USERS = {
    "rabbitmq-admin": "tenantforge_admin",
    "rabbitmq-orchestrator": "tenantforge_orchestrator",
    "rabbitmq-worker": "tenantforge_worker",
    "rabbitmq-notifier": "tenantforge_notifier",
}


@dataclass
class Stack:
    workdir: Path
    nodes: list[dict[str, Any]]
    epmd_port: int
    passwords: dict[str, str]
    timeout: float

    def playbook(self, state: str) -> float:
        extra = {
            "tenantforge_platform_components": ["rabbitmq"],
            # inventories/local sets the local target (an extra variable would also override the
            # playbook's render-only pass).
            "tenantforge_platform_local_state": state,
            "rabbitmq_local_nodes": self.nodes,
            "rabbitmq_local_epmd_port": self.epmd_port,
        }
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "TENANTFORGE_STATE_DIR": str(self.workdir),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        print(f"ansible-playbook {PLAYBOOK} ({state}) ...", end=" ", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(
            [str(BIN / "ansible-playbook"), PLAYBOOK, "--extra-vars", json.dumps(extra)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            print(completed.stdout[-4000:] + completed.stderr[-2000:], file=sys.stderr)
            raise RuntimeError(f"the playbook ({state}) failed with exit code {completed.returncode}")
        print(f"{seconds:.1f}s", flush=True)
        return seconds

    def kill_leftovers(self) -> None:
        """SIGKILL whatever a failed stop left behind: only the processes of this stack's pid files."""
        pid_files = [self.workdir / "rabbitmq" / node["name"] / "rabbitmq.pid" for node in self.nodes]
        for pid_file in [*pid_files, self.workdir / "rabbitmq" / "epmd.pid"]:
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)

    def connect(self, user: str, node: int = 0) -> pika.BlockingConnection:
        credentials = pika.PlainCredentials(user, self.passwords[user])
        return pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", self.nodes[node]["amqp_port"], VHOST, credentials)
        )


def write_secrets(workdir: Path) -> dict[str, str]:
    root = workdir / "secrets" / VHOST
    passwords = {}
    values: dict[str, dict[str, str]] = {}
    for secret, user in USERS.items():
        passwords[user] = secrets.token_urlsafe(24)
        values[secret] = {"username": user, "password": passwords[user]}
    alphabet = string.ascii_uppercase + string.digits
    values["rabbitmq-erlang-cookie"] = {"cookie": "".join(secrets.choice(alphabet) for _ in range(48))}
    for secret, keys in values.items():
        (root / secret).mkdir(parents=True, mode=0o700)
        for key, value in keys.items():
            path = root / secret / key
            path.write_text(value)
            path.chmod(0o600)
    return passwords


@contextlib.contextmanager
def running_stack(timeout: float) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="tenantforge-rabbitmq-") as tmp:
        workdir = Path(tmp).resolve()
        ports: list[int] = []
        while len(ports) < 10:
            port = free_port()
            if port not in ports:
                ports.append(port)
        nodes = [
            {
                "name": f"bench-{i + 1}",
                "amqp_port": ports[3 * i],
                "management_port": ports[3 * i + 1],
                "dist_port": ports[3 * i + 2],
            }
            for i in range(3)
        ]
        stack = Stack(workdir, nodes, ports[9], write_secrets(workdir), timeout)

        def terminate(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            yield stack
        finally:
            try:
                stack.playbook("stopped")
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"stopping the stack failed ({error}); killing its processes", file=sys.stderr)
            stack.kill_leftovers()
            signal.signal(signal.SIGTERM, previous)


@dataclass
class Measurement:
    name: str
    messages: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def publish(
    connection: pika.BlockingConnection,
    exchange: str,
    routing_key: str,
    count: int,
    body: bytes,
    confirms: bool,
    persistent: bool,
) -> tuple[float, list[float]]:
    channel = connection.channel()
    if confirms:
        channel.confirm_delivery()
    properties = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        sent = time.perf_counter()
        channel.basic_publish(exchange, routing_key, body, properties)
        latencies.append(time.perf_counter() - sent)
    seconds = time.perf_counter() - started
    channel.close()
    return seconds, latencies


def wait_for_messages(
    connection: pika.BlockingConnection, queue: str, count: int, timeout: float = 60
) -> int:
    """The queue's ready messages once they reach count (transient publishes are not confirmed)."""
    channel = connection.channel()
    deadline = time.monotonic() + timeout
    while True:
        found = channel.queue_declare(queue, passive=True).method.message_count
        if found >= count or time.monotonic() > deadline:
            channel.close()
            return int(found)
        time.sleep(0.2)


def measure(stack: Stack, count: int, size: int) -> list[Measurement]:
    body = os.urandom(size // 2).hex().encode()[:size]
    admin, orchestrator = USERS["rabbitmq-admin"], USERS["rabbitmq-orchestrator"]
    measurements = []
    with stack.connect(admin) as connection:
        setup = connection.channel()
        setup.queue_declare(
            "bench.quorum-1",
            durable=True,
            arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 1},
        )
        setup.queue_declare("bench.classic-durable", durable=True, arguments={"x-queue-type": "classic"})
        setup.queue_declare("bench.classic-transient", durable=False, arguments={"x-queue-type": "classic"})
        setup.queue_purge("tasks.echo")
        # A warm-up, not counted: connection set-up and the first writes of each queue.
        for queue in ("bench.quorum-1", "bench.classic-durable", "bench.classic-transient"):
            publish(connection, "", queue, 50, body, confirms=True, persistent=True)
            setup.queue_purge(queue)

    cases = [
        ("quorum, 3 nodes, confirms", orchestrator, "tasks", "org-bench.echo", "tasks.echo", True, True),
        ("quorum, 1 node, confirms", admin, "", "bench.quorum-1", "bench.quorum-1", True, True),
        (
            "classic durable, confirms",
            admin,
            "",
            "bench.classic-durable",
            "bench.classic-durable",
            True,
            True,
        ),
        (
            "classic transient, no confirms",
            admin,
            "",
            "bench.classic-transient",
            "bench.classic-transient",
            False,
            False,
        ),
    ]
    for name, user, exchange, routing_key, queue, confirms, persistent in cases:
        print(f"{name}: {count} messages ...", end=" ", flush=True)
        with stack.connect(user) as connection:
            seconds, latencies = publish(connection, exchange, routing_key, count, body, confirms, persistent)
        with stack.connect(admin) as connection:
            arrived = wait_for_messages(connection, queue, count)
            connection.channel().queue_purge(queue)
        if arrived != count:
            print(f"WARNING: {queue} holds {arrived} of {count} messages")
        measurements.append(Measurement(name, count, seconds, latencies))
        print(f"{seconds:.2f}s", flush=True)

    with stack.connect(admin) as connection:
        channel = connection.channel()
        for queue in ("bench.quorum-1", "bench.classic-durable", "bench.classic-transient"):
            channel.queue_delete(queue)
    return measurements


def report(measurements: Sequence[Measurement], size: int, startup: float) -> dict[str, Any]:
    baseline = measurements[-1]
    rows = []
    data: dict[str, Any] = {"message_bytes": size, "startup_seconds": round(startup, 2), "runs": []}
    for m in measurements:
        ordered = sorted(m.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rows.append(
            [
                m.name,
                m.messages,
                f"{m.seconds:.2f}",
                f"{m.rate:.0f}",
                f"{m.rate / baseline.rate:.3f}x",
                f"{p50:.2f}",
                f"{p99:.2f}",
            ]
        )
        data["runs"].append(
            {
                "name": m.name,
                "messages": m.messages,
                "seconds": round(m.seconds, 3),
                "rate": round(m.rate, 1),
                "ratio_to_baseline": round(m.rate / baseline.rate, 4),
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
            }
        )
    versions = {name: importlib.metadata.version(name) for name in ("pika", "ansible-core")}
    print(
        f"\nRabbitMQ local target, 3 nodes on 127.0.0.1, {size}-byte messages, one publisher, "
        f"pika {versions['pika']}, ansible-core {versions['ansible-core']}, Python {sys.version.split()[0]}\n"
    )
    headers = ["publish to", "messages", "seconds", "msg/s", "vs baseline", "p50 ms", "p99 ms"]
    print("\n".join(table(headers, rows)))
    print(f"\nstack start (playbook, cold): {startup:.1f}s")
    data["versions"] = versions
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000, help="messages per measurement (default 2000)")
    parser.add_argument("--size", type=int, default=512, help="message body in bytes (default 512)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one playbook run may take")
    args = parser.parse_args(argv)
    try:
        with running_stack(args.timeout) as stack:
            startup = stack.playbook("started")
            data = report(measure(stack, args.messages, args.size), args.size, startup)
    except (RuntimeError, OSError, pika.exceptions.AMQPError, subprocess.TimeoutExpired) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
