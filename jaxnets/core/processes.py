"""The processes of a ``jax.distributed`` job agreeing on something, with a timeout, never a hang.

Work that every process of a job does together (a model file written by all of them) moves in
steps; at each step every process publishes a short text (what it found, or the error it hit)
through jax.distributed's key-value store, then reads every other process's. A process that
failed says so and every process raises the same error at once; a process that never arrives
(it crashed, or called something else) makes the others raise after the step's timeout instead
of waiting forever. This uses no device computation, so it works whatever the devices are doing.

Every process must run the same steps in the same order (as it must call every collective):
:class:`Steps` numbers them, so steps of two different operations never pair up.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from typing import Any

import jax

from jaxnets.errors import JaxnetsError

__all__ = ["Steps", "TIMEOUT_ENV", "base_timeout", "count", "index", "next_operation"]

TIMEOUT_ENV = "JAXNETS_PROCESS_TIMEOUT"
_DEFAULT_TIMEOUT = 300.0  # seconds a process waits for the others at one step (plus data time)
_SEQUENCE = itertools.count()  # one number per operation, the same on every process


def next_operation() -> int:
    """A number for the next operation the processes do together.

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
    """Seconds a process waits for the others at one step: ``$JAXNETS_PROCESS_TIMEOUT`` or 300.

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


def _client() -> Any:
    # jax.distributed keeps its client here (orbax reads it the same way); there is no public
    # accessor in jax 0.10.
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise JaxnetsError(
            f"this job has {count()} processes but jax.distributed is not initialized in this "
            "one; call jax.distributed.initialize() first."
        )
    return client


class Steps:
    """The steps of one operation done by every process together.

    Args:
      what: the operation, for messages (``"saving model.jnet"``).
      fail: makes the exception raised when a process failed or timed out, from a message.
      number: the operation's number (:func:`next_operation`); a new one when None.
    """

    def __init__(
        self,
        what: str,
        fail: Callable[[str], Exception] = JaxnetsError,
        *,
        number: int | None = None,
    ) -> None:
        self.what = what
        self._fail = fail
        self._prefix = f"jaxnets/{next_operation() if number is None else number}"
        self._client = _client()
        self._mine: list[str] = []  # keys this process published, deleted once all have read them

    def exchange(
        self, step: str, value: Any, *, timeout: float | None = None, only: int | None = None
    ) -> list[Any]:
        """Publishes ``value`` (JSON-able) and returns every process's, by process index.

        Args:
          step: the step's name, unique within the operation.
          value: this process's value.
          timeout: seconds to wait for the others (default :func:`base_timeout`).
          only: read only this process's value (the others are not waited for); the list then
            holds None for every other process.

        Raises:
          the operation's exception (``fail``): a process published a failure at this step (the
            message names it and says what it was), or one did not arrive within ``timeout``.
        """
        wait = base_timeout() if timeout is None else timeout
        me = index()
        payload = {"ok": value}
        key = f"{self._prefix}/{step}/"
        self._client.key_value_set(key + str(me), json.dumps(payload))
        got: list[Any] = []
        for q in range(count()):
            if q == me:
                got.append(payload)
            elif only is not None and q != only:
                got.append(None)
            else:
                got.append(json.loads(self._get(key + str(q), q, step, wait)))
        if only is None:
            # Every process published this step after reading the earlier ones: this process's
            # earlier keys are read by all and can go (the store lives as long as the job).
            for k in self._mine:
                try:
                    self._client.key_value_delete(k)
                except Exception:  # noqa: BLE001 - a key left behind costs a few bytes
                    pass
            self._mine = []
        self._mine.append(key + str(me))
        failed = [(q, p["error"]) for q, p in enumerate(got) if p is not None and "error" in p]
        if failed:
            q, why = failed[0]
            others = f" (and process {', '.join(str(f) for f, _ in failed[1:])})" if len(failed) > 1 else ""
            raise self._fail(f"{self.what}: process {q}{others} failed: {why}")
        return [None if p is None else p["ok"] for p in got]

    def fail(self, step: str, error: BaseException) -> None:
        """Publishes that this process failed at ``step`` (the others raise there); never raises."""
        payload = {"error": f"{type(error).__name__}: {error}"}
        try:
            self._client.key_value_set(f"{self._prefix}/{step}/{index()}", json.dumps(payload))
        except Exception:  # noqa: BLE001 - the others then time out at this step instead
            pass

    def _get(self, key: str, q: int, step: str, wait: float) -> str:
        try:
            return str(self._client.blocking_key_value_get(key, max(1, int(wait * 1000))))
        except Exception as e:  # jax raises its runtime error for a timeout or a lost service
            raise self._fail(
                f"{self.what}: process {q} did not reach step {step!r} within {wait:.0f} s "
                f"({type(e).__name__}: {str(e)[:200]}). Every process of the job must make the "
                f"same call at the same point; a slow filesystem may need a longer "
                f"${TIMEOUT_ENV}."
            ) from e
