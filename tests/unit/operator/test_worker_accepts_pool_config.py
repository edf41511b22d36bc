"""What the operator writes into a pod (ConfigMap + env) is a configuration the worker accepts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from codetether_operator import build
from codetether_operator.models import parse_pool_spec
from codetether_worker.config import load_config

POOL: dict[str, Any] = {"metadata": {"name": "alpha", "namespace": "team", "uid": "u-1"}}


def _pod_environment(sts: dict[str, Any], config_dir: Path) -> dict[str, str]:
    """Resolve the container's env the way the kubelet would for pod alpha-1."""
    environ: dict[str, str] = {"PATH": os.path.dirname(sys.executable)}
    for var in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            environ[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            environ[var["name"]] = "alpha-1"
        elif "secretKeyRef" in var["valueFrom"]:
            environ[var["name"]] = "s3cret"
    environ["A2A_CONFIG"] = str(config_dir / build.CONFIG_FILE)
    environ["A2A_AGENT_BIN"] = "codetether-example-agent"  # the image sets it
    return environ


def test_pool_config_loads_in_the_worker(tmp_path: Path) -> None:
    spec = parse_pool_spec(
        {
            "image": "w:1",
            "server": {"url": "http://s:8000", "authSecretRef": {"name": "tok"}},
            "pollIntervalSeconds": 7,
            "maxConcurrentTasks": 3,
            "capabilities": ["agent", "gpu"],
        }
    )
    config_map = build.build_config_map(POOL, spec)
    (tmp_path / build.CONFIG_FILE).write_text(config_map["data"][build.CONFIG_FILE])
    environ = _pod_environment(build.build_statefulset(POOL, spec), tmp_path)

    config = load_config({}, environ)

    assert config.worker_name == "alpha-1"
    assert config.server_url == "http://s:8000"
    assert config.redis_url is None  # no Redis in the pool: polling, not the seed's localhost default
    assert config.poll_interval == 7
    assert config.max_concurrent_tasks == 3
    assert tuple(config.capabilities) == ("agent", "gpu")
    assert config.auth_token == "s3cret"
    assert config.health_port == spec.health_port
    assert str(config.agent_storage) == "/codebases/.codetether/storage"
    assert config.warnings == ()
