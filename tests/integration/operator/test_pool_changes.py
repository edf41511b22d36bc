"""What a change elsewhere does to Codebases: a rival global codebase, a scale-down, a new server.

The codebase resync is long here (60 s), so each change is seen through the operator waking the
affected codebases, not through their periodic resync.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from codetether_contract import CodetetherClient
from codetether_contract.models import Codebase
from tests.integration.operator.conftest import KubeEnv, operator_settings, pool_spec, running_operator
from tests.support.kube_client import eventually
from tests.support.server import ServerProcess

# Longer than any wait below: only a wake can explain a prompt reaction.
SLOW_RESYNC = 60.0
PROMPT = 15.0


def _settings(env: KubeEnv) -> Any:
    return dataclasses.replace(operator_settings(env.namespace), codebase_resync_seconds=SLOW_RESYNC)


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return {}


async def _codebases(server: ServerProcess) -> dict[str, Codebase]:
    async with CodetetherClient(server.url, retries=0) as api:
        return {c.id: c for c in await api.list_codebases()}


def _registered(kube: Any, ns: str, name: str) -> dict[str, Any] | None:
    obj = kube.get_codebase(ns, name)
    return obj if obj and (obj.get("status") or {}).get("phase") == "Registered" else None


def _reason(kube: Any, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    obj = kube.get_codebase(ns, name)
    return obj if _condition(obj, "Degraded").get("reason") == reason else None


def _events(kube: Any, ns: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.events(ns) if e.get("reason") == reason]


async def test_two_global_codebases_the_older_wins_and_the_other_takes_over(
    kube_env: KubeEnv, server: ServerProcess
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    async with running_operator(kube_env, _settings(kube_env)):
        kube.create_codebase(ns, "first", {"pool": "alpha", "global": True})
        await eventually(lambda: _registered(kube, ns, "first"), what="first registered")
        kube.create_codebase(ns, "second", {"pool": "alpha", "global": True, "path": "/codebases/second"})
        second = await eventually(lambda: _reason(kube, ns, "second", "GlobalConflict"), what="conflict")
        assert "'first'" in _condition(second, "Degraded")["message"]
        assert second["status"]["phase"] == "Failed" and second["status"]["workers"] == []
        warnings = await eventually(lambda: _events(kube, ns, "GlobalConflict"), what="Warning Event")
        assert warnings[0]["type"] == "Warning" and "'first'" in warnings[0]["message"]
        on_server = await _codebases(server)
        assert {cid: c.name for cid, c in on_server.items()} == {
            "global-alpha-0": "first",
            "global-alpha-1": "first",
        }

        # The winner goes: its finalizer leaves global-<pod> to the other, which takes over.
        kube.delete_codebase(ns, "first")
        await eventually(lambda: kube.get_codebase(ns, "first") is None, what="first removed")
        taken = await eventually(lambda: _registered(kube, ns, "second"), within=PROMPT, what="takeover")
        assert taken["status"]["workers"] == ["alpha-0", "alpha-1"]

        async def second_owns_them() -> bool:
            found = await _codebases(server)
            return sorted(found) == ["global-alpha-0", "global-alpha-1"] and all(
                c.name == "second" and c.path == "/codebases/second" for c in found.values()
            )

        await eventually(second_owns_them, what="registrations are the second's")

        # A third one waits; the second stops being global: the third takes over, and the second's
        # reconcile leaves global-<pod> alone (they are the third's now).
        kube.create_codebase(ns, "third", {"pool": "alpha", "global": True, "path": "/codebases/third"})
        await eventually(lambda: _reason(kube, ns, "third", "GlobalConflict"), what="third waits")
        kube._raw(
            "PATCH",
            f"/apis/codetether.run/v1alpha1/namespaces/{ns}/codebases/second",
            {"spec": {"global": False}},
            "application/merge-patch+json",
        )
        await eventually(lambda: _registered(kube, ns, "third"), within=PROMPT, what="third takes over")

        async def third_owns_them() -> bool:
            found = await _codebases(server)
            return sorted(found) == sorted(["global-alpha-0", "global-alpha-1", f"{ns}.second"]) and all(
                found[cid].path == "/codebases/third" for cid in ("global-alpha-0", "global-alpha-1")
            )

        await eventually(third_owns_them, what="global registrations are the third's, second pinned")

        for name in ("second", "third"):
            kube.delete_codebase(ns, name)
            await eventually(lambda name=name: kube.get_codebase(ns, name) is None, what=f"{name} removed")
        assert await _codebases(server) == {}  # nothing leaked


async def test_a_scale_down_re_places_codebases_at_once(kube_env: KubeEnv, server: ServerProcess) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=3))
    async with running_operator(kube_env, _settings(kube_env)):
        for i in range(3):
            kube.create_codebase(ns, f"s{i}", {"pool": "alpha"})
        for name in ("s0", "s1", "s2"):
            await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
        kube.create_codebase(ns, "pinned", {"pool": "alpha", "placement": {"ordinal": 2}})
        kube.create_codebase(ns, "shared", {"pool": "alpha", "global": True})
        for name in ("pinned", "shared"):
            await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
        on_two = [n for n in ("s0", "s1", "s2") if kube.get_codebase(ns, n)["status"]["worker"] == "alpha-2"]
        assert len(on_two) == 1

        kube.patch_pool(ns, "alpha", {"spec": {"replicas": 2}})
        moved = await eventually(
            lambda: (
                (o := kube.get_codebase(ns, on_two[0]))
                and o["status"].get("worker") in ("alpha-0", "alpha-1")
                and o
            ),
            within=PROMPT,
            what="moved off alpha-2",
        )
        await eventually(
            lambda: _reason(kube, ns, "pinned", "OrdinalOutOfRange"), within=PROMPT, what="pinned"
        )
        shared = await eventually(
            lambda: (
                (o := kube.get_codebase(ns, "shared"))
                and o["status"].get("workers") == ["alpha-0", "alpha-1"]
            ),
            within=PROMPT,
            what="global codebase on two pods",
        )
        assert shared

        async def server_agrees() -> bool:
            found = await _codebases(server)
            return (
                found.get(f"{ns}.{on_two[0]}") is not None
                and found[f"{ns}.{on_two[0]}"].worker_id == moved["status"]["worker"]
                and "global-alpha-2" not in found
            )

        await eventually(server_agrees, within=PROMPT, what="server registrations follow")
        found = await _codebases(server)
        # The pinned one keeps its registration (OrdinalOutOfRange changes nothing on the server).
        assert sorted(found) == sorted(
            [f"{ns}.s0", f"{ns}.s1", f"{ns}.s2", f"{ns}.pinned", "global-alpha-0", "global-alpha-1"]
        )


async def test_a_new_server_url_moves_registrations_and_cleans_the_old_server(
    kube_env: KubeEnv, server: ServerProcess, tmp_path: Path
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    other = ServerProcess(env={"A2A_STORAGE": "memory", "A2A_AUTH_TOKENS": ""}, log_dir=tmp_path).start()
    try:
        kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
        async with running_operator(kube_env, _settings(kube_env)):
            kube.create_codebase(ns, "one", {"pool": "alpha"})
            kube.create_codebase(ns, "shared", {"pool": "alpha", "global": True})
            for name in ("one", "shared"):
                await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
            assert len(await _codebases(server)) == 3

            kube.patch_pool(ns, "alpha", {"spec": {"server": {"url": other.url}}})

            async def moved() -> bool:
                return (
                    sorted(await _codebases(other))
                    == sorted([f"{ns}.one", "global-alpha-0", "global-alpha-1"])
                    and await _codebases(server) == {}
                )

            await eventually(moved, within=PROMPT, what="registrations moved to the new server")
            for name in ("one", "shared"):
                await eventually(
                    lambda name=name: (
                        (kube.get_codebase(ns, name) or {}).get("status", {}).get("serverUrl") == other.url
                    ),
                    what=f"{name} records the new server",
                )
            changed = await eventually(lambda: _events(kube, ns, "ServerChanged"), what="ServerChanged")
            assert all(e["type"] == "Normal" for e in changed)

            # Back to the first server while the second is down: registered there, and a Warning
            # that the second may keep its copies.
            other.kill()
            kube.patch_pool(ns, "alpha", {"spec": {"server": {"url": server.url}}})

            async def back() -> bool:
                return sorted(await _codebases(server)) == sorted(
                    [f"{ns}.one", "global-alpha-0", "global-alpha-1"]
                )

            await eventually(back, within=PROMPT, what="registered on the first server again")
            warnings = await eventually(
                lambda: _events(kube, ns, "OldServerUnreachable"), what="OldServerUnreachable"
            )
            assert warnings[0]["type"] == "Warning" and other.url in warnings[0]["message"]
            for name in ("one", "shared"):
                await eventually(
                    lambda name=name: (
                        _registered(kube, ns, name)
                        and kube.get_codebase(ns, name)["status"]["serverUrl"] == server.url
                    ),
                    what=f"{name} registered on the first server",
                )
    finally:
        other.stop()
