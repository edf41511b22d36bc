"""The kopf index functions: an object that stops matching must answer {} (kopf keeps the old entry on None)."""

from __future__ import annotations

from codetether_operator.handlers.codebase import codebase_globals, codebase_servers, codebase_workers
from codetether_operator.plan import GlobalClaim

META = {"creationTimestamp": "2026-01-01T00:00:00Z"}


def test_global_claims_leave_the_index_when_no_longer_global_or_deleting() -> None:
    spec = {"pool": "alpha", "global": True}
    status = {"workers": ["alpha-0"]}
    assert codebase_globals("team", "repo", spec, META, status) == {
        ("team", "alpha"): GlobalClaim("2026-01-01T00:00:00Z", "repo", ("alpha-0",))
    }
    assert codebase_globals("team", "repo", {"pool": "alpha"}, META, status) == {}
    deleting = {**META, "deletionTimestamp": "2026-01-02T00:00:00Z"}
    assert codebase_globals("team", "repo", spec, deleting, status) == {}


def test_placed_and_server_entries_leave_the_index_when_they_no_longer_apply() -> None:
    assert codebase_workers("team", "repo", {"pool": "alpha"}, {"worker": "alpha-1"}) == {
        ("team", "alpha"): ("repo", "alpha-1")
    }
    assert codebase_workers("team", "repo", {"pool": "alpha", "global": True}, {"worker": "alpha-1"}) == {}
    assert codebase_servers("team", "repo", {"pool": "alpha"}, {"serverUrl": "http://s"}) == {
        ("team", "alpha"): ("repo", "http://s")
    }
    assert codebase_servers("team", "repo", {"pool": "alpha"}, {}) == {}
