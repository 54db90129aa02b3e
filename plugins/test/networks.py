# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

from ansible_collections.tenantforge.platform.plugins.module_utils.networks import (
    is_subnet_of,
    parse_ipv4_network,
)


def ipv4_network(value):
    """True for an IPv4 network in CIDR form with no host bits set ('10.0.0.0/16')."""
    return parse_ipv4_network(value) is not None


def subnet_of(value, parent):
    """True when the network value lies inside the network parent."""
    return is_subnet_of(value, parent)


class TestModule:
    def tests(self):
        return {"ipv4_network": ipv4_network, "subnet_of": subnet_of}
