"""Where each leaf of a multi-process save goes, and how the processes' parts come back.

In a job of several processes (docs/checkpoints.md, "Checkpoints on several hosts") a leaf is:

* a **global array** (a jax array no process holds entirely, or one replicated over the
  processes' devices): jax guarantees one value. A large one is written by orbax, each process
  its shards; jaxnets hashes each distinct block ("piece", :mod:`._pieces`) on the process that
  owns it. A small one (< ``group_below``) is packed: each process appends the pieces it owns to
  its *row* of a per-dtype buffer ``__pgroup__.<dtype>``, a global array of shape
  ``(processes, length)`` whose row p is written by process p. So a 2,000-leaf sharded tree is
  one orbax array per dtype, as in one process, and a replicated leaf is written once.
* a **process-local value** (a numpy array, a Python or numpy scalar, a jax array on this
  process's devices, a PRNG key made here): each process has its own, and they may differ.
  By default they must not: every process hashes them, and the save is refused on every process
  if any differs (naming the keys). Equal values are stored once, by process 0, like any leaf
  of a single-process save. Leaves under ``save(per_process=...)`` are instead stored per
  process: process p's value in row p of the same per-dtype buffer, restored to process p of a
  job with as many processes.

The layout (offsets of every piece and per-process value in every row) depends only on shapes,
dtypes and shardings, so every process computes the same one with no communication; only the
hashes of what each process wrote travel, to process 0, which writes the metadata.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxnets.checkpoint import _pieces
from jaxnets.checkpoint._integrity import array_checksum
from jaxnets.checkpoint.meta import PGROUP_PREFIX, key_size
from jaxnets.errors import CheckpointError

__all__ = ["Spread", "assemble_leaf", "gathered_meta", "make_spread", "row_arrays", "shard_hashes", "take_pieces"]


@dataclasses.dataclass(frozen=True)
class Spread:
    """The multi-process part of a plan (see the module docstring).

    Attributes:
      processes, index: the job's process count and this process's index.
      pieces: leaf index -> ``[(owner process, index ranges)]`` of each global leaf (small ones
        packed in rows, large ones hashed per piece).
      owned: leaf index -> positions in ``pieces[i]`` this process owns.
      row: dtype -> this process's row, in order: ``(leaf index, piece position)``, or
        ``(leaf index, None)`` for a per-process leaf.
      lengths: dtype -> the row length (the longest process's; shorter rows are zero-padded).
      per_process: leaf indices stored per process.
      once: leaf indices of process-local values stored once (compared across processes).
    """

    processes: int
    index: int
    pieces: dict[int, list[tuple[int, _pieces.Index]]]
    owned: dict[int, list[int]]
    row: dict[str, list[tuple[int, int | None]]]
    lengths: dict[str, int]
    per_process: list[int]
    once: list[int]


def make_spread(
    keys: Sequence[str],
    leaves: Sequence[Any],
    entries: Mapping[str, dict[str, Any]],
    *,
    packed: Sequence[int],
    alone: Sequence[int],
    per_process: Sequence[int],
    once: Sequence[int],
) -> tuple[Spread, dict[str, Any]]:
    """Lays out a multi-process save; fills the leaves' entries (``pgroup``, ``pieces``,
    ``offsets``) and returns the spread and the ``pgroups`` metadata (lengths; hashes later).

    Args:
      keys, leaves: every leaf, by index.
      entries: the leaves' metadata entries, updated in place.
      packed: small global leaves (packed as pieces in rows).
      alone: large global leaves (stored by orbax; hashed per piece).
      per_process: leaves stored per process.
      once: process-local leaves stored once.
    """
    n, me = jax.process_count(), jax.process_index()
    pieces: dict[int, list[tuple[int, _pieces.Index]]] = {}
    for i in list(packed) + list(alone):
        pieces[i] = _pieces.pieces(leaves[i].sharding, tuple(leaves[i].shape))
    ends: dict[str, list[int]] = {}
    row: dict[str, list[tuple[int, int | None]]] = {}
    # Rows are filled in the metadata's leaf order, the order check_meta walks them in.
    position = {k: i for i, k in enumerate(keys)}
    wanted = set(packed) | set(per_process)
    for i in [position[k] for k in entries if position[k] in wanted]:
        e = entries[keys[i]]
        dt = "uint32" if e["kind"] == "key" else e["dtype"]
        words = key_size(e["impl"]) if e["kind"] == "key" else 1
        end = ends.setdefault(dt, [0] * n)
        mine = row.setdefault(dt, [])
        e["pgroup"] = dt
        if i in pieces:
            stored = []
            for pos, (owner, index) in enumerate(pieces[i]):
                stored.append([owner, end[owner], [list(r) for r in index]])
                end[owner] += _pieces.volume(index) * words
                if owner == me:
                    mine.append((i, pos))
            e["pieces"] = stored
        else:
            size = math.prod(e["shape"]) * words
            e["offsets"] = list(end)
            for p in range(n):
                end[p] += size
            mine.append((i, None))
    owned = {i: [pos for pos, (owner, _) in enumerate(ps) if owner == me] for i, ps in pieces.items()}
    lengths = {dt: max(e) for dt, e in ends.items()}
    spread = Spread(n, me, pieces, owned, row, lengths, sorted(per_process), sorted(once))
    return spread, {dt: {"length": length} for dt, length in lengths.items()}


def take_pieces(spread: Spread, i: int, x: jax.Array, key: bool) -> list[Any]:
    """The shards of global leaf ``i`` this process owns, as device arrays (copies start now)."""
    wanted = [spread.pieces[i][pos][1] for pos in spread.owned[i]]
    if math.prod(x.shape) == 0:
        shape = tuple(x.shape) + ((key_size(str(jax.random.key_impl(x))),) if key else ())
        return [np.zeros(shape, np.uint32 if key else x.dtype) for _ in wanted]
    data = _pieces.owned_data(x, wanted, key=key)
    for d in data:
        if any(dev.platform != "cpu" for dev in d.devices()):
            d.copy_to_host_async()
    return data


def _row_devices() -> list[Any]:
    """One device per process (its lowest id): the mesh the rows are sharded over."""
    first: dict[int, Any] = {}
    for d in jax.devices():
        if d.process_index not in first or d.id < first[d.process_index].id:
            first[d.process_index] = d
    return [first[p] for p in sorted(first)]


def row_arrays(spread: Spread, data: Sequence[Any]) -> tuple[dict[str, jax.Array], dict[str, str]]:
    """This process's rows as global ``(processes, length)`` arrays, and the hash of each row.

    Args:
      data: per leaf, the snapshot's data: a list of owned pieces (host arrays) for a packed
        global leaf, the host array of a per-process leaf.
    """
    devices = _row_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("process",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("process"))
    mine = devices[spread.index]
    arrays: dict[str, jax.Array] = {}
    sums: dict[str, str] = {}
    for dt, members in spread.row.items():
        length = spread.lengths[dt]
        row = np.zeros((1, length), np.dtype(dt))
        at = 0
        for i, pos in members:
            part = data[i][spread.owned[i].index(pos)] if pos is not None else data[i]
            flat = np.asarray(part).reshape(-1)
            row[0, at : at + flat.size] = flat
            at += flat.size
        sums[dt] = array_checksum(row[0])
        arrays[PGROUP_PREFIX + dt] = jax.make_array_from_single_device_arrays(
            (spread.processes, length), sharding, [jax.device_put(row, mine)]
        )
    return arrays, sums


def shard_hashes(spread: Spread, i: int, x: jax.Array) -> list[str]:
    """Hashes of the pieces of large global leaf ``i`` this process owns (``x``: its data)."""
    wanted = [spread.pieces[i][pos][1] for pos in spread.owned[i]]
    if math.prod(x.shape) == 0:
        return [array_checksum(np.zeros(x.shape, x.dtype)) for _ in wanted]
    if wanted and x.ndim > len(wanted[0]):  # PRNG key data: one more dimension
        wanted = [w + ((0, x.shape[-1]),) for w in wanted]
    data = _pieces.owned_data(x, wanted)
    return [array_checksum(np.asarray(d)) for d in data]


def gathered_meta(
    spread: Spread,
    keys: Sequence[str],
    leaves: dict[str, dict[str, Any]],
    pgroups: dict[str, dict[str, Any]],
    parts: Sequence[Mapping[str, Any]],
) -> None:
    """(Process 0) puts every process's hashes into the metadata, in place.

    Args:
      parts: by process, ``{"rows": {dtype: hash}, "shards": {key: [hash of each owned piece]}}``.
    """
    for dt, g in pgroups.items():
        g["rows"] = [part["rows"][dt] for part in parts]
    for i, ps in spread.pieces.items():
        k = keys[i]
        if "pgroup" in leaves[k]:
            continue
        taken = [0] * spread.processes
        shards = []
        for owner, index in ps:
            shards.append([[list(r) for r in index], parts[owner]["shards"][k][taken[owner]]])
            taken[owner] += 1
        leaves[k] = {**leaves[k], "shards": shards}
        leaves[k].pop("xxh3", None)


def assemble_leaf(
    key: str, e: Mapping[str, Any], rows: Mapping[str, np.ndarray], *, step_dir: str
) -> np.ndarray:
    """One packed leaf's data (host array) from the restored rows.

    A piece-packed global leaf is assembled whole (it is small: < ``group_below``); a
    per-process leaf is this process's row's value.

    Raises:
      CheckpointError: a per-process leaf in a job with another number of processes than saved.
    """
    buf = rows[e["pgroup"]]
    shape = tuple(e["shape"])
    tail = (key_size(e["impl"]),) if e["kind"] == "key" else ()
    if "offsets" in e:
        p = jax.process_index()
        if len(e["offsets"]) != jax.process_count():
            raise CheckpointError(
                f"{step_dir}: {key} was saved per process by {len(e['offsets'])} processes; this "
                f"job has {jax.process_count()}. Restore it in a job with as many processes, or "
                "leave it out (like=..., partial=True).",
                path=key,
                file=step_dir,
            )
        start = e["offsets"][p]
        return np.asarray(buf[p, start : start + math.prod(shape + tail)]).reshape(shape + tail)
    parts = []
    for owner, offset, index in e["pieces"]:
        idx = tuple((a, b) for a, b in index)
        n = _pieces.volume(idx) * (tail[0] if tail else 1)
        piece_shape = tuple(b - a for a, b in idx) + tail
        parts.append((idx + (((0, tail[0]),) if tail else ()), buf[owner, offset : offset + n].reshape(piece_shape)))
    return _pieces.assemble(shape + tail, buf.dtype, parts)
