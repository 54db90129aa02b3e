"""Time playbooks/infrastructure.yml against a private AWS emulator and count the AWS API calls it makes.

Three measurements in one process, all against one moto server of our own (recording on):

1. the cold run: `ansible-playbook playbooks/infrastructure.yml` on an empty emulator;
2. the idempotent re-run (``--runs N`` times, median reported), which must change nothing;
3. a baseline: a plain in-process boto3 script that replays the read-only calls of the re-run with
   the parameters they were sent with, i.e. what verifying the same state costs without Ansible.

Every API call is taken from moto's request recorder, which sees the requests of every Ansible module
process. Nothing is asserted about timing; a re-run that reports changes prints a warning.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.metadata
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLAYBOOK = "playbooks/infrastructure.yml"
EMULATOR_SCRIPT = REPO / "roles" / "local_emulator" / "files" / "emulator.py"
AMIS_FILE = REPO / "roles" / "local_emulator" / "files" / "amis.json"
REGION = "us-east-1"
# moto accepts any credentials; these are the inventory's fixed placeholders, not secrets.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105

# Signing names (the credential scope of a request) that differ from the boto3 client name.
SIGNING_NAME_TO_CLIENT = {"monitoring": "cloudwatch", "email": "ses", "states": "stepfunctions"}
READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search", "BatchGet", "Query", "Scan")
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
ACCESS_LOG = re.compile(r'\] "[A-Z]+ \S* HTTP/[\d.]+" \d{3} ')
RECAP = re.compile(r"^localhost\s+:\s+(.*)$", re.MULTILINE)


# --------------------------------------------------------------------------------------------------
# The emulator


class BenchmarkError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """A moto server of our own on a free port, recording requests to a file in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "MOTO_AMIS_PATH": str(AMIS_FILE),
            "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
            "MOTO_ENABLE_RECORDING": "True",
            "MOTO_RECORDER_FILEPATH": str(self.workdir / "recording.jsonl"),
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(EMULATOR_SCRIPT), "-H", "127.0.0.1", "-p", str(self.port)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on 127.0.0.1:{self.port} after {timeout}s") from None
                time.sleep(0.1)
        # Recording is on from the start; each measurement turns it on for itself.
        self.recorder("stop-recording")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the emulator's output, without its access log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if not ACCESS_LOG.search(line)]
        return "\n".join(kept[-lines:])

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Start the emulator, stop it at the end; a failure inside also prints the emulator's log."""
        try:
            self.start()
            print(f"emulator on {self.endpoint_url}; working directory {self.workdir}", flush=True)
            yield
        except Exception:
            tail = self.log_tail()
            if tail:
                print(f"--- emulator log, last lines ---\n{tail}", file=sys.stderr)
            raise
        finally:
            self.stop()

    def recorder(self, action: str) -> str:
        method = "GET" if action == "download-recording" else "POST"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, f"/moto-api/recorder/{action}")
            response = connection.getresponse()
            body = response.read().decode("utf-8")
            if response.status != 200:
                raise RuntimeError(f"recorder {action}: HTTP {response.status}: {body[:500]}")
            return body
        finally:
            connection.close()

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Call]]:
        """Record the requests made inside the block; the list is filled when the block ends."""
        calls: list[Call] = []
        self.recorder("reset-recording")
        self.recorder("start-recording")
        try:
            yield calls
        finally:
            self.recorder("stop-recording")
        calls.extend(parse_recording(self.recorder("download-recording")))


# --------------------------------------------------------------------------------------------------
# Recorded requests


@dataclass
class Call:
    """One recorded HTTP request to the emulator, classified."""

    service: str  # boto3 client name
    region: str
    label: str  # operation as sent: Action=, X-Amz-Target, or method + path for REST services
    operation: str | None  # the service model's operation name, when it could be resolved
    read_only: bool
    params: dict[str, Any] | None  # boto3 parameters, when they could be recovered
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> tuple[str, str]:
        return self.service, self.label

    @property
    def signature(self) -> str:
        """Operation and parameters: two calls with the same signature ask the same thing."""
        if self.params is not None:
            return f"{self.service} {self.operation} {json.dumps(self.params, sort_keys=True, default=str)}"
        return f"{self.service} {self.method} {self.url} {self.body!r}"


def parse_recording(text: str) -> list[Call]:
    calls = []
    for line in text.splitlines():
        if line.strip():
            calls.append(classify(json.loads(line)))
    return calls


def classify(entry: Mapping[str, Any]) -> Call:
    method = str(entry.get("method", "GET")).upper()
    url = str(entry.get("url", "/"))
    headers = {str(k): str(v) for k, v in (entry.get("headers") or {}).items()}
    lower = {k.lower(): v for k, v in headers.items()}
    raw_body = entry.get("body") or ""
    body = base64.b64decode(raw_body) if entry.get("body_encoded") else str(raw_body).encode("utf-8")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)

    scope = CREDENTIAL_SCOPE.search(lower.get("authorization", "") or dict(query).get("X-Amz-Credential", ""))
    region, signing_name = (scope.group(1), scope.group(2)) if scope else (REGION, "unknown")
    service = SIGNING_NAME_TO_CLIENT.get(signing_name, signing_name)

    label: str | None = None
    rest = False
    form = dict(query)
    if "x-www-form-urlencoded" in lower.get("content-type", ""):
        form.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if "Action" in form:
        label = form["Action"]
    elif "x-amz-target" in lower:
        label = lower["x-amz-target"].rsplit(".", 1)[-1]
    elif match := re.fullmatch(r"/service/[^/]+/operation/([^/]+)", parts.path):
        label = match.group(1)  # Smithy RPC v2 (CBOR)
    else:
        rest = True

    operation, params = resolve(service, method, url, headers, body)
    if label is None:
        label = rest_label(service, method, parts.path, query, operation)
    name = operation or label
    read_only = name.startswith(READ_PREFIXES) if (operation or not rest) else method in ("GET", "HEAD")
    operation = operation or (None if rest else label)
    return Call(service, region, label, operation, read_only, params, method, url, headers, body)


def rest_label(
    service: str, method: str, path: str, query: Sequence[tuple[str, str]], operation: str | None
) -> str:
    """`GET ?policy`, `HEAD /{bucket}`, `GET /`: how a REST request reads without its identifiers."""
    if service != "s3" and operation:
        return operation
    subresources = [key for key, value in query if not value]
    if subresources:
        return f"{method} ?{subresources[0]}"
    segments = [segment for segment in path.split("/") if segment]
    shape = "/" if not segments else "/{bucket}" if len(segments) == 1 else "/{bucket}/{key}"
    return f"{method} {shape}"


def resolve(
    service: str, method: str, url: str, headers: Mapping[str, str], body: bytes
) -> tuple[str | None, dict[str, Any] | None]:
    """The operation and its boto3 parameters, parsed back from the request by moto's own router and parsers.

    Returns (None, None) where moto cannot: the baseline then replays that request as recorded.
    """
    try:
        from moto.core.parse import PROTOCOL_PARSERS
        from moto.core.request import Request, determine_request_protocol
        from moto.core.routing import get_service_router
        from moto.core.utils import get_service_model

        request = Request.from_primitives(method, url, dict(headers), body)
        operation, uri_params = get_service_router(service).match(request)
        protocol = determine_request_protocol(get_service_model(service), request.content_type)
        parser = PROTOCOL_PARSERS[protocol](operation)
        params = parser.parse(
            {
                "method": request.method,
                "values": request.values,
                "headers": request.headers,
                "body": request.data,
                "url_path": request.path,
                "url_params": uri_params,
            }
        )
        return str(operation.name), dict(params)
    except Exception:
        return None, None


# --------------------------------------------------------------------------------------------------
# Ansible


@dataclass
class PlaybookRun:
    seconds: float
    returncode: int
    output: str
    calls: list[Call] = field(default_factory=list)

    @property
    def recap(self) -> dict[str, int]:
        match = RECAP.search(self.output)
        if not match:
            return {}
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def run_playbook(
    emulator: Emulator, state_dir: Path, key_dir: Path, log: Path, timeout: float
) -> PlaybookRun:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "TENANTFORGE_STATE_DIR": str(state_dir),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    extra_vars = {"local_emulator_port": emulator.port, "aws_keypair_directory": str(key_dir)}
    command = [str(BIN / "ansible-playbook"), PLAYBOOK, "--extra-vars", json.dumps(extra_vars)]
    with emulator.recording() as calls, log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout)
        except BaseException:
            # A timeout or an interrupt: the playbook's whole process group goes, not only its leader.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        seconds = time.perf_counter() - started
    return PlaybookRun(seconds, returncode, log.read_text(errors="replace"), calls)


# --------------------------------------------------------------------------------------------------
# The boto3 baseline


@dataclass
class Baseline:
    seconds: float  # client creation and calls
    setup_seconds: float  # client creation only
    calls: list[Call]
    errors: list[str]  # calls answered with an error (they still count: the request was made)
    raw: int  # requests replayed as recorded because their parameters could not be recovered


def run_baseline(emulator: Emulator, reads: Sequence[Call]) -> Baseline:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, ParamValidationError

    config = Config(retries={"mode": "standard", "total_max_attempts": 1})
    errors: list[str] = []
    raw = 0
    with emulator.recording() as recorded:
        started = time.perf_counter()
        session = boto3.session.Session()
        clients: dict[tuple[str, str], tuple[Any, dict[str, str]]] = {}  # client, API name -> method
        for call in reads:
            if call.params is not None and (call.service, call.region) not in clients:
                client = session.client(
                    call.service,
                    endpoint_url=emulator.endpoint_url,
                    region_name=call.region,
                    aws_access_key_id=ACCESS_KEY,
                    aws_secret_access_key=SECRET_KEY,
                    config=config,
                )
                names = {api: name for name, api in client.meta.method_to_api_mapping.items()}
                clients[call.service, call.region] = client, names
        setup_seconds = time.perf_counter() - started
        for call in reads:
            client, names = clients.get((call.service, call.region), (None, {}))
            if call.params is not None and call.operation in names:
                try:
                    getattr(client, names[call.operation])(**call.params)
                    continue
                except ClientError as error:
                    errors.append(f"{call.service} {call.operation} -> {error.response['Error'].get('Code')}")
                    continue
                except ParamValidationError:
                    pass  # boto3 refuses what the module sent: send it as recorded instead
            raw += 1
            if replay_raw(emulator, call):
                errors.append(f"{call.service} {call.label}")
        seconds = time.perf_counter() - started
    return Baseline(seconds, setup_seconds, recorded, errors, raw)


def replay_raw(emulator: Emulator, call: Call) -> bool:
    """Send a recorded request again as it was; True if the emulator answered with an error."""
    parts = urlsplit(call.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {k: v for k, v in call.headers.items() if k.lower() not in ("host", "transfer-encoding")}
    headers["Content-Length"] = str(len(call.body))
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=60)
    try:
        connection.request(call.method, target, body=call.body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status >= 400
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------------
# Report


def counts(calls: Sequence[Call]) -> Counter[tuple[str, str]]:
    return Counter(call.key for call in calls)


def display_label(calls: Sequence[Call], key: tuple[str, str]) -> str:
    """The label, with the model's operation name where it says more (`GET ?policy (GetBucketPolicy)`)."""
    operation = next((c.operation for c in calls if c.key == key and c.operation), None)
    return f"{key[1]} ({operation})" if operation and operation != key[1] else key[1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> list[str]:
    """A plain text table; the first `left` columns are left-aligned, the others right-aligned."""
    cells = [
        [str(h) for h in headers],
        *[[str(c) for c in row] + [""] * (len(headers) - len(row)) for row in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        aligned = (
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(aligned).rstrip()

    return [line(cells[0]), line(["-" * w for w in widths]), *[line(row) for row in cells[1:]]]


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def versions() -> dict[str, str]:
    found = {}
    for package in ("ansible-core", "ansible", "moto", "boto3", "botocore"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def per_operation(calls: Sequence[Call]) -> dict[str, int]:
    return {f"{service} {label}": n for (service, label), n in sorted(counts(calls).items())}


def figures(
    cold: PlaybookRun, reruns: Sequence[PlaybookRun], baselines: Sequence[Baseline]
) -> dict[str, Any]:
    """Everything measured, as written by --json."""
    rerun, baseline = reruns[0], baselines[0]
    reads = [c for c in rerun.calls if c.read_only]
    rerun_seconds = statistics.median(r.seconds for r in reruns)
    baseline_seconds = statistics.median(b.seconds for b in baselines)

    def playbook_figures(run: PlaybookRun, seconds: float) -> dict[str, Any]:
        return {
            "seconds": round(seconds, 3),
            "api_calls": len(run.calls),
            "read_calls": sum(c.read_only for c in run.calls),
            "write_calls": sum(not c.read_only for c in run.calls),
            "recap": run.recap,
            "per_operation": per_operation(run.calls),
        }

    time_ratio = ratio(rerun_seconds, baseline_seconds)
    calls_ratio = ratio(len(rerun.calls), len(baseline.calls))
    return {
        "playbook": PLAYBOOK,
        "versions": versions(),
        "runs": len(reruns),
        "cold": playbook_figures(cold, cold.seconds),
        "rerun": {
            **playbook_figures(rerun, rerun_seconds),
            "seconds_runs": [round(r.seconds, 3) for r in reruns],
            "api_calls_runs": [len(r.calls) for r in reruns],
            "changed_runs": [r.recap.get("changed") for r in reruns],
            "distinct_read_calls": len({c.signature for c in reads}),
        },
        "baseline": {
            "seconds": round(baseline_seconds, 4),
            "client_setup_seconds": round(statistics.median(b.setup_seconds for b in baselines), 4),
            "seconds_runs": [round(b.seconds, 4) for b in baselines],
            "api_calls": len(baseline.calls),
            "read_calls": sum(c.read_only for c in baseline.calls),
            "error_responses": baseline.errors,
            "raw_replays": baseline.raw,
            "matches_rerun_reads": counts(baseline.calls) == counts(reads),
            "per_operation": per_operation(baseline.calls),
        },
        "ratios": {
            "rerun_over_baseline_seconds": None if time_ratio is None else round(time_ratio, 2),
            "rerun_over_baseline_calls": None if calls_ratio is None else round(calls_ratio, 3),
        },
    }


def report(
    cold: PlaybookRun, reruns: Sequence[PlaybookRun], baselines: Sequence[Baseline], data: Mapping[str, Any]
) -> None:
    rerun, baseline = reruns[0], baselines[0]
    v, n = data["versions"], len(reruns)
    median = f" (median of {n})" if n > 1 else ""
    print(
        f"\n{PLAYBOOK} against a private moto {v['moto']} server; ansible-core {v['ansible-core']}, "
        f"botocore {v['botocore']}, Python {sys.version.split()[0]}\n"
    )
    base = data["baseline"]
    rows: list[list[object]] = []
    for name, part, digits in (
        ("cold run (empty emulator)", data["cold"], 1),
        (f"idempotent re-run{median}", data["rerun"], 1),
        (f"boto3 baseline, same reads{median}", base, 2),
    ):
        recap = part.get("recap", {})
        calls, reads = part["api_calls"], part["read_calls"]
        rows.append(
            [name, f"{part['seconds']:.{digits}f}", calls, reads, calls - reads]
            + [recap.get(k, "") for k in ("ok", "changed", "skipped")]
        )
    time_ratio, calls_ratio = data["ratios"].values()
    rows.append(
        [
            "re-run / baseline",
            "n/a" if time_ratio is None else f"{time_ratio:.0f}x",
            "n/a" if calls_ratio is None else f"{calls_ratio:.2f}x",
        ]
    )
    headers = ["", "seconds", "API calls", "reads", "writes", "tasks ok", "changed", "skipped"]
    print("\n".join(table(headers, rows)))
    errors = Counter(base["error_responses"])
    print(
        f"\nbaseline: boto3 in-process, {base['client_setup_seconds']:.2f}s of it creating clients; "
        f"{base['raw_replays']} request(s) replayed raw"
    )
    print("error answers: " + (", ".join(f"{e} ({n}x)" if n > 1 else e for e, n in errors.items()) or "none"))
    print(
        f"re-run: {data['rerun']['distinct_read_calls']} distinct reads (operation + parameters) "
        f"among its {data['rerun']['read_calls']}"
    )
    if n > 1:
        print("re-run seconds: " + ", ".join(f"{s:.1f}" for s in data["rerun"]["seconds_runs"]))

    # Warnings, never assertions.
    if not cold.recap.get("changed"):
        print("WARNING: the cold run changed nothing (was the emulator really empty?)")
    for i, run in enumerate(reruns, 1):
        if run.recap.get("changed") != 0:
            print(f"WARNING: re-run {i} is not idempotent: changed={run.recap.get('changed', '?')}")
        if counts(run.calls) != counts(rerun.calls):
            print(f"WARNING: re-run {i} made {len(run.calls)} API calls, re-run 1 made {len(rerun.calls)}")
    if not base["matches_rerun_reads"]:
        print("WARNING: the baseline's recorded calls differ from the re-run's read-only calls")

    rerun_n, cold_n, base_n = counts(rerun.calls), counts(cold.calls), counts(baseline.calls)
    keys = sorted(set(rerun_n) | set(cold_n), key=lambda k: (-rerun_n[k], -cold_n[k], k))
    every_call = [*rerun.calls, *cold.calls]
    op_rows = [
        [k[0], display_label(every_call, k), rerun_n[k] or "", cold_n[k] or "", base_n[k] or ""] for k in keys
    ]
    print("\nAPI calls per operation, sorted by re-run count\n")
    print("\n".join(table(["service", "operation", "re-run", "cold", "baseline"], op_rows, left=2)))

    services = sorted({k[0] for k in keys}, key=lambda s: (-sum(rerun_n[k] for k in keys if k[0] == s), s))
    service_rows: list[list[object]] = [
        [s] + [sum(c[k] for k in c if k[0] == s) for c in (rerun_n, cold_n, base_n)] for s in services
    ]
    service_rows.append(["total", len(rerun.calls), len(cold.calls), len(baseline.calls)])
    print()
    print("\n".join(table(["service", "re-run", "cold", "baseline"], service_rows)))


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=int, default=1, help="idempotent re-runs (and baselines); median reported"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds a single playbook run may take (default 600)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)

    with tempfile.TemporaryDirectory(prefix="tenantforge-benchmark-") as tmp:
        workdir = Path(tmp).resolve()
        if workdir.is_relative_to(REPO):
            print(f"the temporary directory {workdir} is inside the repository; set TMPDIR", file=sys.stderr)
            return 2
        state_dir, key_dir = workdir / "state", workdir / "keys"
        state_dir.mkdir()
        key_dir.mkdir(mode=0o700)
        emulator = Emulator(workdir)
        try:
            with emulator.running():

                def playbook(name: str) -> PlaybookRun:
                    print(f"{name}: ansible-playbook {PLAYBOOK} ...", end=" ", flush=True)
                    run = run_playbook(
                        emulator, state_dir, key_dir, workdir / f"{name.replace(' ', '-')}.log", args.timeout
                    )
                    print(f"{run.seconds:.1f}s, {len(run.calls)} API calls, rc={run.returncode}", flush=True)
                    if run.returncode != 0:
                        print(run.output[-6000:], file=sys.stderr)
                        raise BenchmarkError(
                            f"{name}: ansible-playbook failed with exit code {run.returncode}"
                        )
                    return run

                cold = playbook("cold")
                reruns = [playbook(f"re-run {i}") for i in range(1, args.runs + 1)]
                reads = [c for c in reruns[0].calls if c.read_only]
                baselines = []
                for i in range(1, args.runs + 1):
                    baselines.append(run_baseline(emulator, reads))
                    print(
                        f"baseline {i}: {baselines[-1].seconds:.2f}s, {len(baselines[-1].calls)} API calls",
                        flush=True,
                    )
                data = figures(cold, reruns, baselines)
                report(cold, reruns, baselines, data)
        except Exception as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            return 1

    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
