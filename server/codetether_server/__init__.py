"""A compact CodeTether-compatible task server: workers, codebases, tasks with leases, sessions."""

__version__ = "0.1.0"
