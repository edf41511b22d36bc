#!/usr/bin/env python3
"""Install (or upgrade) charts/codetether-worker into a cluster with Helm's Go SDK (helm-python-sdk),
so the end-to-end runner needs no helm binary. Used by run.sh; works against any kubeconfig."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "codetether-worker"


def e2e_values(operator_image: str, pull_policy: str, pool_namespace: str, replicas: int) -> dict[str, Any]:
    repository, _, tag = operator_image.rpartition(":")
    return {
        "fullnameOverride": "codetether-operator",
        "replicaCount": replicas,
        "image": {"repository": repository, "tag": tag, "pullPolicy": pull_policy},
        "operator": {"logLevel": "debug"},
        "workerServiceAccount": {"name": "codetether-worker", "extraNamespaces": [pool_namespace]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="codetether-system", help="namespace of the operator")
    parser.add_argument("--release", default="codetether")
    parser.add_argument("--operator-image", required=True, help="repository:tag of the operator image")
    parser.add_argument("--pull-policy", default="IfNotPresent", choices=["Always", "IfNotPresent", "Never"])
    parser.add_argument(
        "--pool-namespace", default="codetether-e2e", help="namespace the suite creates pools in"
    )
    parser.add_argument("--replicas", type=int, default=2, help="operator replicas (2: exercises peering)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds to wait for the release")
    args = parser.parse_args(argv)
    values = e2e_values(args.operator_image, args.pull_policy, args.pool_namespace, args.replicas)
    with helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace) as config:
        existing = {release["name"] for release in config.list(name_filter=f"^{args.release}$")}
        if args.release in existing:
            release = config.upgrade(
                str(CHART),
                args.release,
                values,
                namespace=args.namespace,
                wait="watcher",
                timeout=args.timeout,
            )
        else:
            release = config.install(
                str(CHART),
                args.release,
                values,
                namespace=args.namespace,
                create_namespace=True,
                wait="watcher",
                timeout=args.timeout,
            )
    print(f"release {release.get('name')} revision {release.get('revision')}: {release.get('status')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
