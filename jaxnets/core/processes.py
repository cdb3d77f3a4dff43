"""The processes of a ``jax.distributed`` job exchanging small values, with a timeout, never a hang.

Work that every process of a job does together (a model file written by all of them, each call
of a checkpoint manager) moves in *exchanges*: at each one every process publishes a small JSON
value (what it found, or the error it hit) to jax.distributed's key-value store (the store orbax
also uses), then reads the values of the processes it needs (all of them, or one). A process that
failed says so, and every process that reads it raises at once, naming it and its error; a
process that does not arrive (it crashed, called something else, or is far behind) makes the
others raise once the exchange's timeout has passed, naming it, instead of waiting forever. No
device computation is involved, so this works whatever the devices are doing.

An :class:`Exchanges` is one *series* of exchanges that every process runs in the same order (as
it must call every collective): one model-file save (the series is its operation number,
:func:`next_operation`), or one checkpoint manager. Its keys are
``jaxnets/<series>/<exchange>/<process index>``, so exchanges of two series never pair up. A
process deletes its own keys once every reader is done with them: when it has read every other
process's value of a later exchange (each process publishes an exchange only after it is done
with the earlier ones), so the store stays small over a long job.

Users: the model files (:mod:`jaxnets.io._spread`) and the checkpoint manager (whose agreements,
call fingerprints compared field by field, are built on this).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Collection
from typing import Any

import jax

from jaxnets.errors import JaxnetsError

__all__ = [
    "FAILED",
    "LATE",
    "TIMEOUT_ENV",
    "Exchanges",
    "base_timeout",
    "count",
    "index",
    "next_operation",
]

TIMEOUT_ENV = "JAXNETS_PROCESS_TIMEOUT"
_DEFAULT_TIMEOUT = 300.0  # seconds a process waits for the others at one exchange (plus data time)
_SEQUENCE = itertools.count()  # one number per operation, the same on every process

# How the errors of an exchange are worded (``str.format`` templates; a series may pass its own).
# Fields: {what} the work, {step} the exchange, {process} the first process that failed, {others}
# " (and process 2, 3)" or "", {why} its error; {processes} "process 1" or "processes 1, 2" (those
# that did not arrive), {timeout} seconds, {cause} the store's error for the first of them.
FAILED = "{what}: process {process}{others} failed: {why}"
LATE = (
    "{what}: {processes} did not reach step {step!r} within {timeout:g} s ({cause}). Every "
    "process of the job must make the same call at the same point; a slow filesystem may need a "
    f"longer ${TIMEOUT_ENV}."
)


def next_operation() -> int:
    """A number for the next operation the processes do together (an :class:`Exchanges` series).

    Take it when the operation starts, before anything that may fail on one process only, so
    that every process numbers its operations alike even after such a failure.
    """
    return next(_SEQUENCE)


def index() -> int:
    """This process's index in the job (0 when not distributed)."""
    return jax.process_index()


def count() -> int:
    """The number of processes in the job."""
    return jax.process_count()


def base_timeout() -> float:
    """Seconds a process waits for the others at one exchange: ``$JAXNETS_PROCESS_TIMEOUT`` or 300.

    Raises:
      ValueError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return _DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}.")
    return value


def _client(what: str, n: int, fail: Callable[[str], Exception]) -> Any:
    # jax.distributed keeps its client here (orbax reads it the same way); there is no public
    # accessor in jax 0.10.
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise fail(
            f"{what}: this job has {n} processes but jax.distributed is not initialized in "
            "this one; call jax.distributed.initialize() first."
        )
    return client


def _several(ps: list[int]) -> str:
    return f"process {ps[0]}" if len(ps) == 1 else f"processes {', '.join(map(str, ps))}"


class Exchanges:
    """One series of exchanges between the processes of the job.

    Every process must make the same exchanges of a series in the same order. Not for two threads
    at once: a series used from a background thread must be handed over (joined) in between.

    Args:
      series: names the series' keys (``"7"``, ``"checkpoint/<hash>/0"``): unique to it, the
        same on every process.
      what: the work, as errors name it (``"model.jnet: saving from 2 processes"``).
      fail: makes the exception raised when a process failed or did not arrive, from a message.
      timeout: seconds an exchange waits for the others (None: :func:`base_timeout`, read at
        each exchange).
      failed, late: how those two errors are worded (templates with the fields of
        :data:`FAILED` and :data:`LATE`).

    Attributes:
      index, count: this process's index and the number of processes. In a single process every
        exchange returns at once and nothing is published.

    Raises:
      the ``fail`` exception: several processes, and jax.distributed is not initialized in this one.
    """

    def __init__(
        self,
        series: str,
        what: str,
        *,
        fail: Callable[[str], Exception] = JaxnetsError,
        timeout: float | None = None,
        failed: str = FAILED,
        late: str = LATE,
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.index = index()
        self.count = count()
        self._fail = fail
        self._failed, self._late = failed, late
        self._prefix = f"jaxnets/{series}"
        self._client: Any = _client(what, self.count, fail) if self.count > 1 else None
        self._mine: list[str] = []  # keys this process published, deleted once all have read them

    def exchange(
        self,
        step: str,
        value: Any,
        *,
        read: Collection[int] | None = None,
        timeout: float | None = None,
        what: str | None = None,
    ) -> list[Any]:
        """Publishes ``value`` (JSON-able) and returns every process's value, by process index.

        Args:
          step: the exchange's name, unique within the series.
          value: this process's value.
          read: the processes whose values to wait for (None: every one); the list holds None
            for the others.
          timeout: seconds to wait for them, one deadline for all (default: the series').
          what: the work as this exchange's errors name it (default: the series').

        Raises:
          the series' exception (``fail``): a process read published a failure at this step
            (naming it and its error), one did not publish it within ``timeout`` (naming it, the
            step and the timeout), or the key-value store failed.
        """
        what = self.what if what is None else what
        if self.count == 1:
            return [value]
        me = self.index
        key = f"{self._prefix}/{step}/{me}"
        try:
            self._client.key_value_set(key, json.dumps({"ok": value}, sort_keys=True))
        except Exception as e:  # jax raises JaxRuntimeError (a RuntimeError) for store failures
            raise self._fail(f"{what}: cannot publish to jax.distributed's key-value store ({e}).") from e
        wanted = [q for q in (range(self.count) if read is None else read) if q != me]
        got = self._read(step, wanted, what, self.timeout if timeout is None else timeout)
        if len(wanted) == self.count - 1:
            # Every process published this exchange after it was done with the earlier ones:
            # this process's earlier keys have been read by all and can go.
            for k in self._mine:
                try:
                    self._client.key_value_delete(k)
                except Exception:  # noqa: BLE001 - a key left behind costs a few bytes
                    pass
            self._mine = []
        self._mine.append(key)
        got[me] = value
        return [got.get(q) for q in range(self.count)]

    def fail(self, step: str, error: BaseException) -> None:
        """Publishes that this process failed at ``step`` (those that read it raise); never raises."""
        if self.count == 1:
            return
        key = f"{self._prefix}/{step}/{self.index}"
        try:
            self._client.key_value_set(key, json.dumps({"error": f"{type(error).__name__}: {error}"}))
        except Exception:  # noqa: BLE001 - the others then time out at this step instead
            return
        self._mine.append(key)

    def _read(self, step: str, wanted: list[int], what: str, timeout: float | None) -> dict[int, Any]:
        """The values of ``wanted`` at ``step``; raises for a failure, then for a late process."""
        wait = base_timeout() if timeout is None else timeout
        deadline = time.monotonic() + wait
        got: dict[int, Any] = {}
        failed: list[tuple[int, str]] = []
        late: list[tuple[int, Exception]] = []
        for q in wanted:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                raw = self._client.blocking_key_value_get(f"{self._prefix}/{step}/{q}", left_ms)
            except Exception as e:  # jax raises its runtime error for a timeout or a lost service
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise self._fail(
                        f"{what}: cannot read process {q}'s value at step {step!r} from "
                        f"jax.distributed's key-value store ({type(e).__name__}: {str(e)[:200]})."
                    ) from e
                late.append((q, e))
                continue
            payload = json.loads(raw)
            if "error" in payload:
                failed.append((q, payload["error"]))
            else:
                got[q] = payload["ok"]
        if failed:  # first: it is likely why another process is late
            (q, why), rest = failed[0], [f for f, _ in failed[1:]]
            others = f" (and {_several(rest)})" if rest else ""
            raise self._fail(self._failed.format(what=what, step=step, process=q, others=others, why=why))
        if late:
            cause = f"{type(late[0][1]).__name__}: {str(late[0][1])[:200]}"
            raise self._fail(
                self._late.format(
                    what=what, step=step, processes=_several([q for q, _ in late]), timeout=wait, cause=cause
                )
            )
        return got
