"""Counting a module's AWS API calls in its own process: a ``sitecustomize`` on PYTHONPATH logs every
botocore operation to the file named by ``CALL_LOG`` (nothing is logged without it)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

CALL_LOG = "TENANTFORGE_TEST_CALL_LOG"

SITECUSTOMIZE = f'''\
"""Written by tests/api_calls.py: logs every botocore operation of this process."""
import os

_LOG = os.environ.get("{CALL_LOG}")
if _LOG:
    try:
        from botocore.client import BaseClient
    except ImportError:
        pass
    else:
        _make_api_call = BaseClient._make_api_call

        def _logged(self, operation_name, api_params):
            with open(_LOG, "a", encoding="utf-8") as handle:
                handle.write(operation_name + "\\n")
            return _make_api_call(self, operation_name, api_params)

        BaseClient._make_api_call = _logged
'''


def install_call_logger(directory: Path) -> str:
    """Writes the hook into ``directory`` (created) and returns the PYTHONPATH that loads it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))


def logged_calls(log: Path) -> Counter[str]:
    """The operations a run logged to ``log``, counted (none when it made no call)."""
    return Counter(log.read_text().split()) if log.exists() else Counter()
