"""jax.distributed's key-value client, in memory: the methods jaxnets.core.processes calls, for
tests that run the processes of a job as threads of one (tests/core/test_exchanges.py,
tests/checkpoint/test_processes.py). The real store is exercised by tests/multihost/."""

from __future__ import annotations

import threading


class Store:
    """jax.distributed's key-value client, in memory (the methods core/processes.py calls)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.cond = threading.Condition()

    def key_value_set(self, key: str, value: str) -> None:
        with self.cond:
            if key in self.data:
                raise RuntimeError(f"ALREADY_EXISTS: {key}")
            self.data[key] = value
            self.cond.notify_all()

    def blocking_key_value_get(self, key: str, timeout_in_ms: int) -> str:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.data, timeout_in_ms / 1000):
                raise RuntimeError(f"DEADLINE_EXCEEDED: GetKeyValue() timed out with key: {key}")
            return self.data[key]

    def key_value_delete(self, key: str) -> None:
        with self.cond:
            self.data.pop(key, None)
