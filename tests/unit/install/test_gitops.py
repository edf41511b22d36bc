"""GitOps pieces: the Argo CD Lua health check run in Lua 5.1 (the dialect of Argo CD's
gopher-lua) against objects whose status the operator's own planner wrote, and the Argo CD /
Flux examples rendered through the chart."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from codetether_contract.models import Worker, WorkerStatus
from codetether_operator import build, plan
from codetether_operator.models import parse_codebase_spec, parse_pool_spec
from scripts.install_manifests import ROOT, chart_crds, render_chart
from tests.unit.install.schemas import crd_schemas, validate_object

GITOPS = ROOT / "deploy" / "gitops"
HEALTH_LUA = GITOPS / "argocd" / "health.lua"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua the way Argo CD does: the object as the global `obj`, a table returned."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(v) for v in value])
        return value

    runtime.globals().obj = to_lua(obj)
    result = runtime.execute(HEALTH_LUA.read_text())
    return {"status": result["status"], "message": result["message"]}


# ----------------------------------------------------------------- objects in each state


def as_stored(status: dict[str, Any]) -> dict[str, Any]:
    """The status as the API server stores it: kopf writes it as a JSON merge patch, where a null
    removes the field."""
    return {
        key: as_stored(value) if isinstance(value, dict) else value
        for key, value in status.items()
        if value is not None
    }


def pool_object(generation: int = 1, replicas: int = 3, auth: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "image": "worker:1",
        "server": {"url": "http://codetether-server:8000"},
    }
    if auth:
        spec["server"]["authSecretRef"] = {"name": "token"}
    return {
        "apiVersion": "codetether.run/v1alpha1",
        "kind": "CodetetherWorkerPool",
        "metadata": {"name": "workers", "namespace": "team", "uid": "u1", "generation": generation},
        "spec": spec,
    }


def ready_pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def registered(name: str) -> Worker:
    return Worker(
        id=name,
        name=name,
        status=WorkerStatus.ACTIVE,
        last_heartbeat=NOW,
        codebases=0,
        registered_at=NOW,
    )


def planned_pool(
    pool: dict[str, Any],
    *,
    ready: int,
    registered_workers: int,
    server: plan.ServerView | None = None,
) -> dict[str, Any]:
    spec = parse_pool_spec(pool["spec"])
    pods = [ready_pod(build.pod_name("workers", i)) for i in range(ready)]
    view = server or plan.ServerView(
        workers=[registered(build.pod_name("workers", i)) for i in range(registered_workers)]
    )
    observed: dict[str, dict[str, Any] | None] = {c["kind"]: c for c in build.build_children(pool, spec)}
    result = plan.plan_pool(pool, spec, None, observed=observed, secret=None, pods=pods, server=view, now=NOW)
    return {**pool, "status": as_stored(result.status)}


def pool_states() -> dict[str, tuple[dict[str, Any], str]]:
    fresh = pool_object()
    healthy = planned_pool(pool_object(), ready=3, registered_workers=3)
    stale = copy.deepcopy(healthy)
    stale["metadata"]["generation"] = 2
    missing_secret_pool = pool_object(auth=True)
    spec = parse_pool_spec(missing_secret_pool["spec"])
    missing_secret = {
        **missing_secret_pool,
        "status": as_stored(
            plan.plan_pool(
                missing_secret_pool,
                spec,
                None,
                observed={},
                secret=None,
                pods=[],
                server=plan.ServerView(workers=[]),
                now=NOW,
            ).status
        ),
    }
    return {
        "no status yet": (fresh, "Progressing"),
        "pods starting": (planned_pool(pool_object(), ready=1, registered_workers=1), "Progressing"),
        "pods ready, not registered": (
            planned_pool(pool_object(), ready=3, registered_workers=1),
            "Progressing",
        ),
        "all workers ready": (healthy, "Healthy"),
        "scaled to zero": (planned_pool(pool_object(replicas=0), ready=0, registered_workers=0), "Healthy"),
        "edited, not yet observed": (stale, "Progressing"),
        "secret missing": (missing_secret, "Degraded"),
        "server unreachable": (
            planned_pool(
                pool_object(), ready=3, registered_workers=0, server=plan.ServerView(error="refused")
            ),
            "Degraded",
        ),
    }


def codebase_object(spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "codetether.run/v1alpha1",
        "kind": "Codebase",
        "metadata": {"name": "api", "namespace": "team", "generation": generation},
        "spec": spec,
    }


def planned_codebase(
    codebase: dict[str, Any], *, pool: dict[str, Any] | None, server: plan.CodebaseServerView
) -> dict[str, Any]:
    spec = parse_codebase_spec(codebase["spec"])
    pool_spec = parse_pool_spec(pool["spec"]) if pool else None
    result = plan.plan_codebase(
        codebase,
        spec,
        None,
        pool=pool,
        pool_spec=pool_spec,
        counts={},
        ready_pods={build.pod_name("workers", 0)},
        server=server,
        server_url="http://codetether-server:8000",
        now=NOW,
    )
    return {**codebase, "status": as_stored(result.status)}


def codebase_states() -> dict[str, tuple[dict[str, Any], str]]:
    reachable = plan.CodebaseServerView(known_ids=frozenset())
    registered_codebase = planned_codebase(
        codebase_object({"pool": "workers"}), pool=pool_object(), server=reachable
    )
    stale = copy.deepcopy(registered_codebase)
    stale["metadata"]["generation"] = 2
    return {
        "no status yet": (codebase_object({"pool": "workers"}), "Progressing"),
        "registered": (registered_codebase, "Healthy"),
        "global, registered": (
            planned_codebase(
                codebase_object({"pool": "workers", "global": True}), pool=pool_object(), server=reachable
            ),
            "Healthy",
        ),
        "edited, not yet observed": (stale, "Progressing"),
        "pool missing": (
            planned_codebase(codebase_object({"pool": "nope"}), pool=None, server=reachable),
            "Degraded",
        ),
        "ordinal beyond the pool": (
            planned_codebase(
                codebase_object({"pool": "workers", "placement": {"ordinal": 7}}),
                pool=pool_object(),
                server=reachable,
            ),
            "Degraded",
        ),
        "server unreachable": (
            planned_codebase(
                codebase_object({"pool": "workers"}),
                pool=pool_object(),
                server=plan.CodebaseServerView(error="connection refused"),
            ),
            "Degraded",
        ),
    }


@pytest.mark.parametrize("state", list(pool_states()))
def test_pool_health(state: str) -> None:
    obj, expected = pool_states()[state]
    validate_object(obj, crd_schemas())  # the sample is a pool the API server would store
    health = argocd_health(obj)
    assert health["status"] == expected, health
    assert health["message"]


@pytest.mark.parametrize("state", list(codebase_states()))
def test_codebase_health(state: str) -> None:
    obj, expected = codebase_states()[state]
    validate_object(obj, crd_schemas())
    health = argocd_health(obj)
    assert health["status"] == expected, health
    assert health["message"]


def test_degraded_message_carries_the_reason() -> None:
    obj, _ = pool_states()["secret missing"]
    assert argocd_health(obj)["message"].startswith(plan.SECRET_NOT_FOUND + ": ")


def test_ready_false_in_a_failed_phase_is_degraded_even_without_a_degraded_condition() -> None:
    obj = codebase_object({"pool": "workers"})
    obj["status"] = {
        "phase": "Failed",
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "X", "message": "m"}],
    }
    assert argocd_health(obj) == {"status": "Degraded", "message": "X: m"}


def test_argocd_config_embeds_the_current_script() -> None:
    check = subprocess.run([sys.executable, "scripts/argocd_health_config.py", "--check"], cwd=ROOT)
    assert check.returncode == 0
    config = yaml.safe_load((GITOPS / "argocd" / "argocd-cm-health.yaml").read_text())
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in render_crd_kinds()}
    keys = {
        f"resource.customizations.health.{group}_{kind}" for group, kind in crds if group == "codetether.run"
    }
    assert set(config["data"]) == keys
    assert all(script == HEALTH_LUA.read_text() for script in config["data"].values())


def render_crd_kinds() -> list[dict[str, Any]]:
    return chart_crds()


def scale_pointer() -> str:
    [pool_crd] = [c for c in render_crd_kinds() if c["spec"]["names"]["kind"] == "CodetetherWorkerPool"]
    [version] = [v for v in pool_crd["spec"]["versions"] if v.get("storage")]
    return "/" + version["subresources"]["scale"]["specReplicasPath"].lstrip(".").replace(".", "/")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_argocd_application_installs_the_chart_and_ignores_autoscaled_replicas() -> None:
    [app] = load(GITOPS / "argocd" / "application.yaml")
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").exists()
    objects = render_chart(source["helm"]["valuesObject"], release=source["helm"]["releaseName"])
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
    assert any(o["kind"] == "CodetetherWorkerPool" for o in objects)
    [ignored] = app["spec"]["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"]) == ("codetether.run", "CodetetherWorkerPool")
    assert ignored["jsonPointers"] == [scale_pointer()]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_flux_helmrelease_installs_the_chart_and_ignores_autoscaled_replicas() -> None:
    [source] = load(GITOPS / "flux" / "gitrepository.yaml")
    [release] = load(GITOPS / "flux" / "helmrelease.yaml")
    chart = release["spec"]["chart"]["spec"]
    assert (ROOT / chart["chart"] / "Chart.yaml").exists()
    assert chart["sourceRef"] == {
        "kind": source["kind"],
        "name": source["metadata"]["name"],
        "namespace": "flux-system",
    }
    objects = render_chart(release["spec"]["values"], release=release["spec"]["releaseName"])
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
    assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == "CreateReplace"
    [ignore] = release["spec"]["driftDetection"]["ignore"]
    assert ignore["paths"] == [scale_pointer()]
    assert ignore["target"] == {"group": "codetether.run", "kind": "CodetetherWorkerPool"}


def test_autoscaler_example_targets_the_pool_scale_subresource() -> None:
    pool, hpa = load(GITOPS / "examples" / "pool-with-hpa.yaml")
    crds = crd_schemas()
    validate_object(pool, crds)
    validate_object(hpa, crds)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        pool["apiVersion"],
        pool["kind"],
        pool["metadata"]["name"],
    )
    assert scale_pointer() == "/spec/replicas"
