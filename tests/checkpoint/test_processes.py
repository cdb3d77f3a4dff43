"""The agreements between processes (jaxnets/checkpoint/_processes.py), on an in-memory key-value
store with jax.distributed's client methods, two processes as two threads.

The real store and real processes are exercised by tests/multihost/test_checkpoints.py; here the
rules: who raises what, the timeout, the keys that differ, and that old keys are deleted.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jaxnets.checkpoint._processes import Processes
from jaxnets.errors import CheckpointError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _kvstore import Store  # noqa: E402


def two(store: Store, timeout: float = 2.0) -> list[Processes]:
    out = []
    for i in range(2):
        p = Processes("ckpt", timeout=timeout)
        ex = p.exchanges
        ex.count, ex.index, ex._client, ex._prefix = 2, i, store, "t"
        out.append(p)
    return out


def run(procs: list[Processes], fn: Callable[[Processes], Any]) -> list[Any]:
    """fn(process) on each process at once; each result or the exception it raised."""
    out: list[Any] = [None, None]

    def go(i: int) -> None:
        try:
            out[i] = fn(procs[i])
        except BaseException as e:
            out[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_a_single_process_agrees_with_itself_at_once_and_publishes_nothing():
    p = Processes("ckpt", timeout=1)
    assert not p.multi
    p.agree("save", {"step": "1"})
    with pytest.raises(ValueError, match="mine"):
        p.agree("save", {}, error=ValueError("mine"))
    assert p.gather(p.reserve(), "save", {"a": 1}) == [{"a": 1}]


def test_equal_fingerprints_agree():
    assert run(two(Store()), lambda p: p.agree("save", {"step": "3", "layout": "ab"})) == [None, None]


def test_different_fields_raise_on_both_naming_the_field_and_each_value():
    out = run(two(Store()), lambda p: p.agree("save", {"step": str(3 + p.index), "layout": "ab"}))
    for e in out:
        assert isinstance(e, CheckpointError)
        assert "the processes disagree" in str(e) and "step: process 0: 3, process 1: 4" in str(e)
        assert "layout" not in str(e)


def test_a_hashed_field_that_differs_is_explained_by_the_keys_that_differ():
    def call(p: Processes) -> None:
        values = {"params.a": "1", "params.b": str(p.index), "params.c": "2"}
        p.agree(
            "save",
            {"values": str(sorted(values.items()))},
            details={"values": lambda: values},
            hints={"values": "save them per process"},
        )

    for e in run(two(Store()), call):
        assert isinstance(e, CheckpointError)
        assert "values: differs at params.b\n    save them per process" in str(e)


def test_different_calls_raise_on_both():
    out = run(two(Store()), lambda p: p.agree("save" if p.index == 0 else "restore", {}))
    for e in out:
        assert isinstance(e, CheckpointError) and "process 0: save; process 1: restore" in str(e)


def test_a_failure_before_the_call_is_raised_where_it_happened_and_reported_on_the_others():
    out = run(two(Store()), lambda p: p.agree("restore", {}, error=KeyError("lost") if p.index == 1 else None))
    assert isinstance(out[1], KeyError)
    assert isinstance(out[0], CheckpointError) and "restore failed on process 1: KeyError: 'lost'" in str(out[0])


def test_a_process_that_does_not_come_makes_the_others_raise_at_the_timeout():
    procs = two(Store(), timeout=0.5)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"process 1 did not take part within 0\.5 s \(sync_timeout=\)"):
        procs[0].agree("restore", {"step": "1"})
    assert 0.45 <= time.monotonic() - start < 5


def test_gather_brings_every_payload_to_process_0_and_failures_with_them():
    procs = two(Store())
    got = run(procs, lambda p: p.gather(7, "save", {"rows": p.index}))
    assert got == [[{"rows": 0}, {"rows": 1}], None]
    procs = two(Store())
    got = run(procs, lambda p: p.gather(7, "save", OSError("disk full") if p.index else {"rows": 0}))
    assert isinstance(got[1], OSError)
    assert isinstance(got[0], CheckpointError) and "save failed on process 1: OSError: disk full" in str(got[0])


def test_each_process_deletes_its_keys_once_every_reader_is_done_with_them():
    store = Store()
    procs = two(store)
    for step in range(5):
        run(procs, lambda p, s=step: p.agree("save", {"step": str(s)}))
    # Only the last exchange's keys are left (the others were read by everyone).
    assert sorted(store.data) == ["t/4/0", "t/4/1"]
