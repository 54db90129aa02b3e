# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

from ansible_collections.tenantforge.platform.plugins.module_utils.networks import overlapping_pairs


class FilterModule:
    def filters(self):
        return {"overlapping_networks": overlapping_pairs}
