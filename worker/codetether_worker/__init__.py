"""The CodeTether worker: registers with a server, receives tasks, runs the agent, reports back.

Kept free of imports so the example agent (a console script in this package) starts fast.
"""

__version__ = "0.1.0"
