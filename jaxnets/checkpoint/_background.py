"""Background saves and the delivery of their errors.

A :class:`CheckpointManager` with ``async_save=True`` hands each save's writing (packing,
checksums, orbax's synchronous save) to one short-lived thread, at most one at a time. orbax's
own asynchronous manager only *logs* a failure in its background thread; here a failure is
kept and raised, exactly once, to the caller:

* at the next call on the manager (``save``, ``restore``, ``metadata``, ``wait``, ``close``, ...);
* or, when the program ends before any such call, printed to stderr at exit, loudly, because no
  one else will ever hear of it (the exit status is left alone: changing it would mean
  ``os._exit``, which skips everyone else's cleanup and loses unflushed files).

A failure that was raised to the caller is the caller's: whether it is handled or not, nothing
more happens at exit.

A save in flight when the program ends is finished first. It must be finished before the
interpreter's shutdown *starts*: from then on ``concurrent.futures`` (which orbax and asyncio
use) refuses new work, and the save would fail with "cannot schedule new futures after
interpreter shutdown". ``concurrent.futures`` sets that refusal in a hook registered with
``threading._register_atexit`` (run when the main thread ends, before threads are joined and
before ``atexit`` functions); the hook here is registered the same way, after it, so it runs
first. It is private API; where it is missing, ``atexit`` is used instead.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (its exit hook is registered before ours: see above)
import sys
import threading
from collections.abc import Callable

__all__ = ["Saves"]


class _Job:
    def __init__(self, step: int) -> None:
        self.step = step
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # kept for the caller; nothing is lost or printed twice
            self.error = e


class Saves:
    """The save of one manager that may still be running, and its undelivered failure.

    Args:
      describe: ``describe(step, error) -> CheckpointError``: the exception to raise for a failed
        save (the manager words it: directory, latest complete step, what to do).
    """

    def __init__(self, describe: Callable[[int, BaseException], BaseException]) -> None:
        self._describe = describe
        self._job: _Job | None = None
        self._lock = threading.Lock()

    def run(self, step: int, fn: Callable[[], None], *, background: bool) -> None:
        """Runs ``fn`` (the writing of ``step``) now, or in a new thread.

        The previous save must have been collected (:meth:`collect` with ``wait=True``).

        Raises:
          the exception ``describe`` makes, when ``fn`` fails in the foreground.
        """
        job = _Job(step)
        if not background:
            job.run(fn)
            if job.error is not None:
                raise self._describe(step, job.error) from job.error
            return
        go = threading.Event()

        def target() -> None:
            # Thread.start() waits until the new thread runs; were it to start working at once,
            # holding the GIL, the caller could wait a switch interval (5 ms) or more to get it
            # back and return from save(). So it waits for the caller's go first.
            go.wait()
            job.run(fn)

        job.thread = threading.Thread(target=target, name=f"jaxnets-save-{step}", daemon=False)
        with self._lock:
            assert self._job is None, "collect() the previous save first"
            self._job = job
            _PENDING.add(self)  # reported at exit even if the manager itself is dropped
            _register_exit_hook()
        job.thread.start()
        go.set()

    @property
    def running(self) -> int | None:
        """The step being written in the background, or None."""
        job = self._job
        return job.step if job is not None and job.thread is not None and job.thread.is_alive() else None

    def collect(self, *, wait: bool) -> None:
        """Delivers the result of the background save: raises its failure, once.

        Args:
          wait: wait for a save that is still running; without it, a running save is left alone.

        Raises:
          the exception ``describe`` makes for a failed save.
        """
        with self._lock:
            job = self._job
            if job is None:
                return
            assert job.thread is not None
            if job.thread.is_alive():
                if not wait:
                    return
                job.thread.join()
            self._job = None  # delivered: from here on the failure is the caller's
            _PENDING.discard(self)
        if job.error is not None:
            raise self._describe(job.step, job.error) from job.error

    def undelivered(self) -> BaseException | None:
        """At exit: waits for a running save; its failure if no one was told of it, else None."""
        job = self._job
        if job is None:
            return None
        if job.thread is not None:
            job.thread.join()
        self._job = None
        _PENDING.discard(self)
        return None if job.error is None else self._describe(job.step, job.error)


_PENDING: set[Saves] = set()  # those with a save not yet delivered
_HOOKED = False


def _register_exit_hook() -> None:
    """Registers :func:`_finish_at_exit` once (at the first background save: see the docstring)."""
    global _HOOKED
    if not _HOOKED:
        try:
            getattr(threading, "_register_atexit", atexit.register)(_finish_at_exit)
        except RuntimeError:  # a save begun while the interpreter shuts down: nothing to hook
            return
        _HOOKED = True


def _finish_at_exit() -> None:
    """Finishes every save in flight, and prints each failure that was never raised to anyone."""
    for saves in list(_PENDING):
        err = saves.undelivered()
        if err is not None:
            print(
                "\njaxnets: A CHECKPOINT WAS LOST. This background save failed after the last "
                f"call on its CheckpointManager, so it could not be raised:\n  {err}\n"
                "Call mgr.wait() or mgr.close() (or use `with CheckpointManager(...)`) so that "
                "such failures are raised where they can be handled.\n",
                file=sys.stderr,
                flush=True,
            )
