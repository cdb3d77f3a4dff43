"""Checksums of checkpoint arrays (XXH3-64, the hash model files use, as 16 hex digits), and the
checks that what orbax read back is what was written.

What is covered, and what not, is in docs/checkpoints.md ("Integrity"). In short: the bytes of
every stored array (each packed group, each array stored on its own) and the ``meta`` JSON
itself; the hashes of the arrays live in ``meta``, and ``meta`` carries the hash of its own
canonical JSON form, so that one changed bit anywhere in what a restore returns is caught.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import xxhash

from jaxnets.checkpoint import _pieces
from jaxnets.checkpoint.meta import ArraySpec, describe, step_label
from jaxnets.core.structure import dtype_name
from jaxnets.errors import CheckpointError

__all__ = ["array_checksum", "check_arrays", "checksums", "verify_checksums"]

_PARALLEL_BYTES = 32 << 20
_MAX_PROBLEMS = 10  # below this, starting threads costs more than it saves


def _bytes(x: np.ndarray) -> np.ndarray:
    """``x``'s C-order, little-endian bytes as a flat uint8 array (no copy when already so)."""
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    return np.ascontiguousarray(x).reshape(-1).view(np.uint8)


def array_checksum(x: np.ndarray) -> str:
    """XXH3-64 of an array's bytes in C order, as 16 hex digits."""
    return f"{xxhash.xxh3_64_intdigest(_bytes(x).data):016x}"


def checksums(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """:func:`array_checksum` of every array, on several threads when there is much data.

    xxhash releases the GIL, so hashing runs at memory speed on every core.
    """
    total = sum(a.nbytes for a in arrays.values())
    workers = min(len(arrays), os.cpu_count() or 1, 8)
    if total < _PARALLEL_BYTES or workers < 2:
        return {k: array_checksum(a) for k, a in arrays.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jaxnets-xxh3") as pool:
        return dict(zip(arrays, pool.map(array_checksum, arrays.values())))


def check_arrays(specs: Mapping[str, ArraySpec], arrays: Mapping[str, Any], *, step_dir: str) -> None:
    """Checks that orbax returned each entry with the shape and dtype the metadata states.

    Raises:
      CheckpointError: an entry is missing or differs, naming the step and the entry.
    """
    problems = []
    for name, spec in specs.items():
        a = arrays.get(name)
        if a is None or not hasattr(a, "shape") or not hasattr(a, "dtype"):
            problems.append((name, f"{describe(name, spec)}: not in the stored arrays"))
            continue
        got = (tuple(int(d) for d in a.shape), dtype_name(a.dtype))
        if got != (spec.shape, spec.dtype):
            problems.append(
                (
                    name,
                    f"{describe(name, spec)}: stored as {got[1]} {got[0]}, the metadata says "
                    f"{spec.dtype} {spec.shape}",
                )
            )
    if problems:
        lines = "\n".join(f"  {p}" for _, p in problems[:_MAX_PROBLEMS])
        raise CheckpointError(
            f"{step_label(step_dir)}: the stored arrays do not match the metadata (corrupted):\n{lines}",
            path=problems[0][0],
            file=step_dir,
        )


def _label(name: str, index: _pieces.Index) -> str:
    return f"{name}[{', '.join(f'{a}:{b}' for a, b in index)}]"


def _blocks(
    name: str, spec: ArraySpec, x: Any
) -> tuple[list[tuple[str, str]], list[tuple[str, _pieces.Index, str]]]:
    """Checks the stored blocks of ``name`` that this process holds whole in ``x`` (the restored
    array, not fully addressable here, or saved by several processes).

    Returns:
      ``(bad, unheld)``: the blocks that differ (name, label), and those no process holds whole
      under the restored sharding (name, index, checksum), which must be read again to be checked.
    """
    if spec.shards is not None:
        extra = x.ndim - len(spec.shards[0][0]) if spec.shards else 0  # PRNG key data: +1 dim
        tail = tuple((0, n) for n in x.shape[x.ndim - extra :])
        stored = [(index + tail, h) for index, h in spec.shards]
    else:  # saved whole by one process
        assert spec.xxh3 is not None
        stored = [(tuple((0, n) for n in x.shape), spec.xxh3)]
    bad: list[tuple[str, str]] = []
    unheld: list[tuple[str, _pieces.Index, str]] = []
    by_process = None
    for index, h in stored:
        piece = x[_pieces.slices(index)] if isinstance(x, np.ndarray) else _pieces.extract(x, index)
        if piece is not None:
            if array_checksum(piece) != h:
                bad.append((name, _label(name, index)))
            continue
        if by_process is None:  # which process holds what, under the restored sharding
            by_process = _pieces.held(x.sharding, tuple(x.shape))
        if not any(_pieces.covers(blocks, index) for blocks in by_process.values()):
            unheld.append((name, index, h))
    return bad, unheld


Reread = Callable[[Mapping[str, list[tuple[slice, ...]]]], Mapping[str, tuple[np.ndarray, ...]]]


def verify_checksums(
    specs: Mapping[str, ArraySpec],
    arrays: Mapping[str, Any],
    *,
    step_dir: str,
    reread: Reread | None = None,
) -> None:
    """Checks every restored array against the checksums the metadata stores for it.

    An array stored whole (one checksum) and held whole here is hashed whole; a per-process
    group row by row; any other array block by block (an array saved by several processes has
    a checksum per distinct block, one saved whole is one block): each process checks every
    stored block it holds whole under the restored sharding (the others hold and check the
    rest). A block that no process holds whole (a restore sharding that cuts across the saved
    blocks, e.g. a replicated array restored sharded) is read again from disk in its saved
    layout by one process (round-robin over the processes) and checked there.

    Args:
      specs: the expected entries (:func:`array_specs`), shapes and dtypes already checked
        (:func:`check_arrays`).
      arrays: what orbax returned (numpy arrays or jax arrays).
      step_dir: the step directory (named in errors, with the step).
      reread: ``reread({name: [index, ...]})`` reads stored blocks again (host arrays); without
        it, a block no process holds is an error.

    Raises:
      CheckpointError: an entry has no checksum, or its bytes differ from what was saved; names
        the step and the key (or the packed group and its leaves, or the block).
    """
    where = step_label(step_dir)
    missing = [n for n, s in specs.items() if s.xxh3 is None and s.rows is None and s.shards is None]
    if missing:
        raise CheckpointError(
            f"{where}: no checksum is stored for {describe(missing[0], specs[missing[0]])} (a "
            "checkpoint written by jaxnets 0.1, or an array saved by several processes with "
            "jaxnets 0.2); restore with verify=False to read it unchecked.",
            path=missing[0],
            file=step_dir,
        )

    def held_here(name: str) -> bool:
        x = arrays[name]
        return isinstance(x, np.ndarray) or x.is_fully_addressable

    whole = [n for n, s in specs.items() if s.xxh3 is not None and held_here(n)]
    for name in whole:
        x = arrays[name]
        if isinstance(x, jax.Array) and any(d.platform != "cpu" for d in x.devices()):
            x.copy_to_host_async()  # accelerators: start every transfer before waiting on one
    got = checksums({name: np.asarray(arrays[name]) for name in whole})
    bad = [(n, describe(n, specs[n])) for n in whole if got[n] != specs[n].xxh3]
    unheld: list[tuple[str, _pieces.Index, str]] = []
    for name, spec in specs.items():
        if spec.rows is not None:
            rows = np.asarray(arrays[name])
            bad += [
                (name, f"{describe(name, spec)}, row {p}")
                for p, h in enumerate(spec.rows)
                if array_checksum(rows[p]) != h
            ]
        elif name not in whole:
            b, u = _blocks(name, spec, arrays[name])
            bad += b
            unheld += u
    mine = unheld[jax.process_index() :: jax.process_count()]
    if mine and reread is None:
        raise CheckpointError(
            f"{where}: cannot check {', '.join(_label(n, i) for n, i, _ in mine[:5])}: no process "
            "holds it whole under this sharding. Restore with verify=False, or with a sharding "
            "under which each saved block lies on one process.",
            path=mine[0][0],
            file=step_dir,
        )
    if mine and reread is not None:
        wanted: dict[str, list[tuple[slice, ...]]] = {}
        for name, index, _ in mine:
            wanted.setdefault(name, []).append(_pieces.slices(index))
        data = reread(wanted)
        taken: dict[str, int] = {}
        for name, index, h in mine:
            i = taken[name] = taken.get(name, -1) + 1
            if array_checksum(data[name][i]) != h:
                bad.append((name, _label(name, index) + " (read again)"))
    if bad:
        shown = "; ".join(label for _, label in bad[:5])
        raise CheckpointError(
            f"{where}: {len(bad)} stored array(s) do not match their checksums: {shown}. The data "
            "on disk changed after it was written (bit rot, a partial copy, an edit). Restore "
            "another step, or restore(..., verify=False) to read the damaged values anyway.",
            path=bad[0][0],
            file=step_dir,
        )
