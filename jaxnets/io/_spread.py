"""One file written by every process of a job, each writing its own shards (docs/format.md,
"Several processes").

No process ever holds more than one shard of an array spread over the processes; the layout is
canonical (a pure function of the tensor index), so every process computes every byte's place
itself. The steps, each ending in an exchange between the processes
(:class:`jaxnets.core.processes.Exchanges`: a failure anywhere raises everywhere, a missing
process times out instead of hanging):

1. **plan**: every process lays the file out; all must agree (same tensor index, same header
   except ``provenance``, which is process 0's).
2. **open**: process 0 creates the temporary file next to the destination at its final size and
   writes a random token into it; every other process opens it and must read that token back, or
   the path is not shared between the processes and the save stops, naming the arrays.
3. **write**: each process writes its blocks of the spread arrays (one replica of each block in
   the whole job: the one with replica id 0), one positional write per run of bytes, one block
   at a time; process 0 also writes every padding byte and every leaf that is not spread (numpy
   arrays, single-device jax arrays), which every process must hold with the same value: each
   hashes its own and they are compared, naming the keys that differ. Each process flushes and
   closes what it wrote.
4. **done**: process 0 hashes every spread tensor by reading it back in chunks (the page cache
   holds the file, not process 0's memory), writes the header with the checksums, flushes and
   renames the file over the destination. No process returns before that.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np
import xxhash

from jaxnets.core import processes
from jaxnets.core import progress as _progress
from jaxnets.errors import JaxnetsError
from jaxnets.io import _shards
from jaxnets.io._layout import TensorSource, _dtypes, _gap_bytes
from jaxnets.io._shared_file import SharedFile
from jaxnets.io._writer import Plan, plan

__all__ = ["abandon", "write_spread"]

_SLOWEST = 20e6  # bytes/s: a step that moves data waits this much longer per byte for the others


def write_spread(
    path: str | os.PathLike[str],
    tensors: Sequence[TensorSource],
    fields: dict[str, Any],
    *,
    fsync: bool = True,
    progress: bool | None = None,
    number: int | None = None,
) -> int:
    """Writes one file from every process of the job; every process must call it alike.

    Args:
      path: the destination, on a filesystem every process shares; replaced atomically.
      tensors: what to store, in order; those with ``blocks`` are spread over the processes.
      fields: the rest of the header; its ``provenance`` is taken from process 0.
      fsync: flush to the disk before the rename (each process flushes what it wrote).
      progress: a progress bar on process 0 (None: for 1 GiB or more on a terminal).
      number: the save's number among the operations of the processes
        (:func:`jaxnets.core.processes.next_operation`, taken when the save started).

    Returns:
      The file's size in bytes.

    Raises:
      JaxnetsError: on every process alike: the processes save different trees, or different
        values for a leaf that is not spread (naming the keys), or the path is not shared (naming
        the spread arrays), or a process failed (naming it and its error) or did not arrive.
      FileWriteError: on the process whose write failed (the others raise a JaxnetsError).
    """
    file = os.fspath(path)
    me = processes.index()
    spread = [i for i, t in enumerate(tensors) if t.blocks is not None]
    local = [i for i, t in enumerate(tensors) if t.blocks is None]
    first = tensors[spread[0]].key if spread else None
    steps = processes.Exchanges(
        _series(number), _what(file), fail=lambda msg: JaxnetsError(msg, file=file, path=first)
    )

    # 1. plan
    ident = _identity(tensors, fields)
    theirs = _step(steps, _FIRST, lambda: {"plan": ident, "provenance": fields.get("provenance")})
    differ = [q for q, v in enumerate(theirs) if v["plan"] != ident]
    if differ:
        raise JaxnetsError(
            f"{file}: processes {me} and {differ[0]} save different trees (keys, shapes, dtypes, "
            "configs or metadata differ); nothing was written. Every process must call save with "
            "the same model and tree, each holding its own shards of the arrays spread over the "
            "processes.",
            file=file,
        )
    if "provenance" in fields:  # who wrote the file, and when: process 0
        fields = {**fields, "provenance": theirs[0]["provenance"]}
    p = plan(tensors, fields)
    slow = processes.base_timeout() + (p.file_len - p.data_start) / _SLOWEST
    out = SharedFile(file)
    try:
        # 2. open
        name, token = _step(steps, "open", lambda: out.create(p.file_len) if me == 0 else None, read=[0])[0]
        keys = [tensors[i].key for i in spread]
        _step(steps, "opened", lambda: me == 0 or out.join(name, token, p.file_len, keys))

        # 3. write
        crcs: dict[int, bytes] = {}
        total = 0
        if me == 0:  # what process 0 writes, then what it reads back
            total = sum(p.lengths[i] for i in local) + sum(p.lengths[i] for i in spread)
            total += _own_bytes(tensors, spread)
        with _progress.progress(total, f"saving {file}", progress if me == 0 else False) as bar:

            def write() -> str:
                crcs.update(_write(out, p, tensors, spread, local, me, bar))
                if me != 0:
                    out.close(fsync=fsync)
                return xxhash.xxh3_64_hexdigest(b"".join(crcs[i] for i in local))

            if len(set(_step(steps, "written", write, timeout=slow))) > 1:
                _differing(steps, file, tensors, local, crcs)

            # 4. done
            finish = (lambda: out.finish(p, tensors, spread, crcs, fsync, bar)) if me == 0 else (lambda: None)
            _step(steps, "done", finish, read=[0], timeout=slow)
    except BaseException:
        out.abandon(remove=me == 0)
        raise
    return p.file_len


_FIRST = "plan"


def _what(file: str) -> str:
    return f"{file}: saving from {processes.count()} processes"


def _series(number: int | None) -> str:
    """The exchanges of save ``number`` (a new number when None)."""
    return str(processes.next_operation() if number is None else number)


def abandon(path: str | os.PathLike[str], number: int, error: BaseException) -> None:
    """Tells the other processes that this one's save ``number`` failed before it could start
    writing (a check of its own tree), so that they raise now instead of waiting for it."""
    if processes.count() > 1:
        processes.Exchanges(_series(number), _what(os.fspath(path))).fail(_FIRST, error)


def _step(steps: processes.Exchanges, name: str, work: Callable[[], Any], **kw: Any) -> list[Any]:
    """Runs ``work()`` and exchanges its result; a failure is published (the others raise at this
    step) and raised here as it is."""
    try:
        value = work()
    except Exception as e:
        steps.fail(name, e)
        raise
    return steps.exchange(name, value, **kw)


def _identity(tensors: Sequence[TensorSource], fields: dict[str, Any]) -> str:
    """A digest of everything that decides the file's layout and header, except provenance."""
    index = [
        [t.key, t.group, t.dtype, list(t.shape), t.prng_impl, t.blocks is None] for t in tensors
    ]
    rest = {k: v for k, v in fields.items() if k != "provenance"}
    return xxhash.xxh3_64_hexdigest(msgpack.packb([rest, index], use_bin_type=True))


def _own_bytes(tensors: Sequence[TensorSource], spread: list[int]) -> int:
    """The bytes of this process's blocks of the spread tensors."""
    sizes = _dtypes()
    total = 0
    for i in spread:
        itemsize = sizes[tensors[i].dtype].itemsize
        for index, _ in tensors[i].blocks():  # type: ignore[misc]
            total += math.prod(_shards.block_shape(index)) * itemsize
    return total


def _host(t: TensorSource, value: Any, shape: tuple[int, ...]) -> memoryview:
    """A tensor's (or block's) bytes: C-contiguous, of the stored dtype and ``shape``."""
    arr = value if isinstance(value, np.ndarray) else _shards.host(value)
    want = _dtypes()[t.dtype]
    if arr.dtype != want or tuple(arr.shape) != shape:
        raise JaxnetsError(
            f"{t.key}: expected {t.dtype} {shape} while saving, got {arr.dtype} {arr.shape}.",
            path=t.key,
        )
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _write(
    out: SharedFile,
    p: Plan,
    tensors: Sequence[TensorSource],
    spread: list[int],
    local: list[int],
    me: int,
    bar: _progress.Progress,
) -> dict[int, bytes]:
    """Writes this process's part of the file; returns the digests of the leaves not spread."""
    crcs: dict[int, bytes] = {}
    base = p.data_start
    if me == 0:  # every padding byte and every leaf that is not spread, in file order
        for i, t in enumerate(tensors):
            segs = p.segments(i)
            for gap, data, n in segs:
                out.add(base + gap, _gap_bytes(gap, data, n))
            if t.blocks is None:
                data_bytes = _host(t, t.get(), p.shapes[i])
                crcs[i] = xxhash.xxh3_64_digest(data_bytes)
                for at, within, n in _shards.file_pieces(segs, base, 0, p.lengths[i]):
                    out.add(at, data_bytes[within : within + n])
                bar.update(p.lengths[i])
    else:  # the others only check that they hold the same values
        for i in local:
            t = tensors[i]
            crcs[i] = xxhash.xxh3_64_digest(_host(t, t.get(), p.shapes[i]))
    itemsizes = _dtypes()
    for i in spread:
        t = tensors[i]
        segs = p.segments(i)
        for index, block in t.blocks():  # type: ignore[misc]
            shape = _shards.block_shape(index)
            data_bytes = _host(t, block, shape)
            run_len, starts = _shards.runs(p.shapes[i], index, itemsizes[t.dtype].itemsize)
            for k, start in enumerate(starts.tolist()):
                for at, within, n in _shards.file_pieces(segs, base, start, run_len):
                    out.add(at, data_bytes[k * run_len + within : k * run_len + within + n])
            out.flush()  # before the next block is copied to the host: one at a time
            bar.update(data_bytes.nbytes)
            del data_bytes
    out.flush()
    return crcs


def _differing(
    steps: processes.Exchanges,
    file: str,
    tensors: Sequence[TensorSource],
    local: list[int],
    crcs: dict[int, bytes],
) -> None:
    """Names the leaves whose values differ between processes (every process raises alike)."""
    mine = [crcs[i].hex() for i in local]
    theirs = steps.exchange("values", mine)
    keys = [tensors[i].key for n, i in enumerate(local) if len({v[n] for v in theirs}) > 1]
    shown = ", ".join(keys[:10]) + (f" (and {len(keys) - 10} more)" if len(keys) > 10 else "")
    raise JaxnetsError(
        f"{file}: these leaves differ between the processes, and one file holds one value per "
        f"key: {shown}; nothing was written. They are not arrays spread over the processes "
        "(numpy arrays, single-device jax arrays, e.g. a key from fold_in(key, process_index)): "
        "make them the same on every process, make them global arrays "
        "(jax.make_array_from_process_local_data), or save one file per process.",
        file=file,
        path=keys[0] if keys else None,
    )
