"""The operator against a Kubernetes API and a real CodeTether server.

By default the Kubernetes API is kmock's emulator (``tests/support/kube_emulator.py``); set
``OPERATOR_TEST_KUBECONFIG`` to run the same tests against a real cluster (CRDs get installed,
each test gets its own namespace, pods come from the real StatefulSet controller).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from codetether_operator.__main__ import run
from codetether_operator.kube import Kube
from codetether_operator.settings import OperatorSettings
from tests.support.kube_client import KubeTestClient
from tests.support.kube_emulator import KubeEmulatorThread
from tests.support.server import ServerProcess


@dataclass
class KubeEnv:
    kubeconfig: Path
    client: KubeTestClient
    namespace: str
    emulated: bool


@pytest.fixture
def kube_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEnv]:
    namespace = f"ct-{uuid.uuid4().hex[:8]}"
    real = os.environ.get("OPERATOR_TEST_KUBECONFIG")
    emulator = None
    if real:
        kubeconfig = Path(real)
    else:
        emulator = KubeEmulatorThread().start()
        kubeconfig = emulator.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = KubeTestClient(kubeconfig)
    try:
        client.install_crds()
        client.create_namespace(namespace)
        yield KubeEnv(kubeconfig, client, namespace, emulated=emulator is not None)
    finally:
        if real:
            with contextlib.suppress(Exception):
                client.core.delete_namespace(namespace)
        client.close()
        if emulator is not None:
            emulator.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(env={"A2A_STORAGE": "memory", "A2A_AUTH_TOKENS": ""}, log_dir=tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def operator_settings(namespace: str) -> OperatorSettings:
    return OperatorSettings(
        namespaces=[namespace],
        standalone=True,
        metrics_port=0,
        liveness_port=0,
        pool_resync_seconds=0.5,
        codebase_resync_seconds=1.0,
        server_timeout_seconds=2.0,
        finalizer_timeout_seconds=6.0,
    )


@contextlib.asynccontextmanager
async def running_operator(env: KubeEnv, settings: OperatorSettings | None = None) -> AsyncIterator[None]:
    """The operator in this event loop, stopped (and awaited) on exit."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run(
            settings or operator_settings(env.namespace),
            stop_flag=stop,
            ready_flag=ready,
            kube=Kube.from_environment(str(env.kubeconfig)),
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


@pytest.fixture
async def operator(kube_env: KubeEnv) -> AsyncIterator[None]:
    async with running_operator(kube_env):
        yield


def pool_spec(server_url: str, replicas: int = 3, **extra: object) -> dict[str, object]:
    return {"replicas": replicas, "image": "codetether-worker:test", "server": {"url": server_url}, **extra}
