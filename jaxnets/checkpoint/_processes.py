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

The exchanges themselves (publishing, reading with a deadline, naming a process that failed or
did not arrive, deleting old keys) are :class:`jaxnets.core.processes.Exchanges`, the one
mechanism the model files use too. What is the manager's own: the series, one per manager
(``checkpoint/<dir>/<manager>``, where ``<dir>`` is a hash of the checkpoint directory and
``<manager>`` counts the managers this process opened on it, the same on every process: opening
one is itself agreed on; a manager opened on another directory by one process alone disturbs
nothing here), its exchanges numbered in order (:meth:`Processes.reserve`, so a background save
can hold its place), and the fingerprints compared field by field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import xxhash

from jaxnets.core.processes import Exchanges
from jaxnets.errors import CheckpointError

__all__ = ["Processes"]

_MANAGERS: dict[str, int] = {}  # directory -> managers opened on it here
_LOCK = threading.Lock()
_GUIDE = 'docs/checkpoints.md, "Checkpoints on several hosts"'
# How the agreements' errors are worded (jaxnets.core.processes.FAILED and LATE name the fields).
_FAILED = "{what} failed on process {process}{others}: {why}"
_LATE = (
    "{what}: {processes} did not take part within {timeout:g} s (sync_timeout=). Every process "
    "must make the same checkpoint calls in the same order, and open a CheckpointManager on the "
    "same directory (the same path on every process) as many times; a process that failed, "
    f"skipped the call or is far behind shows this ({_GUIDE})."
)


class Processes:
    """This process's view of the job, and the agreements of one manager.

    Args:
      label: how errors name the manager (its directory).
      timeout: seconds to wait for the other processes in an agreement.

    Attributes:
      exchanges: the manager's series of exchanges (:class:`jaxnets.core.processes.Exchanges`).

    In a single process every method returns at once and nothing is published.

    Raises:
      CheckpointError: several processes, and jax.distributed is not initialized in this one.
    """

    def __init__(self, label: str, *, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        with _LOCK:  # the number is taken only once the manager can take part
            number = _MANAGERS.get(label, 0)
            self.exchanges = Exchanges(
                f"checkpoint/{xxhash.xxh3_64_hexdigest(label.encode())}/{number}",
                label,
                fail=lambda msg: CheckpointError(msg, file=label),
                timeout=timeout,
                failed=_FAILED,
                late=_LATE,
            )
            _MANAGERS[label] = number + 1
        self._next = 0

    @property
    def count(self) -> int:
        """The number of processes in the job."""
        return self.exchanges.count

    @property
    def index(self) -> int:
        """This process's index in the job."""
        return self.exchanges.index

    @property
    def multi(self) -> bool:
        """True in a job of several processes."""
        return self.count > 1

    def reserve(self) -> int:
        """The number of the next exchange (for one that runs later, e.g. in a background save)."""
        n = self._next
        self._next += 1
        return n

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
        n = str(self.reserve())
        if error is not None:  # the others will read it and raise; no need to wait for them
            self.exchanges.fail(n, error)
            raise error
        call = f"{self.label}: {what}"
        values = self.exchanges.exchange(n, {"what": what, "fields": dict(fields)}, what=call)
        calls = {p: v["what"] for p, v in enumerate(values)}
        if len(set(calls.values())) > 1:
            shown = "; ".join(f"process {p}: {c}" for p, c in sorted(calls.items()))
            raise CheckpointError(
                f"{self.label}: the processes make different checkpoint calls ({shown}). Every "
                f"process must make the same calls in the same order ({_GUIDE}).",
                file=self.label,
            )
        differ = sorted(
            name
            for name in set().union(*(v["fields"] for v in values))
            if len({json.dumps(v["fields"].get(name)) for v in values}) > 1
        )
        if not differ:
            return
        named = self._name_keys(call, [d for d in differ if details and d in details], details or {})
        lines = []
        for name in differ:
            if name in named:
                lines.append(f"  {name}: {named[name]}")
            else:
                per = ", ".join(f"process {p}: {v['fields'].get(name)}" for p, v in enumerate(values))
                lines.append(f"  {name}: {per}")
            if hints and name in hints:
                lines.append(f"    {hints[name]}")
        raise CheckpointError(
            f"{call}: the processes disagree:\n" + "\n".join(lines) + "\nEvery "
            f"process must make the same checkpoint calls with the same arguments ({_GUIDE}).",
            file=self.label,
        )

    def _name_keys(
        self, call: str, names: list[str], details: Mapping[str, Callable[[], Mapping[str, str]]]
    ) -> dict[str, str]:
        """One more exchange: the keys of each field in ``names`` whose values differ."""
        if not names:
            return {}
        mine = {name: dict(details[name]()) for name in names}
        values = self.exchanges.exchange(str(self.reserve()), mine, what=call)
        out = {}
        for name in names:
            maps = [v[name] for v in values]
            keys = sorted(set().union(*maps))
            bad = [k for k in keys if len({m.get(k) for m in maps}) > 1]
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
        if isinstance(payload, BaseException):
            self.exchanges.fail(str(n), payload)
            raise payload
        values = self.exchanges.exchange(
            str(n), dict(payload), read=None if self.index == 0 else (), what=f"{self.label}: {what}"
        )
        return values if self.index == 0 else None
