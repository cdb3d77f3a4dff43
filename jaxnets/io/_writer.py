"""Writing a file: the header packed once, tensors streamed and hashed, checksums patched in.

The file is a temporary file in the destination's folder (:class:`jaxnets.io._atomic.AtomicFile`),
fsynced and renamed over the destination; see docs/format.md.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from itertools import accumulate
from operator import mul
from typing import Any, NamedTuple

import msgpack
import numpy as np
import xxhash

from jaxnets.core import progress as _progress
from jaxnets.errors import JaxnetsError
from jaxnets.io import _atomic, _layout
from jaxnets.io._layout import (
    _EXPORTABLE,
    _NIL,
    ALIGN,
    GROUPS,
    PREAMBLE_LEN,
    TensorSource,
    _align,
    _dtypes,
    _end,
    _gap_bytes,
    _itemsizes,
    _next_offset,
    _no_gc,
    _padding,
    _preamble,
    _segments_at,
)

__all__ = ["Plan", "plan", "write_file"]


class Plan(NamedTuple):
    """Where everything of a file goes, computed from the tensor list and the header fields alone.

    Attributes:
      header: the header packed with zero checksums.
      crc_at: the byte position in ``header`` of each tensor's 8 checksum bytes.
      shapes, offsets, lengths: per tensor (offsets relative to ``data_start``).
      data_start, file_len: in bytes.
    """

    header: bytes
    crc_at: list[int]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    lengths: list[int]
    data_start: int
    file_len: int

    def segments(self, i: int) -> tuple[tuple[int, int, int], ...]:
        """Tensor ``i``'s segments ``(gap_start, data, length)`` relative to ``data_start``."""
        gap = _end(self.offsets[i - 1], self.lengths[i - 1]) if i else 0
        return _segments_at(gap, self.lengths[i])

    def final(self, crcs: Sequence[bytes]) -> bytes:
        """The file's bytes before ``data_start``: the preamble, the header with the checksums
        ``crcs`` (8 bytes each) patched in, and the nil padding after it."""
        final = bytearray(self.header)
        if crcs:  # all at once
            at = np.asarray(self.crc_at)[:, None] + np.arange(8)
            np.frombuffer(final, np.uint8)[at] = np.frombuffer(b"".join(crcs), np.uint8).reshape(-1, 8)
        pad = _NIL * (self.data_start - PREAMBLE_LEN - len(final))
        return _preamble(len(final), zlib.crc32(final), self.file_len) + final + pad


def plan(tensors: Sequence[TensorSource], fields: Mapping[str, Any]) -> Plan:
    """Checks what is to be written and lays it out (see :func:`write_file`).

    Raises:
      ValueError: as :func:`write_file`.
    """
    if "tensors" in fields:
        raise ValueError("fields must not hold 'tensors': write_file builds the tensor index")
    sizes = _itemsizes()
    for t in tensors:  # what a reader would refuse is refused here, before anything is written
        if not (isinstance(t.key, str) and t.group in GROUPS):
            raise ValueError(f"{t.key!r}: keys are str and groups one of {GROUPS}, got {t.group!r}")
        if not (isinstance(t.dtype, str) and t.dtype in sizes):
            raise ValueError(f"{t.key}: dtype {t.dtype!r} is not one jaxnets stores")
    if len({(t.group, t.key) for t in tensors}) != len(tensors):
        seen: set[tuple[str, str]] = set()
        for t in tensors:
            if (t.group, t.key) in seen:
                raise ValueError(f"{t.key}: stored twice in group {t.group!r}")
            seen.add((t.group, t.key))
    shapes = [tuple(t.shape) for t in tensors]
    lengths = list(map(mul, map(math.prod, shapes), [sizes[t.dtype] for t in tensors]))
    offsets = list(accumulate(lengths[:-1], _next_offset, initial=ALIGN)) if tensors else []
    data_len = _end(offsets[-1], lengths[-1]) if tensors else 0
    header, crc_at = _pack_header(tensors, shapes, offsets, lengths, fields)
    data_start = _align(PREAMBLE_LEN + len(header))
    return Plan(header, crc_at, shapes, offsets, lengths, data_start, data_start + data_len)


def write_file(
    path: str | os.PathLike[str],
    tensors: Sequence[TensorSource],
    fields: Mapping[str, Any],
    *,
    fsync: bool = True,
    progress: bool | None = False,
) -> int:
    """Writes a file atomically, streaming one tensor at a time.

    The header is packed once with zero checksums (fixed-width ``bin 8`` each, the last item of
    each entry, so their byte positions are known), the tensors are streamed and hashed, then the
    checksums are patched into the header and it is rewritten in place. The file is a temporary
    file in the destination's folder (see :mod:`jaxnets.io._atomic`), fsynced and renamed; leftover
    temporary files of dead writers in that folder are removed first.

    Memory: each tensor is converted (``get()``) when it is written; one converted tensor over
    32 MiB is alive at a time, plus at most three 32 MiB batches of smaller ones being written.

    Args:
      path: the destination; it is replaced only once the new file is complete (and fsynced).
      tensors: what to store, in order (none with ``blocks``: see :mod:`jaxnets.io._spread`).
      fields: the rest of the header (JSON-able; ``"tensors"`` is reserved).
      fsync: flush the data to the disk before renaming (default); False only for scratch files.
      progress: a progress bar in bytes (:mod:`jaxnets.core.progress`; None: for 1 GiB or more
        on a terminal).

    Returns:
      The file's size in bytes.

    Raises:
      FileWriteError: the operating system refused a write (disk full, read-only filesystem...);
        nothing at ``path`` was changed. Also an ``OSError``.
      JaxnetsError: a tensor's ``get()`` returned the wrong dtype/shape (or whatever it raised).
      ValueError: ``fields`` holds ``"tensors"``; a tensor has an unknown dtype or group, or its
        key twice in one group.
    """
    path = os.fspath(path)
    p = plan(tensors, fields)
    data_len = p.file_len - p.data_start
    # Large tensors are written from a background thread while this one hashes the next ones.
    # Not many small ones: the two threads would hand the GIL back and forth for every batch.
    background = data_len >= _BACKGROUND and data_len >= len(tensors) * _BACKGROUND_PER_TENSOR
    with (
        _progress.progress(data_len, f"saving {path}", progress) as bar,
        _atomic.AtomicFile(path, background=background) as out,
    ):
        out.add(_preamble(len(p.header), 0, p.file_len) + p.header)
        out.add(_NIL * (p.data_start - PREAMBLE_LEN - len(p.header)))
        crcs = _stream(out, tensors, p.shapes, p.offsets, p.lengths, bar)
        out.pwrite(p.final(crcs), 0)
        out.commit(fsync=fsync)
    return p.file_len


_BACKGROUND = 8 << 20  # bytes of data, and per tensor, from which a writer thread pays
_BACKGROUND_PER_TENSOR = 1 << 20


def _pack_header(
    tensors: Sequence[TensorSource],
    shapes: list[tuple[int, ...]],
    offsets: list[int],
    lengths: list[int],
    fields: Mapping[str, Any],
) -> tuple[bytes, list[int]]:
    """(header bytes with zero checksums, byte position of each tensor's checksum)."""
    packer = msgpack.Packer(use_bin_type=True)
    # The header map with "tensors" last: pack it with a nil there and cut the nil off (1 byte).
    head = packer.pack({**fields, "tensors": None})[:-1] + packer.pack_array_header(len(tensors))
    zero = bytes(8)
    pack = packer.pack
    with _no_gc():
        packed = [
            pack({"key": t.key, "group": t.group, "dtype": t.dtype, "shape": list(s), "offset": o,
                  "length": n, "xxh3": zero})
            if not t.prng_impl else
            pack({"key": t.key, "group": t.group, "dtype": t.dtype, "shape": list(s), "offset": o,
                  "length": n, "prng_impl": t.prng_impl, "xxh3": zero})
            for t, s, o, n in zip(tensors, shapes, offsets, lengths)
        ]  # fmt: skip
    # "xxh3" is each entry's last item: its 8 bytes end the entry.
    crc_at = [len(head) + end - 8 for end in accumulate(map(len, packed))]
    return head + b"".join(packed), crc_at


def _stream(
    out: _atomic.AtomicFile,
    tensors: Sequence[TensorSource],
    shapes: list[tuple[int, ...]],
    offsets: list[int],
    lengths: list[int],
    bar: _progress.Progress,
) -> list[bytes]:
    """Queues every tensor's padding and bytes; returns their XXH3-64 digests (8 bytes each)."""
    dtypes = _dtypes()
    digest = xxhash.xxh3_64_digest
    big = out.MAX_BYTES
    crcs = []
    pos = 0
    counted = 0  # bytes handed to the writer, not yet shown on the bar
    for t, shape, off, n in zip(tensors, shapes, offsets, lengths):  # per tensor: keep it lean
        if n >= big:
            # A large tensor may be a fresh host copy (from a device): let the writer finish the
            # previous ones first, so that one such copy at a time is alive.
            out.wait()
        if counted >= big:
            bar.update(counted)
            counted = 0
        counted += n
        arr = t.get()
        want = dtypes[t.dtype]
        if type(arr) is not np.ndarray or arr.dtype != want or arr.shape != shape:
            if not isinstance(arr, np.ndarray) or arr.dtype != want or tuple(arr.shape) != shape:
                got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
                raise JaxnetsError(
                    f"{t.key}: expected {t.dtype} {shape} while saving, got {got}.", path=t.key
                )
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        if n > _layout.MAX_SEGMENT:
            crcs.append(_stream_segments(out, arr, pos, n))
            pos = _end(off, n)
            arr = None  # type: ignore[assignment]
            continue
        # numpy cannot export ml_dtypes arrays (bfloat16...) as buffers; their bytes it can.
        data = arr if _EXPORTABLE[t.dtype] else arr.reshape(-1).view(np.uint8)
        buffers = out.buffers
        buffers.append(_padding(off - 5 - pos, n))
        buffers.append(data)
        out.nbytes += off - pos + n
        if len(buffers) >= out.MAX_BUFFERS or out.nbytes >= big:
            out.flush()  # before hashing: a writer thread copies while this one hashes
        crcs.append(digest(data))  # type: ignore[arg-type]
        arr = data = buffers = None  # type: ignore[assignment]  # the writer's only, until written
        pos = off + n
    bar.update(counted)
    return crcs


def _stream_segments(out: _atomic.AtomicFile, arr: np.ndarray, pos: int, n: int) -> bytes:
    """Queues a tensor over MAX_SEGMENT bytes as several bin32 segments; returns its digest."""
    flat = arr.reshape(-1).view(np.uint8)
    h = xxhash.xxh3_64()
    start = 0
    for gap, at, length in _segments_at(pos, n):
        out.add(_gap_bytes(gap, at, length))
        part = flat[start : start + length]
        out.add(part)
        h.update(part)  # type: ignore[arg-type]
        start += length
    return h.digest()
