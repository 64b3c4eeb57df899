"""Only the forwarding module of the task path that moved to the `runtime` app (see tasks.py)."""
