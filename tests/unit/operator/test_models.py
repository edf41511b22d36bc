"""Spec validation names the bad field."""

from __future__ import annotations

import pytest

from codetether_operator.models import SpecError, check_pool_name, parse_codebase_spec, parse_pool_spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"image": "w", "server": {"url": "ftp://x"}}, "spec.server.url"),
        ({"image": "w", "server": {"url": "http://x"}, "replicas": -1}, "spec.replicas"),
        ({"image": "w", "server": {"url": "http://x", "redisUrl": "http://r"}}, "spec.server.redisUrl"),
        (
            {"image": "w", "server": {"url": "http://x"}, "imagePullPolicy": "Sometimes"},
            "spec.imagePullPolicy",
        ),
        ({"server": {"url": "http://x"}}, "spec.image"),
    ],
)
def test_bad_pool_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_pool_spec(spec)
    assert field in str(error.value)


def test_pool_name_length_keeps_pod_names_valid() -> None:
    check_pool_name("a" * 52)
    with pytest.raises(SpecError, match=r"metadata\.name"):
        check_pool_name("a" * 53)
    with pytest.raises(SpecError, match="DNS-1035"):
        check_pool_name("1abc")


def test_codebase_placement_rules() -> None:
    with pytest.raises(SpecError, match="not both"):
        parse_codebase_spec({"pool": "p", "placement": {"ordinal": 1, "pod": "p-1"}})
    with pytest.raises(SpecError, match="global"):
        parse_codebase_spec({"pool": "p", "global": True, "placement": {"ordinal": 0}})
    with pytest.raises(SpecError, match=r"spec\.git\.url"):
        parse_codebase_spec({"pool": "p", "git": {"url": "not a url"}})
    assert parse_codebase_spec({"pool": "p", "global": True}).global_ is True
