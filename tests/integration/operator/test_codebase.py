"""Codebase against a Kubernetes API and the real server: placement, re-registration, deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetether_contract import CodetetherClient
from tests.integration.operator.conftest import KubeEnv, pool_spec, running_operator
from tests.support.kube_client import eventually
from tests.support.server import ServerProcess


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return {}


async def _server_codebases(server: ServerProcess) -> dict[str, str | None]:
    async with CodetetherClient(server.url, retries=0) as api:
        return {c.id: c.worker_id for c in await api.list_codebases()}


def _registered(kube: Any, ns: str, name: str) -> dict[str, Any] | None:
    obj = kube.get_codebase(ns, name)
    return obj if obj and (obj.get("status") or {}).get("phase") == "Registered" else None


async def test_spread_explicit_and_global_placement(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=3))
    for i in range(3):
        kube.create_codebase(ns, f"repo-{i}", {"pool": "alpha", "description": f"repo {i}"})
    kube.create_codebase(
        ns, "pinned", {"pool": "alpha", "placement": {"ordinal": 2}, "path": "/codebases/pinned"}
    )
    kube.create_codebase(ns, "shared", {"pool": "alpha", "global": True})

    workers = []
    for i in range(3):
        obj = await eventually(lambda i=i: _registered(kube, ns, f"repo-{i}"), what=f"repo-{i} registered")
        workers.append(obj["status"]["worker"])
        assert obj["status"]["codebaseId"] == f"{ns}.repo-{i}"
    pinned = await eventually(lambda: _registered(kube, ns, "pinned"), what="pinned registered")
    assert pinned["status"]["worker"] == "alpha-2"
    per_pod = {pod: [*workers, "alpha-2"].count(pod) for pod in ("alpha-0", "alpha-1", "alpha-2")}
    assert max(per_pod.values()) - min(per_pod.values()) <= 1, per_pod  # spread, pinned one counted
    shared = await eventually(lambda: _registered(kube, ns, "shared"), what="shared registered")
    assert shared["status"]["workers"] == ["alpha-0", "alpha-1", "alpha-2"]

    on_server = await _server_codebases(server)
    for i, worker in enumerate(workers):
        assert on_server[f"{ns}.repo-{i}"] == worker
    assert on_server[f"{ns}.pinned"] == "alpha-2"
    for pod in ("alpha-0", "alpha-1", "alpha-2"):
        assert on_server[f"global-{pod}"] == pod


async def test_deleting_a_codebase_deregisters_it(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    kube.create_codebase(ns, "gone", {"pool": "alpha"})
    await eventually(lambda: _registered(kube, ns, "gone"), what="registered")
    assert f"{ns}.gone" in await _server_codebases(server)
    kube.delete_codebase(ns, "gone")
    await eventually(lambda: kube.get_codebase(ns, "gone") is None, what="object removed")
    assert f"{ns}.gone" not in await _server_codebases(server)


async def test_server_restarting_empty_gets_registrations_back(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    kube.create_codebase(ns, "one", {"pool": "alpha"})
    kube.create_codebase(ns, "two", {"pool": "alpha", "placement": {"pod": "alpha-1"}})
    await eventually(lambda: _registered(kube, ns, "one") and _registered(kube, ns, "two"), what="registered")
    server.kill()
    server.start()  # in-memory storage: it comes back empty
    assert await _server_codebases(server) == {}

    async def both_back() -> bool:
        found = await _server_codebases(server)
        return f"{ns}.one" in found and found.get(f"{ns}.two") == "alpha-1"

    await eventually(both_back, what="registrations back")
    await eventually(
        lambda: any(e.get("reason") == "Reregistered" for e in kube.events(ns)), what="Reregistered event"
    )


async def test_scale_down_moves_codebases_off_removed_pods(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=3))
    for i in range(3):
        kube.create_codebase(ns, f"s{i}", {"pool": "alpha"})
    for name in ("s0", "s1", "s2"):
        await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
    kube.create_codebase(ns, "c", {"pool": "alpha", "placement": {"ordinal": 2}})
    for name in ("c",):
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
        what="moved",
    )
    assert (await _server_codebases(server))[f"{ns}.{on_two[0]}"] == moved["status"]["worker"]
    await eventually(
        lambda: any(e.get("reason") == "Replaced" for e in kube.events(ns)), what="Replaced event"
    )
    # The pinned one cannot move: it says why, and is no longer registered for a pod that is gone.
    pinned = await eventually(
        lambda: (
            (o := kube.get_codebase(ns, "c"))
            and _condition(o, "Degraded").get("reason") == "OrdinalOutOfRange"
            and o
        ),
        what="OrdinalOutOfRange",
    )
    assert "replicas: 2" in _condition(pinned, "Degraded")["message"]


async def test_bad_references_say_why_and_register_nothing(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    kube.create_codebase(ns, "orphan", {"pool": "nosuchpool"})
    kube.create_codebase(ns, "toofar", {"pool": "alpha", "placement": {"ordinal": 5}})
    orphan = await eventually(
        lambda: (
            (o := kube.get_codebase(ns, "orphan")) and _condition(o, "Degraded").get("status") == "True" and o
        ),
        what="orphan degraded",
    )
    assert _condition(orphan, "Degraded")["reason"] == "PoolNotFound"
    assert "'nosuchpool'" in _condition(orphan, "Degraded")["message"]
    toofar = await eventually(
        lambda: (
            (o := kube.get_codebase(ns, "toofar")) and _condition(o, "Degraded").get("status") == "True" and o
        ),
        what="toofar degraded",
    )
    assert _condition(toofar, "Degraded")["reason"] == "OrdinalOutOfRange"
    assert toofar["status"]["phase"] == "Failed"
    assert await _server_codebases(server) == {}
    # The pool grows: the pinned codebase becomes valid and registers.
    kube.patch_pool(ns, "alpha", {"spec": {"replicas": 6}})
    ok = await eventually(lambda: _registered(kube, ns, "toofar"), what="registered after scale-up")
    assert ok["status"]["worker"] == "alpha-5"


async def test_finalizer_never_wedges_when_server_and_pool_are_gone(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=1))
    kube.create_codebase(ns, "stuck", {"pool": "alpha"})
    kube.create_codebase(ns, "slow", {"pool": "alpha"})
    await eventually(
        lambda: _registered(kube, ns, "stuck") and _registered(kube, ns, "slow"), what="registered"
    )
    server.kill()
    # Pool still there, server down: released after the bounded wait (6 s in these tests).
    kube.delete_codebase(ns, "slow")
    # Pool gone too: released at once.
    kube.get(f"/apis/codetether.run/v1alpha1/namespaces/{ns}/codetetherworkerpools/alpha")
    kube._raw("DELETE", f"/apis/codetether.run/v1alpha1/namespaces/{ns}/codetetherworkerpools/alpha")
    await eventually(lambda: kube.get_pool(ns, "alpha") is None, what="pool gone")
    kube.delete_codebase(ns, "stuck")
    await eventually(lambda: kube.get_codebase(ns, "stuck") is None, what="stuck released")
    await eventually(lambda: kube.get_codebase(ns, "slow") is None, within=30, what="slow released")
    warnings = [e for e in kube.events(ns) if e.get("reason") == "DeregistrationAbandoned"]
    assert len(warnings) >= 2 and all(e["type"] == "Warning" for e in warnings)


async def test_deleting_the_namespace_finishes_and_removes_registrations(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    for i in range(3):
        kube.create_codebase(ns, f"repo-{i}", {"pool": "alpha"})
    kube.create_codebase(ns, "shared", {"pool": "alpha", "global": True})
    for name in ("repo-0", "repo-1", "repo-2", "shared"):
        await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
    assert len(await _server_codebases(server)) == 5
    kube.core.delete_namespace(ns)
    await eventually(lambda: kube.get(f"/api/v1/namespaces/{ns}") is None, what="namespace gone")
    assert await _server_codebases(server) == {}


async def test_deleting_the_namespace_finishes_while_the_server_is_down(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    for i in range(2):
        kube.create_codebase(ns, f"repo-{i}", {"pool": "alpha"})
    for name in ("repo-0", "repo-1"):
        await eventually(lambda name=name: _registered(kube, ns, name), what=f"{name} registered")
    server.kill()
    kube.core.delete_namespace(ns)
    # Bounded by the finalizer timeout (6 s here) at worst; never stuck.
    await eventually(lambda: kube.get(f"/api/v1/namespaces/{ns}") is None, within=40, what="namespace gone")


async def test_token_from_the_secret_is_used_and_a_wrong_one_is_reported(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    secured = ServerProcess(
        env={"A2A_STORAGE": "memory", "A2A_AUTH_TOKENS": "s3cret"}, log_dir=tmp_path
    ).start()
    try:
        kube.create_secret(ns, "good", {"token": "s3cret"})
        kube.create_secret(ns, "bad", {"token": "wrong"})
        auth = {"url": secured.url, "authSecretRef": {"name": "good"}}
        kube.create_pool(ns, "alpha", pool_spec(secured.url, replicas=1, server=auth))
        kube.create_pool(
            ns, "beta", pool_spec(secured.url, replicas=1, server={**auth, "authSecretRef": {"name": "bad"}})
        )
        kube.create_codebase(ns, "ok", {"pool": "alpha"})
        kube.create_codebase(ns, "refused", {"pool": "beta"})
        async with running_operator(kube_env):
            await eventually(lambda: _registered(kube, ns, "ok"), what="registered with the token")
            refused = await eventually(
                lambda: (
                    (o := kube.get_codebase(ns, "refused"))
                    and _condition(o, "Degraded").get("reason") == "ServerRejected"
                    and o
                ),
                what="ServerRejected",
            )
            assert "authSecretRef" in _condition(refused, "Degraded")["message"]
            sts = kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/alpha")
            env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["A2A_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "good", "key": "token"}
        async with CodetetherClient(secured.url, token="s3cret") as api:
            assert [c.id for c in await api.list_codebases()] == [f"{ns}.ok"]
    finally:
        secured.stop()
