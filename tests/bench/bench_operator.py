"""Benchmark: the operator converging 50 pools and 500 codebases created at once.

Kubernetes API: the kmock-based emulator (tests/support/kube_emulator.py) in this process; the
CodeTether server: a real process with in-memory storage; the operator: a real process
(``python -m codetether_operator``), so its RSS is its own. Prints the numbers and writes
tests/bench/results/operator.json. Bounded: gives up after ``--limit`` seconds. No assertions on time.

    python tests/bench/bench_operator.py [--pools 50] [--codebases 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from codetether_contract import CodetetherClient  # noqa: E402
from tests.support.kube_client import KubeTestClient  # noqa: E402
from tests.support.kube_emulator import KubeEmulatorThread  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

NAMESPACE = "bench"
BASELINE_NAMESPACE = "bench-baseline"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_operator(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """The operator as users run it, watching the benchmark namespace only."""
    argv = [sys.executable, "-m", "codetether_operator", "--standalone", "--namespace", NAMESPACE]
    argv += ["--metrics-port", "0", "--liveness-port", "0", "--codebase-resync", "30", "--pool-resync", "10"]
    argv += ["--log-level", "WARNING"]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _children_path(obj: dict[str, Any], namespace: str) -> str:
    plural = {"ConfigMap": "configmaps", "Service": "services", "StatefulSet": "statefulsets"}
    plural["PodDisruptionBudget"] = "poddisruptionbudgets"
    prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    return f"{prefix}/namespaces/{namespace}/{plural[obj['kind']]}"


async def direct_writes_baseline(kube: KubeTestClient, server_url: str, pools: int, codebases: int) -> float:
    """The floor: the same writes the operator must make (pool children + status, codebase registration +
    status), issued directly by this script with 8 threads and one async client. Same emulator, same
    server, same run: the operator's convergence time divided by this is its overhead."""
    from codetether_contract.models import CodebaseCreate
    from codetether_operator.build import build_children
    from codetether_operator.models import parse_pool_spec

    kube.create_namespace(BASELINE_NAMESPACE)
    spec = {"replicas": 3, "image": "w:1", "server": {"url": server_url}}
    group = "/apis/codetether.run/v1alpha1/namespaces/" + BASELINE_NAMESPACE

    def one_pool(i: int) -> None:
        pool = kube.create_pool(BASELINE_NAMESPACE, f"pool-{i}", spec)
        for child in build_children(pool, parse_pool_spec(spec)):
            kube._raw("POST", _children_path(child, BASELINE_NAMESPACE), child)
        status = {"status": {"replicas": 3, "observedGeneration": 1}}
        kube._raw(
            "PATCH", f"{group}/codetetherworkerpools/pool-{i}/status", status, "application/merge-patch+json"
        )

    def one_codebase(i: int) -> None:
        kube.create_codebase(BASELINE_NAMESPACE, f"cb-{i}", {"pool": f"pool-{i % pools}"})

    def codebase_status(i: int) -> None:
        status = {"status": {"phase": "Registered", "worker": f"pool-{i % pools}-0"}}
        kube._raw("PATCH", f"{group}/codebases/cb-{i}/status", status, "application/merge-patch+json")

    started = time.monotonic()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(8) as threads:
        await asyncio.gather(*(loop.run_in_executor(threads, one_pool, i) for i in range(pools)))
        await asyncio.gather(*(loop.run_in_executor(threads, one_codebase, i) for i in range(codebases)))
        async with CodetetherClient(server_url) as api:
            await asyncio.gather(
                *(
                    api.register_codebase(
                        CodebaseCreate(
                            name=f"baseline-{i}",
                            path=f"/codebases/baseline-{i}",
                            worker_id=f"pool-{i % pools}-0",
                            codebase_id=f"baseline.cb-{i}",
                        )
                    )
                    for i in range(codebases)
                )
            )
        await asyncio.gather(*(loop.run_in_executor(threads, codebase_status, i) for i in range(codebases)))
    return time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--codebases", type=int, default=500)
    parser.add_argument("--limit", type=float, default=150.0, help="give up after this many seconds")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    emulator = KubeEmulatorThread().start()
    kubeconfig = emulator.kubeconfig(workdir / "kubeconfig")
    server = ServerProcess(env={"A2A_STORAGE": "memory", "A2A_AUTH_TOKENS": ""}, log_dir=workdir).start()
    kube = KubeTestClient(kubeconfig)
    kube.install_crds()
    kube.create_namespace(NAMESPACE)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT)}
    baseline = await direct_writes_baseline(kube, server.url, args.pools, args.codebases)
    operator_log = (workdir / "operator.log").open("wb")
    operator = start_operator(env, operator_log)
    result: dict[str, object] = {}
    try:
        await asyncio.sleep(3)  # operator start-up (imports, login, discovery) is not what we time
        idle_rss = rss_mib(operator.pid)
        cpu_before = cpu_seconds(operator.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: kube.create_pool(
                        NAMESPACE, f"pool-{i}", {"replicas": 3, "image": "w:1", "server": {"url": server.url}}
                    ),
                    range(args.pools),
                )
            )
            list(
                pool.map(
                    lambda i: kube.create_codebase(NAMESPACE, f"cb-{i}", {"pool": f"pool-{i % args.pools}"}),
                    range(args.codebases),
                )
            )
        created = time.monotonic() - started

        pools_done_at = codebases_done_at = None
        registered = ready_pools = 0
        async with CodetetherClient(server.url) as api:
            while time.monotonic() - started < args.limit:
                pools = kube.get(
                    f"/apis/codetether.run/v1alpha1/namespaces/{NAMESPACE}/codetetherworkerpools"
                )["items"]
                sets = kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets")["items"]
                ready_pools = (
                    sum(1 for p in pools if (p.get("status") or {}).get("observedGeneration"))
                    if len(sets) >= args.pools
                    else 0
                )
                if pools_done_at is None and ready_pools >= args.pools:
                    pools_done_at = time.monotonic() - started
                codebases = kube.get(f"/apis/codetether.run/v1alpha1/namespaces/{NAMESPACE}/codebases")[
                    "items"
                ]
                phases = [(c.get("status") or {}).get("phase") for c in codebases]
                on_server = sum(1 for c in await api.list_codebases() if not c.id.startswith("baseline."))
                registered = min(phases.count("Registered"), on_server)
                if codebases_done_at is None and registered >= args.codebases:
                    codebases_done_at = time.monotonic() - started
                if pools_done_at is not None and codebases_done_at is not None:
                    break
                await asyncio.sleep(0.25)
        converged = pools_done_at is not None and codebases_done_at is not None
        result = {
            "pools": args.pools,
            "codebases": args.codebases,
            "create_seconds": round(created, 2),
            "pools_converged_seconds": round(pools_done_at, 2) if pools_done_at else None,
            "codebases_converged_seconds": round(codebases_done_at, 2) if codebases_done_at else None,
            "converged": converged,
            "pools_with_status": ready_pools,
            "codebases_registered": registered,
            "baseline_direct_writes_seconds": round(baseline, 2),
            "operator_overhead_vs_baseline": (
                round(codebases_done_at / baseline, 1) if codebases_done_at and baseline else None
            ),
            "operator_rss_mib_idle": round(idle_rss, 1),
            "operator_rss_mib_after": round(rss_mib(operator.pid), 1),
            "operator_cpu_seconds": round(cpu_seconds(operator.pid) - cpu_before, 2),
            "kubernetes_api": "kmock 0.8 emulator (in the benchmark process)",
            "server": "codetether_server, in-memory storage",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        }
    finally:
        operator.terminate()
        try:
            operator.wait(20)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        operator_log.close()
        server.stop()
        kube.close()
        emulator.stop()

    for key, value in result.items():
        print(f"{key:>30}: {value}")
    out = ROOT / "tests" / "bench" / "results" / "operator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
