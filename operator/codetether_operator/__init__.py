"""Kubernetes operator for CodeTether worker pools: CRD models, builders, planner, kopf handlers."""
