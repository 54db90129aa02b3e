# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Secrets Manager calls shared by our modules: retried, with errors that never echo a request."""

from __future__ import annotations

from typing import Any

try:  # noqa: SIM105 - the amazon.aws pattern: AnsibleAWSModule reports a missing botocore
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code


def aws_error_text(exc: Exception) -> str:
    """Error code and message only: request parameters (values) are never echoed."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
    return type(exc).__name__


def api_name(operation: str) -> str:
    """The API's name of a boto3 method: get_secret_value -> GetSecretValue."""
    return "".join(part.capitalize() for part in operation.split("_"))


class SecretsManagerClient:
    """Every call goes through AWSRetry (``aws_retry=True``); AWS errors become ``error``.

    Subclasses set ``error`` to their module's domain exception, which ``main()`` turns into one
    ``fail_json``.
    """

    error: type[Exception] = RuntimeError

    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, operation: str, what: str, **kwargs: Any) -> dict:
        try:
            return getattr(self.client, operation)(aws_retry=True, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.error(f"{api_name(operation)} failed for {what}: {aws_error_text(exc)}") from None

    def describe(self, secret_id: str) -> dict | None:
        """DescribeSecret; None when the secret does not exist."""
        try:
            return self.client.describe_secret(aws_retry=True, SecretId=secret_id)
        except is_boto3_error_code("ResourceNotFoundException"):
            return None
        except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
            raise self.error(f"DescribeSecret failed for secret {secret_id}: {aws_error_text(exc)}") from None
