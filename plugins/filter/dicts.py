# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def differing_keys(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Keys of desired whose value differs from actual's (missing in actual counts as different)."""
    return [key for key, value in desired.items() if key not in actual or actual[key] != value]


class FilterModule:
    def filters(self):
        return {"differing_keys": differing_keys}
