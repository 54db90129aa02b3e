"""Tasks: the known types, what a submission must be, the task message and the rows' JSON form.

The message on exchange ``tasks`` (routing key ``<org_id>.<type>``, message id = task id) carries only
``{"task_id", "org_id", "type"}``: the row is the source of truth, the worker reads the payload from
it under row-level security, so a message never holds tenant data.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

# The built-in types (and their quorum queues tasks.<type>, rabbitmq_task_types).
TASK_TYPES = ("echo", "http_check")
MAX_PAYLOAD_BYTES = 256 * 1024
TASKS_EXCHANGE = "tasks"
STATUS_EXCHANGE = "task-status"
# The task_status enum of the schema, in its order.
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
_TYPE = re.compile(r"[a-z0-9_-]{1,64}")

COLUMNS = "id::text, type, status::text, payload, result, error, creator_id::text, created_at, updated_at"


class InvalidSubmission(ValueError):
    """``reason`` (``unknown_task_type``, ``invalid_payload``, ``payload_too_large``) and a message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_submission(document: Any, task_types: tuple[str, ...] = TASK_TYPES) -> tuple[str, dict[str, Any]]:
    """``(type, payload)`` of a ``POST /api/tasks`` body."""
    if not isinstance(document, dict):
        raise InvalidSubmission("invalid_request", "the body must be a JSON object")
    unknown = sorted(set(document) - {"type", "payload"})
    if unknown:
        raise InvalidSubmission("invalid_request", f"unknown field {unknown[0]!r:.40}")
    task_type = document.get("type")
    if not isinstance(task_type, str) or not _TYPE.fullmatch(task_type):
        raise InvalidSubmission("invalid_request", "type must be a task type name")
    if task_type not in task_types:
        raise InvalidSubmission("unknown_task_type", f"type must be one of {', '.join(task_types)}")
    payload = document.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidSubmission("invalid_request", "payload must be a JSON object")
    if len(json.dumps(payload, separators=(",", ":")).encode("utf-8")) > MAX_PAYLOAD_BYTES:
        raise InvalidSubmission("payload_too_large", f"payload must be at most {MAX_PAYLOAD_BYTES} bytes")
    return task_type, payload


def message(task_id: str, org_id: str, task_type: str) -> bytes:
    return json.dumps({"task_id": task_id, "org_id": org_id, "type": task_type}, sort_keys=True).encode()


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds (the columns are timestamp(3), written in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row_to_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ``SELECT {COLUMNS}`` as the API shows it."""
    task_id, task_type, status, payload, result, error, creator_id, created_at, updated_at = row
    return {
        "id": task_id,
        "type": task_type,
        "status": status,
        "payload": payload,
        "result": result,
        "error": error,
        "creator_id": creator_id,
        "created_at": timestamp(created_at),
        "updated_at": timestamp(updated_at),
    }


def encode_cursor(created_at: datetime, task_id: str) -> str:
    """The opaque position after a task, for keyset pagination (newest first)."""
    text = json.dumps([created_at.isoformat(), task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, task_id = json.loads(raw)
        position = datetime.fromisoformat(created_at)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("not a cursor of this API") from None
    if not isinstance(task_id, str) or not is_uuid(task_id):
        raise ValueError("not a cursor of this API")
    return position, task_id
