"""Operator settings (flags > environment > defaults) and the metrics helpers."""

from __future__ import annotations

import kopf
import pytest

from codetether_operator import metrics
from codetether_operator.settings import FINALIZER, configure_kopf, load


def test_flags_win_over_environment_over_defaults() -> None:
    env = {"CODETETHER_OPERATOR_NAMESPACES": "a, b", "CODETETHER_OPERATOR_METRICS_PORT": "9100"}
    settings = load([], env)
    assert settings.namespaces == ["a", "b"] and not settings.cluster_wide
    assert settings.metrics_port == 9100 and settings.liveness_port == 8081
    settings = load(["--namespace", "c", "--metrics-port", "0", "--standalone"], env)
    assert settings.namespaces == ["c"] and settings.metrics_port == 0 and settings.standalone
    assert load([], {}).cluster_wide


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"CODETETHER_OPERATOR_METRICS_PORT": "many"}, "CODETETHER_OPERATOR_METRICS_PORT"),
        (["--liveness-port", "70000"], {}, "liveness-port"),
        (["--server-url", "ftp://x"], {}, "--server-url"),
    ],
)
def test_bad_settings_name_the_setting(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        load(argv, env)
    assert message in capsys.readouterr().err


def test_kopf_settings_use_our_names_and_distinct_priorities() -> None:
    settings = load(["--peering", "ha"], {})
    first, second = kopf.OperatorSettings(), kopf.OperatorSettings()
    configure_kopf(first, settings)
    configure_kopf(second, settings)
    assert first.persistence.finalizer == FINALIZER == "codetether.run/finalizer"
    assert first.peering.name == "ha" and not first.peering.standalone and first.peering.clusterwide
    assert first.peering.priority != second.peering.priority
    pinned = kopf.OperatorSettings()
    configure_kopf(pinned, load(["--priority", "7"], {}))
    assert pinned.peering.priority == 7


def _sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_reconcile_counter_and_phase_gauge() -> None:
    before = _sample("codetether_operator_reconciles_total", kind="pool", result="error")
    with pytest.raises(RuntimeError), metrics.timed("pool"):
        raise RuntimeError("boom")
    assert _sample("codetether_operator_reconciles_total", kind="pool", result="error") == before + 1
    tracker = metrics.PhaseTracker(metrics.POOLS, ["Ready", "Degraded"])
    tracker.set("ns/a", "Ready")
    tracker.set("ns/b", "Ready")
    tracker.set("ns/b", "Degraded")
    assert _sample("codetether_operator_pools", phase="Ready") == 1
    assert _sample("codetether_operator_pools", phase="Degraded") == 1
    tracker.set("ns/a", None)
    assert _sample("codetether_operator_pools", phase="Ready") == 0
