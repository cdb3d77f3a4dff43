"""The exchanges between the processes of a job (jaxnets/core/processes.py), the one mechanism the
model files and the checkpoint manager share: on an in-memory key-value store with
jax.distributed's client methods, the processes as threads.

The real store and real processes are exercised by tests/multihost/; here the rules: who reads
what, a failure raised where it is read, one deadline per exchange, the wording, old keys deleted.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jaxnets.core import processes
from jaxnets.core.processes import Exchanges
from jaxnets.errors import JaxnetsError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _kvstore import Store  # noqa: E402


class Boom(JaxnetsError):
    pass


def job(store: Store, n: int = 2, **kw: Any) -> list[Exchanges]:
    """The series ``"s"`` as each of ``n`` processes sees it."""
    out = []
    for i in range(n):
        ex = Exchanges("s", "saving m.jnet", fail=Boom, **kw)  # one process here: no store yet
        ex.count, ex.index, ex._client = n, i, store
        out.append(ex)
    return out


def run(series: list[Exchanges], fn: Callable[[Exchanges], Any]) -> list[Any]:
    """fn(series of process i) on every process at once; each result or the exception raised."""
    out: list[Any] = [None] * len(series)

    def go(i: int) -> None:
        try:
            out[i] = fn(series[i])
        except BaseException as e:
            out[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(series))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_a_single_process_gets_its_own_value_at_once_and_publishes_nothing():
    ex = Exchanges("s", "saving")
    assert ex.count == 1
    assert ex.exchange("plan", {"a": 1}) == [{"a": 1}]
    ex.fail("plan", ValueError("x"))  # nothing to tell


def test_every_process_gets_every_value_by_process_index():
    got = run(job(Store(), 3), lambda ex: ex.exchange("plan", ex.index * 10))
    assert got == [[0, 10, 20]] * 3


def test_read_waits_only_for_the_processes_named():
    store = Store()
    series = job(store)
    # Process 1 reads process 0's value; process 0 reads nobody and returns at once.
    assert series[0].exchange("open", "token", read=[0]) == ["token", None]
    assert series[1].exchange("open", None, read=[0]) == ["token", None]


def test_a_published_failure_is_raised_by_the_readers_naming_the_process_and_its_error():
    def call(ex: Exchanges) -> Any:
        if ex.index == 1:
            ex.fail("write", OSError("disk full"))
            raise OSError("disk full")
        return ex.exchange("write", "ok")

    out = run(job(Store()), call)
    assert isinstance(out[1], OSError)
    assert isinstance(out[0], Boom)
    assert str(out[0]) == "saving m.jnet: process 1 failed: OSError: disk full"


def test_several_failures_name_the_first_and_the_others():
    def call(ex: Exchanges) -> Any:
        if ex.index:
            ex.fail("write", ValueError(f"bad {ex.index}"))
            return None
        return ex.exchange("write", "ok")

    out = run(job(Store(), 3), call)
    assert str(out[0]) == "saving m.jnet: process 1 (and process 2) failed: ValueError: bad 1"


def test_processes_that_do_not_come_are_named_after_one_deadline_for_all():
    series = job(Store(), 3)
    start = time.monotonic()
    with pytest.raises(Boom, match=r"saving m\.jnet: processes 1, 2 did not reach step 'plan' within 0\.5 s \(RuntimeError: DEADLINE_EXCEEDED"):
        series[0].exchange("plan", "x", timeout=0.5)
    assert 0.45 <= time.monotonic() - start < 0.9  # one deadline, not one per process
    with pytest.raises(Boom, match=r"\$JAXNETS_PROCESS_TIMEOUT"):
        series[0].exchange("next", "x", timeout=0.1)


def test_the_default_timeout_is_the_environment_s(monkeypatch):
    monkeypatch.setenv(processes.TIMEOUT_ENV, "0.3")
    assert processes.base_timeout() == 0.3
    with pytest.raises(Boom, match="process 1 did not reach step 'plan'"):
        job(Store())[0].exchange("plan", "x")
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv(processes.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=r"\$JAXNETS_PROCESS_TIMEOUT must be a positive number"):
            processes.base_timeout()


def test_a_series_may_word_its_errors_and_each_exchange_name_its_work():
    series = job(Store(), failed="{what} failed on process {process}: {why}", late="{what}: {processes} late ({timeout:g} s)", timeout=0.2)
    with pytest.raises(Boom, match=r"^restore: process 1 late \(0\.2 s\)$"):
        series[0].exchange("0", {}, what="restore")
    series[1].fail("1", KeyError("lost"))
    with pytest.raises(Boom, match=r"^restore failed on process 1: KeyError: 'lost'$"):
        series[0].exchange("1", {}, what="restore")


def test_a_store_that_fails_otherwise_is_named():
    class Broken(Store):
        def blocking_key_value_get(self, key: str, timeout_in_ms: int) -> str:
            raise RuntimeError("UNAVAILABLE: the coordination service is gone")

    with pytest.raises(Boom, match=r"cannot read process 1's value at step 'plan'.*UNAVAILABLE"):
        job(Broken())[0].exchange("plan", "x")


def test_each_process_deletes_its_keys_once_every_reader_is_done_with_them():
    store = Store()
    series = job(store)
    for step in ("plan", "open", "written"):
        run(series, lambda ex, s=step: ex.exchange(s, s))
    # Only the last exchange's keys are left (the others were read by everyone).
    assert sorted(store.data) == ["jaxnets/s/written/0", "jaxnets/s/written/1"]
    # Process 1 reads process 0's "done", which process 0 published after reading every
    # "written": process 1's key can go. Process 0 read nobody's "done": its "written" stays.
    run(series, lambda ex: ex.exchange("done", None, read=[0]))
    assert sorted(store.data) == ["jaxnets/s/done/0", "jaxnets/s/done/1", "jaxnets/s/written/0"]


def test_several_processes_without_jax_distributed_is_an_error_that_says_what_to_call(monkeypatch):
    monkeypatch.setattr(processes, "count", lambda: 2)
    with pytest.raises(Boom, match=r"saving: this job has 2 processes .*jax\.distributed\.initialize\(\)"):
        Exchanges("s", "saving", fail=Boom)
