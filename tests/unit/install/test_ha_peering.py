"""HA as installed: two operator replicas, configured exactly as the chart configures each pod,
must leave exactly one active under kopf's own peering decision (kopf pauses every operator when
live peers share the highest priority)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._core.engines import peering

from codetether_operator import settings as operator_settings
from scripts.install_manifests import render_chart

PEERING_RESOURCE = peering.references.Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
PODS = ("codetether-operator-7d9f-aaaaa", "codetether-operator-7d9f-bbbbb")


def kopf_settings_for_pod(deployment: dict[str, Any], pod: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """kopf settings the operator builds in one pod: the Deployment's env, POD_ID = the pod's name."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environ = {var["name"]: var["value"] for var in container["env"] if "value" in var}
    environ["POD_ID"] = pod  # the chart's fieldRef metadata.name
    with monkeypatch.context() as patched:
        for name, value in environ.items():
            patched.setenv(name, value)
        loaded = operator_settings.load(container.get("args", []), environ)
        result = kopf.OperatorSettings()
        operator_settings.configure_kopf(result, loaded)
    return result


async def paused(identity: str, mine: Any, peers: dict[str, dict[str, Any]]) -> bool:
    conflicts = aiotoggles.Toggle()
    wakeup = asyncio.Event()
    wakeup.set()  # decide, do not sleep until the peers' deadlines
    await peering.process_peering_event(
        raw_event={"type": "MODIFIED", "object": {"metadata": {"name": mine.peering.name}, "status": peers}},
        namespace=None,
        resource=PEERING_RESOURCE,
        identity=peering.Identity(identity),
        settings=mine,
        autoclean=False,
        stream_pressure=wakeup,
        conflicts_found=conflicts,
    )
    return conflicts.is_on()


async def test_two_replicas_leave_exactly_one_active(monkeypatch: pytest.MonkeyPatch) -> None:
    [deployment] = [o for o in render_chart({"replicaCount": 2}) if o["kind"] == "Deployment"]
    replicas = {pod: kopf_settings_for_pod(deployment, pod, monkeypatch) for pod in PODS}
    assert {s.peering.name for s in replicas.values()} == {"codetether-operator"}
    assert not any(s.peering.standalone for s in replicas.values())
    now = datetime.datetime.now(datetime.UTC).isoformat()
    peers = {
        pod: {"priority": s.peering.priority, "lifetime": 60, "lastseen": now} for pod, s in replicas.items()
    }
    # kopf pauses every operator when live peers share the top priority: replicas must never tie.
    assert len({s.peering.priority for s in replicas.values()}) == len(PODS), "replicas tie on priority"
    states = {pod: await paused(pod, s, peers) for pod, s in replicas.items()}
    assert sorted(states.values()) == [False, True], states
