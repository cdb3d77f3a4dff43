"""The pieces of an array sharded over several processes: who stores, hashes and checks which.

A jax array's sharding splits it into blocks (``sharding.devices_indices_map``), some held by
several devices (replicas). A *piece* is one distinct block, written as its index ranges
``((start, stop), ...)`` per dimension. Each piece has one *owner*: the process of the device
with the lowest id that holds it. Every process can work this out alone, with no
communication, and gets the same answer: the owner is the one that stores a small piece (packed
into its row, :mod:`jaxnets.checkpoint._layout`) and hashes a large one (orbax writes it).

The pieces of a sharding always form a grid (each dimension cut into intervals), so a stored
list of pieces is checked by :func:`grid_problem` before anything is sliced with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "Index",
    "assemble",
    "extract",
    "grid_problem",
    "held",
    "normalize",
    "owned_data",
    "pieces",
    "slices",
    "volume",
]

Index = tuple[tuple[int, int], ...]  # (start, stop) per dimension


def normalize(index: Sequence[slice], shape: Sequence[int]) -> Index:
    """A shard's ``tuple`` of slices as ``((start, stop), ...)`` (steps are always 1 in jax)."""
    out = []
    for s, n in zip(index, shape):
        start, stop, _ = s.indices(n)
        out.append((start, stop))
    out.extend((0, n) for n in shape[len(out) :])
    return tuple(out)


def slices(index: Index) -> tuple[slice, ...]:
    """``index`` as a tuple of slices, for numpy indexing."""
    return tuple(slice(a, b) for a, b in index)


def volume(index: Index) -> int:
    return math.prod(b - a for a, b in index)


def pieces(sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> list[tuple[int, Index]]:
    """``[(owner process, index)]`` of every distinct block of ``sharding`` over ``shape``, sorted
    by index (the same list on every process)."""
    owner: dict[Index, Any] = {}
    if math.prod(shape) == 0:  # nothing to split: one empty piece
        first: Any = min(sharding.device_set, key=lambda d: d.id)  # type: ignore[attr-defined]
        return [(first.process_index, tuple((0, n) for n in shape))]
    d: Any
    for d, idx in sharding.devices_indices_map(shape).items():
        i = normalize(idx, shape)
        if i not in owner or d.id < owner[i].id:
            owner[i] = d
    return [(owner[i].process_index, i) for i in sorted(owner)]


def _shard_data(shard: Any, key: bool) -> Any:
    return jax.random.key_data(shard.data) if key else shard.data


def owned_data(x: jax.Array, wanted: Iterable[Index], *, key: bool = False) -> list[Any]:
    """This process's shard data (single-device jax arrays) for each index in ``wanted``.

    Args:
      x: a jax array; ``wanted`` are indices of its distinct blocks that this process holds.
      key: ``x`` is a typed PRNG key array: the key data (uint32, one more dimension) is returned.
    """
    by_index: dict[Index, Any] = {}
    for s in x.addressable_shards:
        by_index.setdefault(normalize(s.index, x.shape), s)
    return [_shard_data(by_index[i], key) for i in wanted]


def held(sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> dict[int, list[Index]]:
    """``{process: [distinct blocks its devices hold]}`` of ``sharding`` over ``shape``."""
    out: dict[int, set[Index]] = {}
    d: Any
    for d, idx in sharding.devices_indices_map(shape).items():
        out.setdefault(d.process_index, set()).add(normalize(idx, shape))
    return {p: sorted(v) for p, v in out.items()}


def _overlap(a: Index, b: Index) -> Index | None:
    out = []
    for (a0, a1), (b0, b1) in zip(a, b):
        lo, hi = max(a0, b0), min(a1, b1)
        if lo >= hi:
            return None
        out.append((lo, hi))
    return tuple(out)


def covers(blocks: Iterable[Index], piece: Index) -> bool:
    """Whether the (disjoint) ``blocks`` together hold all of ``piece``."""
    n = 0
    for b in blocks:
        o = _overlap(b, piece)
        if o is not None:
            n += volume(o)
    return n == volume(piece)


def extract(x: jax.Array, piece: Index, *, key: bool = False) -> np.ndarray | None:
    """``piece`` of ``x`` as a host array, from this process's shards, or None if they do not
    hold all of it. (For a key array, ``piece`` indexes the key data, trailing dimension included.)"""
    shape = tuple(b - a for a, b in piece)
    shards: dict[Index, Any] = {}
    for s in x.addressable_shards:
        i = normalize(s.index, x.shape)
        if key:
            i = i + ((0, piece[-1][1]),)
        shards.setdefault(i, s)
    if not covers(shards, piece):
        return None
    whole = [s for i, s in shards.items() if i == piece]
    if whole:
        return np.asarray(_shard_data(whole[0], key))
    out = None
    for i, s in shards.items():
        o = _overlap(i, piece)
        if o is None:
            continue
        data = np.asarray(_shard_data(s, key))
        if out is None:
            out = np.empty(shape, data.dtype)
        src = tuple(slice(a - ia, b - ia) for (a, b), (ia, _) in zip(o, i))
        dst = tuple(slice(a - pa, b - pa) for (a, b), (pa, _) in zip(o, piece))
        out[dst] = data[src]
    return out


def assemble(shape: tuple[int, ...], dtype: np.dtype, parts: Iterable[tuple[Index, np.ndarray]]) -> np.ndarray:
    """A whole host array from its pieces (checked to tile it by :func:`grid_problem`)."""
    out = np.empty(shape, dtype)
    for index, data in parts:
        out[slices(index)] = data.reshape(tuple(b - a for a, b in index))
    return out


def grid_problem(index_list: Sequence[Any], shape: Sequence[int]) -> str | None:
    """What is wrong with stored pieces ``index_list`` of an array of ``shape``, or None.

    They must be well formed (a ``[start, stop]`` pair of ints per dimension, within bounds) and
    form a grid that tiles the array exactly: each dimension cut into intervals that cover it
    without gap or overlap, and every combination of intervals present exactly once.
    """
    if math.prod(shape) == 0:
        whole = [[0, n] for n in shape]
        return None if list(index_list) == [whole] else f"an empty array must be one piece {whole}"
    seen: set[Index] = set()
    cuts: list[set[tuple[int, int]]] = [set() for _ in shape]
    for raw in index_list:
        if not isinstance(raw, list) or len(raw) != len(shape):
            return f"malformed piece {raw!r:.100}"
        index = []
        for pair, n in zip(raw, shape):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(type(v) is int for v in pair)
                or not 0 <= pair[0] < pair[1] <= n
            ):
                return f"piece {raw!r:.100} is out of bounds for shape {list(shape)}"
            index.append((pair[0], pair[1]))
        t = tuple(index)
        if t in seen:
            return f"piece {raw!r:.100} is stored twice"
        seen.add(t)
        for d, pair in enumerate(t):
            cuts[d].add(pair)
    for d, (c, n) in enumerate(zip(cuts, shape)):
        end = 0
        for a, b in sorted(c):
            if a != end:
                return f"the pieces do not tile dimension {d} (a gap or an overlap at {end})"
            end = b
        if end != n:
            return f"the pieces do not tile dimension {d} (it ends at {end}, not {n})"
    if len(seen) != math.prod(len(c) for c in cuts):
        return "the pieces do not form a grid over the array"
    return None
