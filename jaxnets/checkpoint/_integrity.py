"""Checksums of checkpoint arrays (XXH3-64, the hash model files use, as 16 hex digits), and the
checks that what orbax read back is what was written.

What is covered, and what not, is in docs/checkpoints.md ("Integrity"). In short: the bytes of
every stored array (each packed group, each array stored on its own) and the ``meta`` JSON
itself; the hashes of the arrays live in ``meta``, and ``meta`` carries the hash of its own
canonical JSON form, so that one changed bit anywhere in what a restore returns is caught.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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


def _host(name: str, x: Any, step_dir: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if not x.is_fully_addressable:
        raise CheckpointError(
            f"{step_label(step_dir)}: {name} was saved whole by one process, and is restored "
            "across processes here, so no process holds all of it to check its checksum; restore "
            "it onto each process's devices (device=..., or a sharding of local devices), or with "
            "verify=False.",
            path=name,
            file=step_dir,
        )
    return np.asarray(x)  # CPU: a view of the restored buffer; accelerators: the host copy


def _piece_problems(name: str, spec: ArraySpec, x: Any) -> tuple[list[str], list[str]]:
    """Checks the stored pieces of an array saved by several processes that this process holds
    whole in ``x`` (the restored array); returns (pieces that differ, pieces no process holds)."""
    assert spec.shards is not None
    bad: list[str] = []
    unheld: list[str] = []
    extra = x.ndim - len(spec.shards[0][0]) if spec.shards else 0  # PRNG key data: +1 dimension
    by_process = None
    for index, h in spec.shards:
        full = index + tuple((0, n) for n in x.shape[x.ndim - extra :])
        piece = x[_pieces.slices(full)] if isinstance(x, np.ndarray) else _pieces.extract(x, full)
        if piece is not None:
            if array_checksum(piece) != h:
                bad.append(f"{name}[{', '.join(f'{a}:{b}' for a, b in index)}]")
            continue
        if by_process is None:  # which process holds what, under the restored sharding
            by_process = _pieces.held(x.sharding, tuple(x.shape))
        if not any(_pieces.covers(blocks, full) for blocks in by_process.values()):
            unheld.append(f"{name}[{', '.join(f'{a}:{b}' for a, b in index)}]")
    return bad, unheld


def verify_checksums(
    specs: Mapping[str, ArraySpec], arrays: Mapping[str, Any], *, step_dir: str
) -> None:
    """Checks every restored array against the checksums the metadata stores for it.

    An array stored whole (one checksum) is hashed whole; a per-process group row by row; an
    array saved by several processes (a checksum per distinct block, "piece") piece by piece:
    each process checks every stored piece it holds whole under the restored sharding (the
    others hold and check the rest). A piece that no process holds whole (a restore sharding
    that cuts across the saved blocks) cannot be checked: that is an error, not a skipped check.

    Args:
      specs: the expected entries (:func:`array_specs`), shapes and dtypes already checked
        (:func:`check_arrays`).
      arrays: what orbax returned (numpy arrays or jax arrays).
      step_dir: the step directory (named in errors, with the step).

    Raises:
      CheckpointError: an entry has no checksum, or its bytes differ from what was saved, or
        cannot be checked under the restored sharding; names the step and the key (or the
        packed group and its leaves).
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
    whole = [n for n, s in specs.items() if s.xxh3 is not None]
    for name in whole:
        x = arrays[name]
        if isinstance(x, jax.Array) and x.is_fully_addressable and any(d.platform != "cpu" for d in x.devices()):
            x.copy_to_host_async()  # accelerators: start every transfer before waiting on one
    got = checksums({name: _host(name, arrays[name], step_dir) for name in whole})
    bad = [(n, describe(n, specs[n])) for n in whole if got[n] != specs[n].xxh3]
    unheld: list[str] = []
    for name, spec in specs.items():
        if spec.rows is not None:
            rows = np.asarray(arrays[name])
            bad += [
                (name, f"{describe(name, spec)}, row {p}")
                for p, h in enumerate(spec.rows)
                if array_checksum(rows[p]) != h
            ]
        elif spec.shards is not None:
            b, u = _piece_problems(name, spec, arrays[name])
            bad += [(name, label) for label in b]
            unheld += u
    if bad:
        shown = "; ".join(label for _, label in bad[:5])
        raise CheckpointError(
            f"{where}: {len(bad)} stored array(s) do not match their checksums: {shown}. The data "
            "on disk changed after it was written (bit rot, a partial copy, an edit). Restore "
            "another step, or restore(..., verify=False) to read the damaged values anyway.",
            path=bad[0][0],
            file=step_dir,
        )
    if unheld:
        raise CheckpointError(
            f"{where}: cannot check {', '.join(unheld[:5])}: it was saved as one block by one "
            "process, and the restore sharding splits it across processes, so no process holds "
            "it whole to hash it. Restore with a sharding under which each saved block lies on "
            "one process (e.g. the sharding it was saved with, or device=...), or with "
            "verify=False.",
            path=unheld[0].split("[")[0],
            file=step_dir,
        )
