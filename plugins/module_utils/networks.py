# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""IPv4 network checks shared by the test and filter plugins (standard library only)."""

from __future__ import annotations

import ipaddress
from itertools import combinations
from typing import Any


def parse_ipv4_network(value: Any) -> ipaddress.IPv4Network | None:
    """The network written as 'a.b.c.d/len' with no host bits set, or None."""
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return None


def is_subnet_of(value: Any, parent: Any) -> bool:
    child_net, parent_net = parse_ipv4_network(value), parse_ipv4_network(parent)
    if child_net is None or parent_net is None:
        return False
    return child_net.subnet_of(parent_net)


def overlapping_pairs(values: list[Any]) -> list[list[str]]:
    """Pairs of networks in values that overlap (unparseable entries are ignored)."""
    nets = [(value, parse_ipv4_network(value)) for value in values]
    parsed = [(value, net) for value, net in nets if net is not None]
    return [[a, b] for (a, net_a), (b, net_b) in combinations(parsed, 2) if net_a.overlaps(net_b)]
