"""Reading tensors: one by one through a descriptor, or all of them from one private mapping.

Every read checks the padding before the tensor and (unless told not to) its XXH3-64 hash, and
raises FileFormatError naming the file and the tensor (docs/format.md).
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import xxhash

from jaxnets.core.progress import Progress
from jaxnets.errors import FileFormatError
from jaxnets.io import _layout, _shards
from jaxnets.io._header import check_identity, read_header
from jaxnets.io._layout import (
    _CHUNK,
    _EXPORTABLE,
    MMAP_NO_FD,
    Entry,
    Header,
    _dtypes,
    _end,
    _fail,
    _gap_bytes,
    _padding,
    _segments_at,
)

__all__ = [
    "READ_AHEAD", "STREAM_CHUNK", "read_at", "read_near", "read_arrays", "read_block", "read_tensor",
    "read_tensors", "stream_digest", "verify_file", "verify_streaming",
]  # fmt: skip


def read_at(fd: int, header: Header, i: int, *, verify: bool = True) -> np.ndarray:
    """Reads entry ``i`` from an open descriptor of ``header``'s file (one ``preadv`` per segment).

    Only its padding and bytes are read (O(1) in the number of entries). Reads are positional, so
    several threads may read from one descriptor at once.

    Returns:
      A new numpy array of the stored dtype and shape (PRNG keys: their uint32 key data).

    Raises:
      FileFormatError: corrupted padding or checksum, or a truncated file, naming the tensor.
      OSError: the operating system could not read.
    """
    c = header.columns
    key, dtype, length = c.keys[i], c.dtypes[i], c.lengths[i]
    out = np.empty(c.shapes[i], _dtypes()[dtype])
    # numpy cannot export ml_dtypes arrays (bfloat16...) as buffers; their bytes it can.
    flat = out if _EXPORTABLE[dtype] else out.reshape(-1).view(np.uint8)
    gap = header.gap_start(i)
    segs = (
        ((gap, c.offsets[i], length),)
        if length <= _layout.MAX_SEGMENT
        else _segments_at(gap, length)
    )
    h = xxhash.xxh3_64() if len(segs) > 1 else None
    start = 0
    for gap, data, n in segs:
        pad = bytearray(data - gap)
        part = flat if h is None else flat[start : start + n]
        if not _read_exact(fd, [pad, part], header.data_start + gap, len(pad) + n):
            raise _fail(header.file, f"tensor {key!r}: file truncated while reading.", key)
        if pad != _gap_bytes(gap, data, n):
            raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
        if h is not None:
            h.update(part)  # type: ignore[arg-type]
        start += n
    if verify and (xxhash.xxh3_64_digest(flat) if h is None else h.digest()) != c.xxh3[i]:  # type: ignore[arg-type]
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)
    return out


READ_AHEAD = 256 << 10  # bytes read at once for small tensors (see read_near)
_SMALL = 64 << 10


def read_near(
    fd: int, header: Header, i: int, ahead: tuple[int, memoryview], *, verify: bool = True
) -> tuple[np.ndarray, tuple[int, memoryview]]:
    """Reads entry ``i`` like :func:`read_at`, small tensors through a read-ahead window.

    ``ahead`` is ``(start, window)``: the file's bytes from ``start`` on, from an earlier call
    (``(0, memoryview(b""))`` at first). A tensor of up to 64 KiB (with its padding) inside it
    costs no system call; otherwise the next :data:`READ_AHEAD` bytes from its padding on are read
    (one ``pread`` for the many small tensors that follow it in file order). Larger tensors are
    read straight into their array.

    Returns:
      ``(array, window)``: a new numpy array, and the window for the next call.

    Raises:
      FileFormatError: as :func:`read_at`. OSError: the operating system could not read.
    """
    c = header.columns
    lengths, offsets = c.lengths, c.offsets
    length, base = lengths[i], header.data_start
    if length > _SMALL or length > _layout.MAX_SEGMENT:
        return read_at(fd, header, i, verify=verify), ahead
    off = offsets[i]
    gap = base + (_end(offsets[i - 1], lengths[i - 1]) if i else 0)  # gap_start(i), inlined
    at, window = ahead
    start, stop = gap - at, base + off + length - at  # the tensor with its padding, in the window
    if start < 0 or stop > len(window):
        at, window = gap, memoryview(os.pread(fd, READ_AHEAD, gap))
        start, stop = 0, base + off + length - gap
        if len(window) < stop:
            key = c.keys[i]
            raise _fail(header.file, f"tensor {key!r}: file truncated while reading.", key)
    data = stop - length
    if window[start:data] != _padding(data - 5 - start, length):
        key = c.keys[i]
        raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
    if verify and xxhash.xxh3_64_digest(window[data:stop]) != c.xxh3[i]:
        key = c.keys[i]
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)
    dt = _dtypes()[c.dtypes[i]]
    arr = np.ndarray(c.shapes[i], dt, window, data).copy() if length else np.empty(c.shapes[i], dt)
    return arr, (at, window)


def _read_exact(fd: int, buffers: list[Any], offset: int, total: int) -> bool:
    """Fills ``buffers`` (``total`` bytes) from ``offset`` on; False at the end of the file."""
    n = _preadv(fd, buffers, offset)  # nearly always all at once
    if n == total:
        return True
    views = [memoryview(b).cast("B") for b in buffers]
    while True:  # a short read: a buffer over ~2 GiB, a signal, or the end of the file
        if n <= 0:
            return False
        offset += n
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if not views:
            return True
        views[0] = views[0][n:]
        n = _preadv(fd, views, offset)


def _preadv_fallback(fd: int, buffers: list[Any], offset: int) -> int:
    view = memoryview(buffers[0]).cast("B")  # one buffer per call: _read_exact loops
    data = os.pread(fd, min(len(view), _CHUNK), offset)
    view[: len(data)] = data
    return len(data)


_preadv: Callable[[int, list[memoryview], int], int] = getattr(os, "preadv", _preadv_fallback)


STREAM_CHUNK = 16 << 20  # bytes per read when a tensor is hashed without holding it


def stream_digest(fd: int, pieces: Sequence[tuple[int, int]], file: str, key: str) -> bytes:
    """XXH3-64 of the file's bytes ``pieces`` (``(offset, length)``, in order), read in chunks.

    The bytes pass through one reused buffer of :data:`STREAM_CHUNK` bytes (the page cache holds
    the file, not this process's memory), so a tensor larger than the host's memory can be hashed.

    Raises:
      FileFormatError: the file ends before a piece does. OSError: a read failed.
    """
    h = xxhash.xxh3_64()
    buf = bytearray(min(STREAM_CHUNK, max((n for _, n in pieces), default=0)))
    view = memoryview(buf)
    for offset, n in pieces:
        while n > 0:
            take = min(n, len(buf))
            if not _read_exact(fd, [view[:take]], offset, take):
                raise _fail(file, f"tensor {key!r}: file truncated while reading.", key)
            h.update(view[:take])
            offset += take
            n -= take
    return h.digest()


def read_block(fd: int, header: Header, i: int, index: tuple[slice, ...]) -> np.ndarray:
    """Reads one block of entry ``i`` (one slice per dimension, bounds explicit): only its bytes.

    One positional read per run of the block's bytes (:func:`jaxnets.io._shards.runs`); nothing
    else of the file is read or mapped. The checksum covers the whole tensor, so it is not checked
    here (see :func:`verify_streaming`).

    Returns:
      A new numpy array of the stored dtype and the block's shape.

    Raises:
      FileFormatError: the file ends before the block. OSError: a read failed.
    """
    c = header.columns
    dt = _dtypes()[c.dtypes[i]]
    out = _page_aligned(_shards.block_shape(index), dt)
    if out.size == 0:
        return out
    flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    run_len, starts = _shards.runs(c.shapes[i], index, dt.itemsize)
    segs = header.segments(i)
    for k, start in enumerate(starts.tolist()):
        for at, within, n in _shards.file_pieces(segs, header.data_start, start, run_len):
            dst = k * run_len + within
            if not _read_exact(fd, [flat[dst : dst + n]], at, n):
                key = c.keys[i]
                raise _fail(header.file, f"tensor {key!r}: file truncated while reading.", key)
    return out


def _page_aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    # jax's CPU backend adopts a page-aligned numpy array as the device buffer instead of copying
    # it (measured: +128 MiB peak for 128 MiB of shards, against +193 MiB from np.empty's).
    n = math.prod(shape) * dtype.itemsize
    raw = np.empty(n + _PAGE, np.uint8)
    start = -raw.ctypes.data % _PAGE
    return raw[start : start + n].view(dtype).reshape(shape)


_PAGE = 4096


def verify_streaming(fd: int, header: Header, i: int) -> None:
    """Checks entry ``i``'s padding and checksum, reading its bytes in chunks (not mapping them).

    Raises:
      FileFormatError: corrupted padding or checksum, or a truncated file, naming the tensor.
      OSError: a read failed.
    """
    key = header.columns.keys[i]
    base = header.data_start
    pieces = []
    for gap, data, n in header.segments(i):
        pad = os.pread(fd, data - gap, base + gap)
        if pad != _gap_bytes(gap, data, n):
            raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
        pieces.append((base + data, n))
    if stream_digest(fd, pieces, header.file, key) != header.columns.xxh3[i]:
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)


def read_tensor(header: Header, entry: Entry, *, verify: bool = True) -> np.ndarray:
    """Reads one tensor (range read: only its bytes and its padding), checking its checksum.

    Opens the file for this one read; :class:`~jaxnets.io.reader.Reader` keeps one descriptor.

    Returns:
      A numpy array of the stored dtype and shape (PRNG keys: their uint32 key data).
    """
    i = header.position(entry)
    try:
        fd = os.open(header.file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileFormatError(
            f"{header.file}: cannot read ({e.strerror or e}).", file=header.file
        ) from e
    try:
        check_identity(header, fd)
        return read_at(fd, header, i, verify=verify)
    except OSError as e:
        raise FileFormatError(
            f"{header.file}: cannot read ({e.strerror or e}).", file=header.file
        ) from e
    finally:
        os.close(fd)


def read_tensors(
    header: Header, entries: Sequence[Entry] | None = None, *, verify: bool = True
) -> Iterator[tuple[Entry, np.ndarray]]:
    """Reads tensors in file order from one private memory map of the file (see :func:`read_arrays`).

    Yields:
      ``(entry, array)`` pairs; every one is verified before the first is yielded.
    """
    todo = None if entries is None else sorted(map(header.position, entries))
    arrays = read_arrays(header, todo, verify=verify)
    yield from zip(header.entries if todo is None else map(header.entry, todo), arrays)


def read_arrays(
    header: Header,
    positions: Sequence[int] | None = None,
    *,
    verify: bool = True,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Reads the tensors at ``positions`` (ascending; None: all) from one private memory map.

    Each array is a copy-on-write view of the file's pages (no copy is made; writing to it never
    touches the file), except tensors stored in several segments, which are copied into one
    array. Each tensor's padding and checksum are checked; with ``positions=None`` that is every
    byte of the data. Files are only ever replaced by rename (never truncated in place), so the
    mapping stays valid.

    Args:
      progress: counts the bytes checked (a bar shown while a large file is hashed).

    Returns:
      One array per position, of the stored dtype and shape (PRNG keys: their uint32 key data).

    Raises:
      FileFormatError: the first corrupted tensor in file order, named; or the file was replaced
        or modified since its header was read.
    """
    c = header.columns
    todo = range(len(c.keys)) if positions is None else positions
    if not todo:
        return []
    try:
        with open(header.file, "rb", buffering=0) as f:
            check_identity(header, f.fileno())
            # No MAP_POPULATE: pre-faulting every private page costs 10x what faulting them in
            # while hashing does (measured: 33 ms against 3 ms for 64 MiB in the page cache).
            mm = mmap.mmap(
                f.fileno(),
                header.file_len,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                **MMAP_NO_FD,
            )
    except OSError as e:
        raise FileFormatError(
            f"{header.file}: cannot read ({e.strerror or e}).", file=header.file
        ) from e
    raw = memoryview(mm)
    todo = list(todo)
    lengths, big = c.lengths, _layout.MAX_SEGMENT
    bar = progress if progress is not None and progress.enabled else None
    if max(lengths[i] for i in todo) <= big:  # the common case: every tensor one segment
        return _read_single(header, mm, raw, todo, verify, bar)
    out: list[np.ndarray] = []
    for i in todo:
        if lengths[i] > big:
            out.append(_read_segments(header, raw, i, verify))
            if bar is not None:
                bar.update(lengths[i])
        else:
            out += _read_single(header, mm, raw, [i], verify, bar)
    return out


def _read_single(
    header: Header,
    mm: mmap.mmap,
    raw: memoryview,
    todo: list[int],
    verify: bool,
    bar: Progress | None,
) -> list[np.ndarray]:
    """One-segment tensors as views of the mapping, every check done column-wise (C loops)."""
    c = header.columns
    base, offsets, lengths = header.data_start, c.offsets, c.lengths
    starts = [base + offsets[i] for i in todo]
    ends = [s + lengths[i] for s, i in zip(starts, todo)]
    gaps = [base + (_end(offsets[i - 1], lengths[i - 1]) if i else 0) for i in todo]
    ok = [raw[g:s] == _padding(s - 5 - g, e - s) for g, s, e in zip(gaps, starts, ends)]
    bad = len(todo) if all(ok) else ok.index(False)  # the first tensor with corrupted padding
    if verify:  # hashed up to there, so the error names the first corrupted tensor in the file
        digest = xxhash.xxh3_64_digest
        if bar is None:
            got = [digest(raw[s:e]) for s, e in zip(starts[:bad], ends)]
        else:  # a large file: the hashing is the pass over its bytes that takes time
            got = []
            for s, e in zip(starts[:bad], ends):
                got.append(digest(raw[s:e]))
                bar.update(e - s)
        if got != [c.xxh3[i] for i in todo[:bad]]:
            key = c.keys[next(i for i, d in zip(todo, got) if d != c.xxh3[i])]
            raise _fail(
                header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key
            )
    if bad < len(todo):
        key = c.keys[todo[bad]]
        raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
    dtypes = _dtypes()
    return [np.ndarray(c.shapes[i], dtypes[c.dtypes[i]], mm, s) for i, s in zip(todo, starts)]


def _read_segments(header: Header, raw: memoryview, i: int, verify: bool) -> np.ndarray:
    """A tensor of several segments (over 4 GiB), copied out of the mapping into one array."""
    c = header.columns
    key, base = c.keys[i], header.data_start
    arr = np.empty(c.shapes[i], _dtypes()[c.dtypes[i]])
    out = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    h = xxhash.xxh3_64()
    start = 0
    for gap, data, n in header.segments(i):
        if raw[base + gap : base + data] != _gap_bytes(gap, data, n):
            raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
        part = raw[base + data : base + data + n]
        out[start : start + n] = part
        h.update(part)
        start += n
    if verify and h.digest() != c.xxh3[i]:
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)
    return arr


def verify_file(path: str | os.PathLike[str]) -> Header:
    """Checks every byte of a file: preamble, header, all padding, all tensor checksums.

    Raises:
      FileFormatError: at the first problem, naming the file and the tensor.
    """
    header = read_header(path)
    for _ in read_tensors(header):
        pass
    return header
