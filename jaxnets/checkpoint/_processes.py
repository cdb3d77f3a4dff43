"""Agreement between the processes of a multi-process job, before anything collective runs.

In a ``jax.distributed`` job every process must make the same checkpoint calls, with the same
arguments, in the same order: orbax's collective code (its barriers, the writes of one step)
otherwise waits for a partner that never comes. So each collective call of a
:class:`CheckpointManager` (opening it, ``save``, ``restore``, ``export``) first *agrees*: every
process publishes a small fingerprint of its call (what it does; the step; a hash of the
structure it saves; where it places what it restores; ...) to jax.distributed's key-value store,
then reads every other process's, waiting at most ``timeout`` seconds. Only if all fingerprints
are equal does any process go on; otherwise every process that made the call raises the same
:class:`CheckpointError`, naming what differs. A process that never makes the call makes the
others fail after ``timeout`` seconds, never hang (docs/checkpoints.md, "Checkpoints on several
hosts").

Each agreement is a numbered *exchange*: key ``jaxnets/checkpoint/<dir>/<manager>/<n>/<process>``,
where ``<dir>`` is a hash of the checkpoint directory and ``<manager>`` counts the managers this
process opened on it (the same on every process: opening one is itself agreed on; a manager
opened on another directory by one process alone disturbs nothing here); exchanges are numbered
per manager. A process deletes its own
keys once every reader has read them: after it has read everyone's key of a later exchange
(each process publishes exchange n+1 only after it is done with exchange n), so the store stays
small over a long run.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import xxhash

from jaxnets.errors import CheckpointError

__all__ = ["Processes"]

_MANAGERS: dict[str, itertools.count[int]] = {}  # directory -> managers opened on it here
_LOCK = threading.Lock()
_GUIDE = 'docs/checkpoints.md, "Checkpoints on several hosts"'


def _client() -> Any:
    """jax.distributed's client (the key-value store orbax also uses), or None."""
    from jax._src import distributed  # the public API has no accessor; orbax reads it the same way

    return distributed.global_state.client


class Processes:
    """This process's view of the job, and the agreements of one manager.

    Args:
      label: how errors name the manager (its directory).
      timeout: seconds to wait for the other processes in an agreement.

    In a single process every method returns at once and nothing is published.
    """

    def __init__(self, label: str, *, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        self.count = jax.process_count()
        self.index = jax.process_index()
        self._client: Any = _client() if self.count > 1 else None
        if self.count > 1 and self._client is None:
            raise CheckpointError(
                f"{label}: jax sees {self.count} processes but jax.distributed is not initialized "
                "here; call jax.distributed.initialize() first.",
                file=label,
            )
        with _LOCK:
            count = next(_MANAGERS.setdefault(label, itertools.count()))
        self._prefix = f"jaxnets/checkpoint/{xxhash.xxh3_64_hexdigest(label.encode())}/{count}"
        self._next = 0
        self._mine: list[tuple[int, str]] = []  # (exchange, key) this process published

    @property
    def multi(self) -> bool:
        """True in a job of several processes."""
        return self.count > 1

    def reserve(self) -> int:
        """The number of the next exchange (for one that runs later, e.g. in a background save)."""
        n = self._next
        self._next += 1
        return n

    # --- the primitive ------------------------------------------------------------------------
    def _publish(self, n: int, value: Mapping[str, Any]) -> None:
        key = f"{self._prefix}/{n}/{self.index}"
        try:
            self._client.key_value_set(key, json.dumps(value, sort_keys=True))
        except Exception as e:  # jax raises JaxRuntimeError (a RuntimeError) for store failures
            raise CheckpointError(
                f"{self.label}: cannot publish to jax.distributed's key-value store ({e}).",
                file=self.label,
            ) from e
        self._mine.append((n, key))

    def _read(self, n: int, what: str, processes: list[int]) -> dict[int, dict[str, Any]]:
        """Every process's value of exchange ``n``, waiting until the shared deadline."""
        deadline = time.monotonic() + self.timeout
        got: dict[int, dict[str, Any]] = {}
        late: list[int] = []
        for p in processes:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                got[p] = json.loads(self._client.blocking_key_value_get(f"{self._prefix}/{n}/{p}", left_ms))
            except Exception as e:
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise CheckpointError(
                        f"{self.label}: {what}: cannot read process {p}'s part from "
                        f"jax.distributed's key-value store ({e}).",
                        file=self.label,
                    ) from e
                late.append(p)
        if late:
            who = ", ".join(map(str, late))
            why = (
                "Every process must open a CheckpointManager on the same directory (the same "
                "path on every process, as many times)"
                if what.startswith("CheckpointManager()")
                else "Every process must make the same checkpoint calls in the same order; a "
                "process that failed, skipped the call or is far behind shows this"
            )
            raise CheckpointError(
                f"{self.label}: {what}: process{'es' if len(late) > 1 else ''} {who} did not take "
                f"part within {self.timeout:g} s (sync_timeout=). {why} ({_GUIDE}).",
                file=self.label,
            )
        return got

    def _forget_before(self, n: int) -> None:
        """Deletes this process's keys of exchanges before ``n`` (every reader is done with them)."""
        keep = []
        for m, key in self._mine:
            if m < n:
                try:
                    self._client.key_value_delete(key)
                except Exception:  # a failed cleanup only leaves a small key behind
                    pass
            else:
                keep.append((m, key))
        self._mine = keep

    # --- agreements ---------------------------------------------------------------------------
    def agree(
        self,
        what: str,
        fields: Mapping[str, str],
        *,
        error: BaseException | None = None,
        details: Mapping[str, Callable[[], Mapping[str, str]]] | None = None,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Checks that every process makes this call with the same ``fields``.

        Args:
          what: the call, as errors name it (``"save(step=3)"``); part of what must agree.
          fields: ``{name: value}`` that must be equal on every process.
          error: this process's own failure before the call (it is published, so that the
            others raise too, then raised here).
          details: for fields that are hashes of many values, ``{name: fn}`` where ``fn()``
            returns ``{key: value}``; when such a field differs, a second exchange finds the
            keys that differ, and the error names them.
          hints: ``{name: what to do}`` added to the error when that field differs.

        Raises:
          CheckpointError: a process failed, is missing past the timeout, or disagrees (raised
            on every process that made the call).
          the ``error`` passed in, unchanged.
        """
        if not self.multi:
            if error is not None:
                raise error
            return
        n = self.reserve()
        mine = {
            "what": what,
            "fields": dict(fields),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        self._publish(n, mine)
        if error is not None:  # the others will read it and raise; no need to wait for them
            raise error
        others = [p for p in range(self.count) if p != self.index]
        values = self._read(n, what, others)
        values[self.index] = mine
        self._forget_before(n)
        failed = [(p, v["error"]) for p, v in sorted(values.items()) if v.get("error")]
        if failed:
            p, msg = failed[0]
            raise CheckpointError(
                f"{self.label}: {what} failed on process {p}: {msg}", file=self.label
            )
        calls = {p: v.get("what") for p, v in values.items()}
        if len(set(calls.values())) > 1:
            shown = "; ".join(f"process {p}: {c}" for p, c in sorted(calls.items()))
            raise CheckpointError(
                f"{self.label}: the processes make different checkpoint calls ({shown}). Every "
                f"process must make the same calls in the same order ({_GUIDE}).",
                file=self.label,
            )
        differ = sorted(
            name
            for name in set().union(*(v["fields"] for v in values.values()))
            if len({json.dumps(v["fields"].get(name)) for v in values.values()}) > 1
        )
        if not differ:
            return
        named = self._name_keys(what, [d for d in differ if details and d in details], details or {})
        lines = []
        for name in differ:
            if name in named:
                lines.append(f"  {name}: {named[name]}")
            else:
                per = ", ".join(f"process {p}: {v['fields'].get(name)}" for p, v in sorted(values.items()))
                lines.append(f"  {name}: {per}")
            if hints and name in hints:
                lines.append(f"    {hints[name]}")
        raise CheckpointError(
            f"{self.label}: {what}: the processes disagree:\n" + "\n".join(lines) + "\nEvery "
            f"process must make the same checkpoint calls with the same arguments ({_GUIDE}).",
            file=self.label,
        )

    def _name_keys(
        self, what: str, names: list[str], details: Mapping[str, Callable[[], Mapping[str, str]]]
    ) -> dict[str, str]:
        """One more exchange: the keys of each field in ``names`` whose values differ."""
        if not names:
            return {}
        n = self.reserve()
        mine = {name: dict(details[name]()) for name in names}
        self._publish(n, {"what": what, "fields": mine, "error": None})
        values = self._read(n, what, [p for p in range(self.count) if p != self.index])
        values[self.index] = {"fields": mine}
        self._forget_before(n)
        out = {}
        for name in names:
            maps = {p: v["fields"][name] for p, v in values.items()}
            keys = sorted(set().union(*maps.values()))
            bad = [k for k in keys if len({m.get(k) for m in maps.values()}) > 1]
            shown = ", ".join(bad[:10]) + (f" ... ({len(bad)} in all)" if len(bad) > 10 else "")
            out[name] = f"differs at {shown}" if bad else "differs"
        return out

    def gather(self, n: int, what: str, payload: Mapping[str, Any] | BaseException) -> list[dict[str, Any]] | None:
        """Exchange ``n`` (reserved earlier): every process sends ``payload`` to process 0.

        Args:
          n: from :meth:`reserve`.
          what: named in errors.
          payload: JSON data, or this process's failure (then raised here, after publishing it).

        Returns:
          On process 0, every process's payload by process index; elsewhere None.

        Raises:
          CheckpointError: (process 0) another process failed or did not send within the timeout.
        """
        if not self.multi:
            if isinstance(payload, BaseException):
                raise payload
            return [dict(payload)]
        if isinstance(payload, BaseException):
            self._publish(n, {"error": f"{type(payload).__name__}: {payload}"})
            raise payload
        self._publish(n, {"error": None, "data": dict(payload)})
        if self.index != 0:
            return None
        values = self._read(n, what, list(range(1, self.count)))
        values[0] = {"error": None, "data": dict(payload)}
        for p, v in sorted(values.items()):
            if v.get("error"):
                raise CheckpointError(
                    f"{self.label}: {what} failed on process {p}: {v['error']}", file=self.label
                )
        return [values[p]["data"] for p in range(self.count)]
