"""Prometheus metrics of one server process (its own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "codetether_server_requests_total",
            "HTTP requests by route template, method and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "codetether_server_request_duration_seconds",
            "HTTP request duration by route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.tasks = Gauge(
            "codetether_server_tasks", "Tasks in storage by status", ["status"], registry=self.registry
        )
        self.workers = Gauge(
            "codetether_server_workers", "Registered workers by status", ["status"], registry=self.registry
        )
        self.tasks_created = Counter(
            "codetether_server_tasks_created_total", "Tasks created", registry=self.registry
        )
        self.tasks_cancelled = Counter(
            "codetether_server_tasks_cancelled_total",
            "Tasks cancelled by request, by the state they were in (pending, running)",
            ["from_status"],
            registry=self.registry,
        )
        self.tasks_deleted = Counter(
            "codetether_server_tasks_deleted_total",
            "Finished tasks deleted after A2A_TASK_RETENTION_SECONDS",
            registry=self.registry,
        )
        self.claims = Counter(
            "codetether_server_claims_total",
            "Claim attempts by outcome (claimed, renewed, conflict, not_found)",
            ["outcome"],
            registry=self.registry,
        )
        self.lease_expiries = Counter(
            "codetether_server_lease_expiries_total",
            "Expired leases by outcome (requeued, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "codetether_server_events_total",
            "Task events by outcome (published, dropped)",
            ["outcome"],
            registry=self.registry,
        )
