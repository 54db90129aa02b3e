from __future__ import annotations

import pytest

from ansible_collections.tenantforge.platform.plugins.filter.networks import FilterModule
from ansible_collections.tenantforge.platform.plugins.test.networks import TestModule as NetworkTests

TESTS = NetworkTests().tests()
overlapping_networks = FilterModule().filters()["overlapping_networks"]


@pytest.mark.parametrize("value", ["10.0.0.0/16", "192.0.2.0/24", "0.0.0.0/0", "10.1.2.3/32"])
def test_networks_in_cidr_form_are_accepted(value: str) -> None:
    assert TESTS["ipv4_network"](value) is True


@pytest.mark.parametrize(
    "value", ["10.0.0.1/16", "10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "fe80::/10", "", None, 42, "a/b"]
)
def test_anything_else_is_refused(value: object) -> None:
    assert TESTS["ipv4_network"](value) is False


def test_subnet_of() -> None:
    assert TESTS["subnet_of"]("10.42.1.0/24", "10.42.0.0/16") is True
    assert TESTS["subnet_of"]("10.43.0.0/24", "10.42.0.0/16") is False
    assert TESTS["subnet_of"]("10.42.0.0/15", "10.42.0.0/16") is False
    assert TESTS["subnet_of"]("garbage", "10.42.0.0/16") is False


def test_overlapping_networks_lists_each_clashing_pair() -> None:
    assert overlapping_networks(["10.0.0.0/24", "10.0.1.0/24"]) == []
    assert overlapping_networks(["10.0.0.0/24", "10.0.0.128/25", "10.0.1.0/24", "10.0.0.0/16"]) == [
        ["10.0.0.0/24", "10.0.0.128/25"],
        ["10.0.0.0/24", "10.0.0.0/16"],
        ["10.0.0.128/25", "10.0.0.0/16"],
        ["10.0.1.0/24", "10.0.0.0/16"],
    ]
