"""Adoption of existing objects, drift correction, and the operator as a process (probes, metrics)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx

from tests.integration.operator.conftest import KubeEnv, pool_spec
from tests.support.kube_client import eventually
from tests.support.server import ServerProcess
from tests.support.services import free_port


async def test_existing_child_is_adopted_and_drift_corrected(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.core.create_namespaced_config_map(
        ns,
        {"metadata": {"name": "alpha-config", "labels": {"owner": "someone"}}, "data": {"config.json": "{}"}},
    )
    kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=2))
    config_map = await eventually(
        lambda: (
            (c := kube.get(f"/api/v1/namespaces/{ns}/configmaps/alpha-config"))
            and c["metadata"].get("ownerReferences")
            and c
        ),
        what="ConfigMap adopted",
    )
    assert config_map["metadata"]["ownerReferences"][0]["name"] == "alpha"
    assert '"server_url"' in config_map["data"]["config.json"]

    path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/alpha"
    await eventually(lambda: kube.get(path), what="StatefulSet")
    kube._raw("PATCH", path, {"spec": {"replicas": 7}}, "application/merge-patch+json")  # someone edits it
    await eventually(lambda: kube.get(path)["spec"]["replicas"] == 2, what="drift corrected")


def _start_operator(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "codetether_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def test_operator_process_serves_probes_and_metrics_and_stops_on_sigterm(
    kube_env: KubeEnv, server: ServerProcess, tmp_path: Path
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    metrics_port, liveness_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_env.kubeconfig),
        "CODETETHER_OPERATOR_NAMESPACES": ns,
        "CODETETHER_OPERATOR_STANDALONE": "true",
        "CODETETHER_OPERATOR_METRICS_PORT": str(metrics_port),
        "CODETETHER_OPERATOR_LIVENESS_PORT": str(liveness_port),
    }
    log = (tmp_path / "operator.log").open("wb")
    process = _start_operator(env, log)
    try:
        kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=1))
        await eventually(
            lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/alpha"), what="StatefulSet"
        )

        async def get(port: int, path: str) -> str | None:
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{port}{path}")
            except httpx.HTTPError:
                return None
            return response.text if response.status_code == 200 else None

        await eventually(lambda: get(liveness_port, "/healthz"), what="liveness")
        text = await eventually(lambda: get(metrics_port, "/metrics"), what="metrics")
        assert 'codetether_operator_reconciles_total{kind="pool",result="ok"}' in text
        assert "codetether_operator_reconcile_duration_seconds_bucket" in text
        assert 'codetether_operator_pools{phase="Progressing"} 1.0' in text
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.wait, 30)
        assert exit_code == 0, (tmp_path / "operator.log").read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
