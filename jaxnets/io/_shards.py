"""Shards of arrays and the bytes they occupy in a file (docs/format.md, "Several processes").

A block of a tensor (a shard: one slice per dimension) is, in the C-order bytes of the tensor,
a set of equal *runs*: the block's extent along its last partial dimension times every full
dimension after it. A block split along axis 0 is one run; a block split along the last axis of
an ``(R, C)`` tensor is ``R`` runs. Both the writer of a file spread over several processes and
the sharded reader go through :func:`runs`, so they agree on every byte.

:func:`host` gives a jax array's value on the host *without* jax caching it on the array (jax
keeps the host copy of an array it had to copy, e.g. from a GPU, for the array's lifetime: saving
a model shard by shard must not leave a host copy of the whole model behind).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxnets.io import _layout

if TYPE_CHECKING:  # arrays come from the caller: this module never imports jax (file reads)
    import jax

__all__ = ["Index", "assemble", "block_shape", "file_pieces", "host", "local_blocks", "normalize", "runs"]

Index = tuple[slice, ...]


def normalize(index: Sequence[slice], shape: Sequence[int]) -> Index:
    """``index`` (jax's shard index: ``slice(None)`` for a whole dimension) with explicit bounds.

    Raises:
      ValueError: a step other than 1 (jax shards are contiguous blocks).
    """
    out = []
    for s, n in zip(index, shape):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError(f"shard index {index} has a step; blocks are contiguous")
        out.append(slice(start, max(start, stop)))
    return tuple(out) + tuple(slice(0, n) for n in shape[len(out) :])


def block_shape(index: Index) -> tuple[int, ...]:
    """The shape of the block ``index`` (normalized) selects."""
    return tuple(s.stop - s.start for s in index)


def runs(shape: Sequence[int], index: Index, itemsize: int) -> tuple[int, np.ndarray]:
    """Where the bytes of a block lie in the tensor's C-order bytes.

    Args:
      shape: the tensor's shape.
      index: the block, normalized (:func:`normalize`).
      itemsize: bytes per element.

    Returns:
      ``(run_len, starts)``: the block's own C-order bytes are ``len(starts)`` runs of
      ``run_len`` bytes each; run ``k`` (bytes ``k * run_len`` on of the block) lies at byte
      ``starts[k]`` of the tensor. No runs (an empty ``starts``) for an empty block.
    """
    bshape = block_shape(index)
    if not shape:  # a 0-d tensor: one element
        return itemsize, np.zeros(1, np.int64)
    if 0 in bshape:
        return 0, np.zeros(0, np.int64)
    # j: the last dimension the block does not cover whole; every dimension after it is whole.
    partial = [d for d, (s, n) in enumerate(zip(index, shape)) if (s.start, s.stop) != (0, n)]
    if not partial:
        return math.prod(shape) * itemsize, np.zeros(1, np.int64)
    j = partial[-1]
    inner = math.prod(shape[j + 1 :])
    run_len = bshape[j] * inner * itemsize
    first = index[j].start * inner * itemsize
    if j == 0:
        return run_len, np.array([first], np.int64)
    grid = np.indices(bshape[:j], dtype=np.int64).reshape(j, -1)
    grid += np.array([s.start for s in index[:j]], np.int64)[:, None]
    rows = np.ravel_multi_index(tuple(grid), tuple(shape[:j]))  # C order, as the block's bytes
    return run_len, rows * (math.prod(shape[j:]) * itemsize) + first


def file_pieces(
    segments: Sequence[tuple[int, int, int]], data_start: int, start: int, n: int
) -> Iterator[tuple[int, int, int]]:
    """Splits tensor bytes ``[start, start + n)`` into ``(file offset, offset in the run, length)``.

    A tensor over :data:`~jaxnets.io._layout.MAX_SEGMENT` bytes is stored in several segments
    (``segments``: ``(gap_start, data, length)`` relative to ``data_start``, as
    :meth:`~jaxnets.io._layout.Header.segments` gives them); a run may cross from one to the next.
    """
    if len(segments) == 1:
        yield data_start + segments[0][1] + start, 0, n
        return
    done = 0
    while done < n:
        at = start + done
        s, within = divmod(at, _layout.MAX_SEGMENT)
        take = min(n - done, segments[s][2] - within)
        yield data_start + segments[s][1] + within, done, take
        done += take


def host(x: jax.Array) -> np.ndarray:
    """The value of a single-device jax array on the host, not cached on ``x``.

    On CPU this is a read-only view of the device buffer (no copy); elsewhere a fresh copy that
    is freed once the caller drops it.
    """
    # jax's own conversion (np.asarray -> Array._value) stores the copy on the array for its
    # lifetime; this is the method jax calls underneath, which does not.
    to_np = getattr(x, "_single_device_array_to_np_array_did_copy", None)
    if to_np is None:  # another jax: the public conversion
        return np.asarray(x)
    value, _ = to_np()
    return value


def local_blocks(x: jax.Array) -> list[tuple[Index, Any]]:
    """This process's shards of ``x`` that it must store: one replica of each block.

    Across the processes of a job, every block of ``x`` is returned by exactly one process (the
    one holding its replica 0).

    Returns:
      ``[(index, single-device array)]``, indices normalized; convert each with :func:`host`.
    """
    return [
        (normalize(s.index, x.shape), s.data) for s in x.addressable_shards if s.replica_id == 0
    ]


def assemble(x: jax.Array) -> np.ndarray:
    """A fully addressable jax array's whole value on the host, from its shards (one copy, not
    cached on ``x``; a single-device array on CPU is a view, no copy)."""
    if x.sharding.num_devices == 1:  # the common case, without building Shard objects
        return host(x)
    blocks = local_blocks(x)
    if len(blocks) == 1 and block_shape(blocks[0][0]) == tuple(x.shape):
        return host(blocks[0][1])
    out = np.empty(x.shape, x.dtype)
    for index, data in blocks:
        out[index] = host(data)
    return out
