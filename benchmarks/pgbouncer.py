"""pgbench through the local PgBouncer against direct PostgreSQL connections, at several client counts.

A temporary local stack of its own: ``playbooks/platform.yml`` with the components postgres and
pgbouncer (local target) on free ports, with a private state directory and generated secrets in a
temporary directory outside the repository. It is stopped through the same playbook at the end, also
on error, Ctrl-C or SIGTERM. Nothing of ``make run`` (ports 5433/6433, ``.local/``) is touched.

For each workload and client count, ``pgbench`` (Debian's postgresql-15 package) runs as the
application role ``tenantforge_app``, once straight to PostgreSQL (the baseline, measured in the same
run) and once through PgBouncer (transaction pooling). Direct connections past PostgreSQL's
``max_connections`` are refused by the server: that is reported as ``refused``, not as a failure of
the benchmark. A sampler counts the role's server backends (``pg_stat_activity``) during each run.

Nothing is asserted: the figures are printed (and written as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLAYBOOK = "playbooks/platform.yml"
PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")
USERS = {
    "postgres-superuser": "postgres",
    "postgres-owner": "tenantforge_owner",
    "postgres-app": "tenantforge_app",
    "pgbouncer-auth": "pgbouncer_auth",
}
DATABASE = "tenantforge"
APP = "tenantforge_app"
# Workloads: name -> pgbench options. select-only keeps the server's work small, so the connection
# handling shows; --connect opens a connection per transaction, as a Lambda invocation does.
WORKLOADS = {
    "select-only": ["--builtin=select-only"],
    "select-only, new connection per transaction": ["--builtin=select-only", "--connect"],
}
REFUSED = re.compile(r"too many clients already|remaining connection slots are reserved")


class BenchmarkError(Exception):
    pass


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken | {5432, 5433, 6432, 6433}:
            return port


def write_secrets(state_dir: Path) -> dict[str, str]:
    """The synced secret files the roles read (0600 in 0700 directories); returns user -> password."""
    passwords = {}
    for secret, username in USERS.items():
        directory = state_dir / "secrets" / "tenantforge" / secret
        directory.mkdir(parents=True, mode=0o700)
        password = secrets.token_urlsafe(24)
        for key, value in {"username": username, "password": password}.items():
            path = directory / key
            path.write_text(value)
            path.chmod(0o600)
        passwords[username] = password
    return passwords


# --------------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    state_dir: Path
    postgres_port: int
    pgbouncer_port: int
    passwords: dict[str, str]
    timeout: float

    def playbook(self, name: str, extra: dict[str, Any] | None = None) -> float:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "TENANTFORGE_STATE_DIR": str(self.state_dir),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        # The local target comes from inventories/local (ansible.cfg's inventory).
        extra_vars = {
            "tenantforge_platform_components": ["postgres", "pgbouncer"],
            "postgres_local_port": self.postgres_port,
            "pgbouncer_local_port": self.pgbouncer_port,
            **(extra or {}),
        }
        command = [str(BIN / "ansible-playbook"), PLAYBOOK, "--extra-vars", json.dumps(extra_vars)]
        log = self.state_dir / f"{name}.log"
        print(f"{name}: ansible-playbook {PLAYBOOK} ...", end=" ", flush=True)
        started = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                returncode = process.wait(timeout=self.timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        seconds = time.perf_counter() - started
        print(f"{seconds:.1f}s, rc={returncode}", flush=True)
        if returncode != 0:
            print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
            raise BenchmarkError(f"{name}: ansible-playbook failed with exit code {returncode}")
        return seconds

    def stop(self) -> None:
        try:
            self.playbook("stop", {"tenantforge_platform_local_state": "stopped"})
        finally:
            # Whatever the playbook could not stop (it failed, or was interrupted) goes now.
            for pid_file in (
                self.state_dir / "pgbouncer" / "pgbouncer.pid",
                self.state_dir / "postgres" / "postgres.pid",
            ):
                with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)

    @contextlib.contextmanager
    def running(self) -> Iterator[float]:
        try:
            yield self.playbook("start")
        finally:
            self.stop()

    def environment(self, user: str) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.passwords[user], "PGCONNECT_TIMEOUT": "30"}

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.postgres_port,
            user="postgres",
            password=self.passwords["postgres"],
            dbname=DATABASE,
            autocommit=True,
        ) as connection:
            return connection.execute(query).fetchall()


# --------------------------------------------------------------------------------------------------
# pgbench


@dataclass
class Result:
    workload: str
    clients: int
    target: str  # direct or pgbouncer
    tps: float | None
    transactions: int | None
    latency_ms: float | None
    refused: bool
    peak_backends: int
    seconds: float
    error: str | None = None


class BackendSampler:
    """The peak number of the application role's server backends, sampled from pg_stat_activity."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.stack.postgres_port,
            user="postgres",
            password=self.stack.passwords["postgres"],
            dbname=DATABASE,
            autocommit=True,
        ) as connection:
            while not self._stop.wait(0.25):
                row = connection.execute(
                    "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = %s", (APP,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def pgbench(
    stack: Stack, workload: str, clients: int, target: str, duration: int, jobs: int, scale: int
) -> Result:
    port = stack.pgbouncer_port if target == "pgbouncer" else stack.postgres_port
    command = [
        str(PGBENCH),
        "--host=127.0.0.1",
        f"--port={port}",
        f"--username={APP}",
        "--no-vacuum",  # the application role may not vacuum the owner's tables
        f"--client={clients}",
        f"--jobs={min(jobs, clients)}",
        f"--time={duration}",
        *WORKLOADS[workload],
        DATABASE,
    ]
    print(f"{workload}, {clients} clients, {target}: pgbench ...", end=" ", flush=True)
    started = time.perf_counter()
    with BackendSampler(stack) as sampler:
        completed = subprocess.run(
            command,
            env=stack.environment(APP),
            capture_output=True,
            text=True,
            timeout=duration + 300,
            check=False,
        )
    seconds = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    tps = re.search(r"^tps = ([0-9.]+)", output, re.MULTILINE)
    processed = re.search(r"^number of transactions actually processed: (\d+)", output, re.MULTILINE)
    latency = re.search(r"^latency average = ([0-9.]+) ms", output, re.MULTILINE)
    refused = bool(REFUSED.search(output))
    error = None
    if completed.returncode != 0:
        lines = [line for line in output.splitlines() if "error" in line.lower() or "FATAL" in line]
        error = lines[0].strip() if lines else f"exit code {completed.returncode}"
    elif processed and processed.group(1) == "0":
        error = "no transaction within --duration (the clients were still connecting)"
    result = Result(
        workload=workload,
        clients=clients,
        target=target,
        # An aborted run's figures are incomplete: only a clean run counts.
        tps=float(tps.group(1)) if tps and completed.returncode == 0 else None,
        transactions=int(processed.group(1)) if processed else None,
        latency_ms=float(latency.group(1)) if latency else None,
        refused=refused,
        peak_backends=sampler.peak,
        seconds=seconds,
        error=error,
    )
    if result.tps is not None:
        print(f"{result.tps:.0f} tps, peak {result.peak_backends} backends", flush=True)
    else:
        print(("refused: " if refused else "failed: ") + (error or ""), flush=True)
        if not refused:
            print(output[-3000:], file=sys.stderr)
    return result


# --------------------------------------------------------------------------------------------------
# Report


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> list[str]:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return [line(cells[0]), line(["-" * w for w in widths]), *[line(row) for row in cells[1:]]]


def tps_text(result: Result) -> str:
    if result.tps is not None:
        return f"{result.tps:.0f}"
    return "refused" if result.refused else "failed"


def report(results: Sequence[Result], settings: dict[str, Any]) -> None:
    print(
        "\npgbench as tenantforge_app, {duration} s per run, {jobs} threads, scale {scale}; "
        "PostgreSQL 15 max_connections {max_connections}; PgBouncer {pgbouncer_version} "
        "pool_mode transaction, default_pool_size {pool}, max_db_connections {max_db}\n".format(**settings)
    )
    rows = []
    pairs: dict[tuple[str, int], dict[str, Result]] = {}
    for result in results:
        pairs.setdefault((result.workload, result.clients), {})[result.target] = result
    # Where PostgreSQL refuses the clients, the baseline is its best direct figure of the workload.
    best: dict[str, Result] = {}
    for result in results:
        if (
            result.target == "direct"
            and result.tps
            and result.tps > getattr(best.get(result.workload), "tps", 0)
        ):
            best[result.workload] = result
    for (workload, clients), pair in pairs.items():
        direct, pooled = pair["direct"], pair["pgbouncer"]
        baseline = best.get(workload)
        if pooled.tps and direct.tps:
            ratio = f"{pooled.tps / direct.tps:.2f}x"
        elif pooled.tps and baseline and baseline.tps:
            ratio = f"{pooled.tps / baseline.tps:.2f}x (vs direct at {baseline.clients})"
        else:
            ratio = "-"
        rows.append(
            [
                workload,
                clients,
                tps_text(direct),
                tps_text(pooled),
                ratio,
                direct.peak_backends,
                pooled.peak_backends,
                f"{pooled.latency_ms:.1f}" if pooled.latency_ms is not None and pooled.tps else "-",
            ]
        )
    headers = [
        "workload",
        "clients",
        "direct tps",
        "pgbouncer tps",
        "pgbouncer/direct",
        "direct backends",
        "pgbouncer backends",
        "pgbouncer latency ms",
    ]
    print("\n".join(table(headers, rows)))
    print(
        "\nbackends: peak server backends of tenantforge_app during the run (pg_stat_activity, sampled "
        "every 0.25 s); refused: PostgreSQL turned clients away (max_connections)"
    )


def pgbouncer_version() -> str:
    completed = subprocess.run(
        ["/usr/sbin/pgbouncer", "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"PgBouncer (\S+)", completed.stdout)
    return match.group(1) if match else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[50, 200, 500],
        help="client counts (default 50 200 500)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    parser.add_argument("--jobs", type=int, default=2, help="pgbench threads (default 2)")
    parser.add_argument("--scale", type=int, default=5, help="pgbench scale factor (default 5)")
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        action="append",
        help="workloads to run (default: all)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one playbook run may take")
    args = parser.parse_args(argv)
    if not PGBENCH.exists():
        print(f"{PGBENCH} is missing: install Debian's postgresql-15 package", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tenantforge-pgbouncer-benchmark-") as tmp:
        state_dir = Path(tmp).resolve()
        if state_dir.is_relative_to(REPO):
            print(
                f"the temporary directory {state_dir} is inside the repository; set TMPDIR", file=sys.stderr
            )
            return 2
        postgres_port = free_port(set())
        stack = Stack(
            state_dir,
            postgres_port,
            free_port({postgres_port}),
            write_secrets(state_dir),
            args.timeout,
        )
        print(
            f"state directory {state_dir}; PostgreSQL on 127.0.0.1:{stack.postgres_port}, "
            f"PgBouncer on 127.0.0.1:{stack.pgbouncer_port}",
            flush=True,
        )
        try:
            with stack.running():
                print(
                    f"pgbench --initialize --scale={args.scale} as tenantforge_owner ...", end=" ", flush=True
                )
                started = time.perf_counter()
                subprocess.run(
                    [
                        str(PGBENCH),
                        "--initialize",
                        "--quiet",
                        f"--scale={args.scale}",
                        "--host=127.0.0.1",
                        f"--port={stack.postgres_port}",
                        "--username=tenantforge_owner",
                        DATABASE,
                    ],
                    env=stack.environment("tenantforge_owner"),
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=args.timeout,
                )
                print(f"{time.perf_counter() - started:.1f}s", flush=True)
                ((max_connections,),) = stack.sql("SHOW max_connections")
                ini = (state_dir / "pgbouncer" / "pgbouncer.ini").read_text()
                pool = dict(
                    re.findall(r"^(default_pool_size|max_db_connections) = (\d+)$", ini, re.MULTILINE)
                )
                for workload in args.workload or list(WORKLOADS):
                    for clients in args.clients:
                        for target in ("direct", "pgbouncer"):
                            results.append(
                                pgbench(
                                    stack, workload, clients, target, args.duration, args.jobs, args.scale
                                )
                            )
        except (BenchmarkError, subprocess.CalledProcessError) as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            if isinstance(error, subprocess.CalledProcessError):
                print(error.stdout + error.stderr, file=sys.stderr)
            return 1
    settings = {
        "duration": args.duration,
        "jobs": args.jobs,
        "scale": args.scale,
        "max_connections": max_connections,
        "pgbouncer_version": pgbouncer_version(),
        "pool": pool.get("default_pool_size", "?"),
        "max_db": pool.get("max_db_connections", "?"),
    }
    report(results, settings)
    if args.json:
        data = {"settings": settings, "results": [asdict(result) for result in results]}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
