"""files/rabbitmq_access.py of the rabbitmq role: how the request is read (the HTTP side runs against
real nodes in tests/integration/test_rabbitmq.py)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[3] / "roles" / "rabbitmq" / "files" / "rabbitmq_access.py"
spec = importlib.util.spec_from_file_location("tenantforge_rabbitmq_access", SCRIPT)
assert spec and spec.loader
access = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = access
spec.loader.exec_module(access)


def test_env_references_are_resolved_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "s3cret")
    monkeypatch.setenv("URL", "http://127.0.0.1:15672")
    request = {
        "url": {"env": "URL"},
        "admin": {"username": "admin", "password": {"env": "ADMIN_PASSWORD"}},
        "users": [{"username": "a", "password": {"env": "ADMIN_PASSWORD"}, "tags": ["administrator"]}],
        # A dict with other keys besides `env` is data, not a reference.
        "definitions": {"queues": [{"name": "q", "arguments": {"env": "x", "x-queue-type": "quorum"}}]},
    }
    assert access.resolve(request) == {
        "url": "http://127.0.0.1:15672",
        "admin": {"username": "admin", "password": "s3cret"},
        "users": [{"username": "a", "password": "s3cret", "tags": ["administrator"]}],
        "definitions": {"queues": [{"name": "q", "arguments": {"env": "x", "x-queue-type": "quorum"}}]},
    }


def test_a_missing_variable_is_named_and_nothing_is_contacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RABBITMQ_WORKER_PASSWORD", raising=False)
    request = tmp_path / "request.json"
    # Port 9 (discard) on loopback: a contacted API would fail with another message.
    request.write_text(
        json.dumps(
            {
                "url": "http://127.0.0.1:9",
                "admin": {"username": "admin", "password": "x"},
                "users": [{"username": "worker", "password": {"env": "RABBITMQ_WORKER_PASSWORD"}}],
            }
        )
    )
    assert access.main(["--request", str(request)]) == 1
    assert capsys.readouterr().err == "the environment variable RABBITMQ_WORKER_PASSWORD is not set\n"


def test_the_request_is_read_from_stdin_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = {"username": "admin", "password": "x"}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"url": "ftp://example.test", "admin": admin})))
    assert access.main([]) == 1
    assert "the management API URL must be http(s)://" in capsys.readouterr().err


def test_a_missing_key_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"url": "http://127.0.0.1:9", "admin": {}})))
    assert access.main(["--check"]) == 1
    assert capsys.readouterr().err == "the request has no 'username'\n"
