"""Value sets the chart is rendered with: the defaults and the combinations users are told about."""

from __future__ import annotations

from typing import Any

EVERYTHING_ON: dict[str, Any] = {
    "replicaCount": 2,
    "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {
        "logLevel": "debug",
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraArgs": ["--verbose"],
    },
    "serviceAccount": {"annotations": {"example.com/role": "operator"}},
    "workerServiceAccount": {"annotations": {"example.com/role": "worker"}, "extraNamespaces": ["team-a"]},
    "podAnnotations": {"example.com/scrape": "true"},
    "podLabels": {"team": "platform"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        }
    ],
    "priorityClassName": "system-cluster-critical",
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True, "namespaces": ["default", "team-a"]},
    },
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "apiServerCidrs": ["10.96.0.1/32"],
        "server": {"to": [{"podSelector": {"matchLabels": {"app": "codetether-server"}}}]},
        "extraEgress": [{"ports": [{"port": 6379, "protocol": "TCP"}]}],
        "workers": {"enabled": True},
    },
    "pool": {
        "create": True,
        "name": "workers",
        "spec": {
            "replicas": 3,
            "server": {
                "url": "http://codetether-server:8000",
                "redisUrl": "redis://redis:6379/0",
                "authSecretRef": {"name": "codetether-token"},
            },
            "capabilities": ["agent", "build", "test"],
            "storage": {"size": "5Gi"},
        },
    },
    "codebases": [
        {"name": "api", "spec": {"description": "the API", "placement": {"ordinal": 0}}},
        {"name": "shared", "spec": {"global": True}},
    ],
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ha": {"replicaCount": 3},
    "single-namespace": {"operator": {"scope": "namespaces"}},
    "several-namespaces": {
        "replicaCount": 2,
        "operator": {"scope": "namespaces", "watchNamespaces": ["team-a", "team-b"]},
        "networkPolicy": {"enabled": True, "workers": {"enabled": True}},
        "pool": {"create": True},
    },
    "everything-on": EVERYTHING_ON,
    "bring-your-own-accounts": {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "my-operator"},
        "workerServiceAccount": {"create": False},
        "metrics": {"service": {"enabled": False}},
        "peering": {"enabled": False},
    },
}
