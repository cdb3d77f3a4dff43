"""The byte layout of a jaxnets file (specified in docs/format.md): nothing here knows about models.

A file is a *sequence* of msgpack objects, so ``msgpack.Unpacker`` reads it end to end:

1. **preamble**, 35 bytes, a fixed-width msgpack array
   ``["JAXNETS", format_version: uint16, header_len: uint64, header_crc32: uint32, file_len: uint64]``;
2. **header**, ``header_len`` bytes: one msgpack map (the tensor index, tree specs, configs,
   metadata, provenance), covered by ``header_crc32``;
3. nil bytes (``0xc0``, each a valid msgpack object) up to the next multiple of 64: ``data_start``;
4. for each tensor, in index order: nil padding, then a ``bin32`` object whose payload (the raw
   little-endian bytes) starts at a 64-byte-aligned offset, so numpy and mmap can view it in place.
   A tensor over ``MAX_SEGMENT`` bytes (``bin32`` holds < 4 GiB) is several such ``bin32`` segments.

The layout is canonical: the reader recomputes every offset from the index and requires the stored
ones, every padding byte and the file length to be exactly what the writer produces. With the
header's CRC-32 (which detects every single-bit error) and one XXH3-64 hash per tensor (which
detects one with probability 1 - 2**-64, at ~15 GB/s where CRC-32 runs at ~3 GB/s) that makes any
flipped bit anywhere detectable.

Cost: a file of n tensors is parsed in O(n) with a small constant (the index is checked column by
column with C-level builtins, not entry by entry, and indexed by key and by position once), and
reading one tensor costs O(1) plus its bytes. Writing is O(n) plus the bytes (docs/format.md).
"""

from __future__ import annotations

import gc
import math
import mmap
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import accumulate, chain, repeat
from operator import mul
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack
import numpy as np
import xxhash

from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io import _atomic

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ALIGN",
    "GROUPS",
    "Entry",
    "TensorSource",
    "Header",
    "storage_dtype",
    "prng_key_info",
    "write_file",
    "read_header",
    "read_at",
    "read_tensor",
    "read_tensors",
    "read_arrays",
    "verify_file",
]

MAGIC = "JAXNETS"
FORMAT_VERSION = 1
ALIGN = 64
PREAMBLE_LEN = 35
MAX_SEGMENT = (1 << 32) - ALIGN  # bin32 payloads are < 4 GiB; keep segments aligned.
MAX_HEADER_LEN = 1 << 30
MAX_NDIM = 64
MAX_DIM = 1 << 62
MAX_NBYTES = 1 << 62  # bound on prod(nonzero dims) * itemsize: numpy and XLA size arrays in int64
MAX_TENSORS = 10_000_000
GROUPS = ("model", "opt_state")
_NIL = b"\xc0"
_NILS = tuple(_NIL * k for k in range(ALIGN))
_BIN32 = struct.Struct(">BI")
_BIN32_TAG = 0xC6
_CHUNK = 64 << 20  # bytes per write/read call
_BUFFER = 4 << 20

# impl -> (dtype name of the key array, shape of one key's data). Fixed by jax; a test checks them
# against jax, so reading a header never needs to import jax.
_PRNG: dict[str, tuple[str, tuple[int, ...]]] = {
    "threefry2x32": ("key<fry>", (2,)),
    "rbg": ("key<rbg>", (4,)),
    "unsafe_rbg": ("key<urbg>", (4,)),
}


@lru_cache(maxsize=1)
def _dtypes() -> dict[str, np.dtype]:
    """Allowed stored dtypes by name. Never ``np.dtype(name_from_file)``: that could be ``object``."""
    import ml_dtypes

    names = [
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    ]  # fmt: skip
    out = {n: np.dtype(n).newbyteorder("<") for n in names}
    for n in (
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3b11fnuz",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e3m4",
        "float8_e4m3",
        "float8_e8m0fnu",
        "float4_e2m1fn",
        "int2",
        "int4",
        "uint2",
        "uint4",
    ):  # fmt: skip  (the ml_dtypes types jax can hold)
        if hasattr(ml_dtypes, n):
            out[n] = np.dtype(getattr(ml_dtypes, n))
    return out


@lru_cache(maxsize=1)
def _itemsizes() -> dict[str, int]:
    return {n: dt.itemsize for n, dt in _dtypes().items()}


def storage_dtype(name: Any, *, file: str | None = None, key: str | None = None) -> np.dtype:
    """The numpy dtype stored under ``name`` (``"bfloat16"``, ``"int4"``...), from an allowlist.

    Raises:
      FileFormatError: ``name`` is not a dtype jaxnets stores.
    """
    dt = _dtypes().get(name) if isinstance(name, str) else None
    if dt is None:
        where = f"tensor {key!r:.80}: " if key is not None else ""
        raise FileFormatError(
            f"{file or 'file'}: {where}unknown dtype {name!r:.60} in the tensor index.",
            file=file,
            path=key,
        )
    return dt


def prng_key_info(impl: str) -> tuple[str, int]:
    """(key dtype name, number of trailing key-data dims) of a PRNG implementation, e.g. ``("key<fry>", 1)``.

    Raises:
      KeyError: not a PRNG implementation the format stores.
    """
    name, shape = _PRNG[impl]
    return name, len(shape)


class Entry(NamedTuple):
    """One tensor of the index (a tuple: cheap to build for 20,000 entries, compared in C).

    Attributes:
      key: the flat key (``"fc1.weight"``).
      group: ``"model"`` (params and buffers) or ``"opt_state"``.
      dtype: the stored dtype name (for a PRNG key array: its key data, ``uint32``).
      shape: the stored shape (for a PRNG key array: the key data shape).
      offset: where the first byte lies, relative to ``data_start``.
      length: number of bytes (``prod(shape) * itemsize``).
      xxh3: XXH3-64 of the bytes, 8 big-endian bytes as stored (``xxhash.xxh3_64_digest``).
      prng_impl: for a typed PRNG key array, its implementation (``"threefry2x32"``), else None.
    """

    key: str
    group: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    xxh3: bytes
    prng_impl: str | None = None

    @property
    def checksum(self) -> int:
        """XXH3-64 of the bytes as an int (``xxhash.xxh3_64_intdigest``)."""
        return int.from_bytes(self.xxh3, "big")

    @property
    def leaf_dtype(self) -> str:
        """The dtype name of the leaf as users see it (``"key<fry>"`` for PRNG keys)."""
        return _PRNG[self.prng_impl][0] if self.prng_impl else self.dtype

    @property
    def leaf_shape(self) -> tuple[int, ...]:
        """The shape of the leaf as users see it (PRNG keys drop their key-data dims)."""
        if self.prng_impl:
            return self.shape[: len(self.shape) - len(_PRNG[self.prng_impl][1])]
        return self.shape

    def to_msgpack(self) -> dict[str, Any]:
        """The entry as stored in the header (``xxh3`` last, see :func:`write_file`)."""
        d: dict[str, Any] = {
            "key": self.key,
            "group": self.group,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "length": self.length,
        }
        if self.prng_impl:
            d["prng_impl"] = self.prng_impl
        d["xxh3"] = self.xxh3
        return d


class TensorSource(NamedTuple):
    """A tensor to write: its key, group, stored dtype/shape, and a function giving its bytes.

    ``get()`` is called once, while streaming, and must return a C-contiguous numpy array of exactly
    ``dtype`` and ``shape``; it may raise (the save is then abandoned, the old file untouched).
    """

    key: str
    group: str
    dtype: str
    shape: tuple[int, ...]
    get: Callable[[], np.ndarray]
    prng_impl: str | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * storage_dtype(self.dtype).itemsize


class Columns(NamedTuple):
    """The tensor index as columns, one tuple per field in file order (see :class:`Entry`).

    ``prng_impls`` is None when no entry is a PRNG key array. Reads use these directly, so a file
    of 20,000 tensors is read without building 20,000 :class:`Entry` objects first.
    """

    keys: tuple[str, ...]
    groups: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    xxh3: tuple[bytes, ...]
    prng_impls: tuple[str | None, ...] | None


@dataclass(frozen=True, eq=False)
class Header:
    """A parsed, validated header: the raw map plus the tensor index, by position and by key.

    Attributes:
      file: the path read. version: the format version. data_start, file_len: in bytes.
      fields: the raw header map, without the tensor index (``"tensors"``: see ``columns``).
      identity: ``(st_dev, st_ino, st_size, st_mtime_ns)`` of the file the header was read from;
        a later read refuses a file that was replaced or modified since.
      columns: the tensor index as :class:`Columns`.
      positions: ``{group: {key: position in the index}}``, each group in file order.
    """

    file: str
    version: int
    data_start: int
    file_len: int
    fields: dict[str, Any]
    identity: tuple[int, int, int, int]
    columns: Columns = field(repr=False)
    positions: dict[str, dict[str, int]] = field(repr=False)

    @cached_property
    def entries(self) -> tuple[Entry, ...]:
        """The tensor index, in file order (built on first use)."""
        c = self.columns
        impls = c.prng_impls or repeat(None)
        rows = zip(c.keys, c.groups, c.dtypes, c.shapes, c.offsets, c.lengths, c.xxh3, impls)
        return tuple(map(tuple.__new__, repeat(Entry), rows))  # Entry._make without its checks

    def entry(self, i: int) -> Entry:
        """Entry ``i`` of the index (O(1), without building :attr:`entries`)."""
        c = self.columns
        impl = c.prng_impls[i] if c.prng_impls else None
        return Entry(c.keys[i], c.groups[i], c.dtypes[i], c.shapes[i], c.offsets[i], c.lengths[i], c.xxh3[i], impl)

    def group(self, group: str) -> Mapping[str, Entry]:
        """The entries of one group by key, in file order (a read-only view).

        Raises:
          KeyError: ``group`` is not one of :data:`GROUPS`.
        """
        return MappingProxyType(self._by_key[group])

    @cached_property
    def _by_key(self) -> dict[str, dict[str, Entry]]:
        entries = self.entries
        return {g: {k: entries[i] for k, i in pos.items()} for g, pos in self.positions.items()}

    def position(self, entry: Entry) -> int:
        """The index of ``entry`` in the index (O(1)).

        Raises:
          ValueError: ``entry`` is not an entry of this header.
        """
        i = self.positions.get(entry.group, {}).get(entry.key)
        if i is None or self.entry(i) != entry:
            raise ValueError(f"{self.file}: {entry.key!r} is not an entry of this file's header")
        return i

    def segments(self, i: int) -> tuple[tuple[int, int, int], ...]:
        """Entry ``i``'s segments as ``(gap_start, data, length)`` relative to data_start (O(1))."""
        return _segments_at(self.gap_start(i), self.columns.lengths[i])

    def gap_start(self, i: int) -> int:
        """Where entry ``i``'s padding starts: where entry ``i - 1`` ends (O(1))."""
        c = self.columns
        return _end(c.offsets[i - 1], c.lengths[i - 1]) if i else 0

    @property
    def layout(self) -> tuple[tuple[tuple[int, int, int], ...], ...]:
        """Every entry's segments (see :meth:`segments`)."""
        return tuple(self.segments(i) for i in range(len(self.columns.keys)))


# --- layout ---------------------------------------------------------------------------------------
# Each segment of each tensor is: nil padding, a 5-byte bin32 header, then the payload at the next
# multiple of ALIGN. Positions are relative to data_start (itself a multiple of ALIGN).
def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _segment_lengths(length: int) -> list[int]:
    if length <= MAX_SEGMENT:
        return [length]
    return [min(MAX_SEGMENT, length - s) for s in range(0, length, MAX_SEGMENT)]


def _segments_at(pos: int, length: int) -> tuple[tuple[int, int, int], ...]:
    """The segments ``(gap_start, data, length)`` of a tensor whose padding starts at ``pos``."""
    out = []
    for s in _segment_lengths(length):
        data = _align(pos + 5)
        out.append((pos, data, s))
        pos = data + s
    return tuple(out)


def _end(offset: int, length: int) -> int:
    """Where a tensor whose first payload byte is at ``offset`` ends (O(1) in ``length``)."""
    if length <= MAX_SEGMENT:
        return offset + length
    full = -(-length // MAX_SEGMENT) - 1  # segments before the last, each MAX_SEGMENT bytes
    return offset + full * _align(MAX_SEGMENT + 5) + (length - full * MAX_SEGMENT)


def _next_offset(offset: int, length: int) -> int:
    """The canonical offset of the tensor after one at ``offset`` of ``length`` bytes."""
    return _align(_end(offset, length) + 5)


def _gap_bytes(gap_start: int, data: int, length: int) -> bytes:
    return _NILS[data - 5 - gap_start] + _BIN32.pack(_BIN32_TAG, length)


def _preamble(header_len: int, header_crc: int, file_len: int) -> bytes:
    # fixarray(5), fixstr(7) magic, uint16 version, uint64 header_len, uint32 crc, uint64 file_len.
    return (
        b"\x95\xa7" + MAGIC.encode()
        + struct.pack(">BH", 0xCD, FORMAT_VERSION)
        + struct.pack(">BQ", 0xCF, header_len)
        + struct.pack(">BI", 0xCE, header_crc)
        + struct.pack(">BQ", 0xCF, file_len)
    )  # fmt: skip


@contextmanager
def _no_gc() -> Iterator[None]:
    # Building 10^4-10^5 small containers (msgpack maps, entries) triggers the cyclic GC over and
    # over; none of them can form a cycle. msgpack's docs recommend the same for large unpacks.
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --- writing --------------------------------------------------------------------------------------
def write_file(
    path: str | os.PathLike[str],
    tensors: Sequence[TensorSource],
    fields: Mapping[str, Any],
    *,
    fsync: bool = True,
) -> int:
    """Writes a file atomically, streaming one tensor at a time.

    The header is packed once with zero checksums (fixed-width ``bin 8`` each, the last item of
    each entry, so their byte positions are known), the tensors are streamed and hashed, then the
    checksums are patched into the header and it is rewritten in place. The file is a temporary
    file in the destination's folder (see :mod:`jaxnets.io._atomic`), fsynced and renamed; leftover
    temporary files of dead writers in that folder are removed first.

    Args:
      path: the destination; it is replaced only once the new file is complete (and fsynced).
      tensors: what to store, in order.
      fields: the rest of the header (JSON-able; ``"tensors"`` is reserved).
      fsync: flush the data to the disk before renaming (default); False only for scratch files.

    Returns:
      The file's size in bytes.

    Raises:
      FileWriteError: the operating system refused a write (disk full, read-only filesystem...);
        nothing at ``path`` was changed. Also an ``OSError``.
      JaxnetsError: a tensor's ``get()`` returned the wrong dtype/shape (or whatever it raised).
      ValueError: ``fields`` holds ``"tensors"``, or a tensor has an unknown dtype.
    """
    path = os.fspath(path)
    if "tensors" in fields:
        raise ValueError("fields must not hold 'tensors': write_file builds the tensor index")
    sizes = _itemsizes()
    for t in tensors:
        if not (isinstance(t.dtype, str) and t.dtype in sizes):
            raise ValueError(f"{t.key}: dtype {t.dtype!r} is not one jaxnets stores")
    shapes = [tuple(t.shape) for t in tensors]
    lengths = list(map(mul, map(math.prod, shapes), [sizes[t.dtype] for t in tensors]))
    offsets = list(accumulate(lengths[:-1], _next_offset, initial=ALIGN)) if tensors else []
    data_len = _end(offsets[-1], lengths[-1]) if tensors else 0
    header, crc_at = _pack_header(tensors, shapes, offsets, lengths, fields)
    data_start = _align(PREAMBLE_LEN + len(header))
    file_len = data_start + data_len

    # Large tensors are written from a background thread while this one hashes the next ones.
    # Not many small ones: the two threads would hand the GIL back and forth for every batch.
    background = data_len >= _BACKGROUND and data_len >= len(tensors) * _BACKGROUND_PER_TENSOR
    with _atomic.AtomicFile(path, background=background) as out:
        out.add(_preamble(len(header), 0, file_len) + header)
        out.add(_NIL * (data_start - PREAMBLE_LEN - len(header)))
        crcs = _stream(out, tensors, shapes, offsets, lengths)
        final = bytearray(header)
        if crcs:  # patch the checksums in, all at once
            at = np.asarray(crc_at)[:, None] + np.arange(8)
            np.frombuffer(final, np.uint8)[at] = np.frombuffer(b"".join(crcs), np.uint8).reshape(-1, 8)
        out.pwrite(_preamble(len(final), zlib.crc32(final), file_len) + final, 0)
        out.commit(fsync=fsync)
    return file_len


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
) -> list[bytes]:
    """Queues every tensor's padding and bytes; returns their XXH3-64 digests (8 bytes each)."""
    dtypes = _dtypes()
    digest = xxhash.xxh3_64_digest
    crcs = []
    pos = 0
    for t, shape, off, n in zip(tensors, shapes, offsets, lengths):  # per tensor: keep it lean
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
        if n > MAX_SEGMENT:
            crcs.append(_stream_segments(out, arr, pos, n))
            pos = _end(off, n)
            continue
        # numpy cannot export ml_dtypes arrays (bfloat16...) as buffers; their bytes it can.
        data = arr if _EXPORTABLE[t.dtype] else arr.reshape(-1).view(np.uint8)
        buffers = out.buffers
        buffers.append(_NILS[off - 5 - pos] + _BIN32.pack(_BIN32_TAG, n))
        buffers.append(data)
        out.nbytes += off - pos + n
        out.maybe_flush()  # before hashing: the writer thread copies while this one hashes
        crcs.append(digest(data))
        pos = off + n
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
        h.update(part)
        start += length
    return h.digest()


# --- reading the header ---------------------------------------------------------------------------
def _fail(file: str, msg: str, key: Any = None) -> FileFormatError:
    return FileFormatError(f"{file}: {msg}", file=file, path=key if isinstance(key, str) else None)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def read_header(path: str | os.PathLike[str]) -> Header:
    """Reads and validates the preamble and header (not the data).

    Raises:
      FileFormatError: wrong magic, unknown version, truncated file, header checksum mismatch,
        malformed or hostile header (absurd sizes, bad offsets), naming the file and the problem.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            pre = f.read(PREAMBLE_LEN)
            if len(pre) < PREAMBLE_LEN or pre[:9] != b"\x95\xa7" + MAGIC.encode():
                raise _fail(file, "not a jaxnets file (wrong magic bytes).")
            tags = (pre[9], pre[12], pre[21], pre[26])
            if tags != (0xCD, 0xCF, 0xCE, 0xCF):
                raise _fail(file, "corrupted preamble (unexpected type bytes).")
            (version,) = struct.unpack(">H", pre[10:12])
            (header_len,) = struct.unpack(">Q", pre[13:21])
            (header_crc,) = struct.unpack(">I", pre[22:26])
            (file_len,) = struct.unpack(">Q", pre[27:35])
            if version != FORMAT_VERSION:
                raise _fail(
                    file,
                    f"format version {version}, but this jaxnets reads version {FORMAT_VERSION}; "
                    "upgrade jaxnets (pip install -U jaxnets) to read it.",
                )
            if file_len != size:
                what = "truncated" if size < file_len else "has trailing bytes"
                raise _fail(
                    file, f"file {what}: {size} bytes on disk, the preamble says {file_len}."
                )
            if header_len > min(MAX_HEADER_LEN, size - PREAMBLE_LEN):
                raise _fail(
                    file, f"header length {header_len} is out of range for a {size}-byte file."
                )
            raw = f.read(header_len)
            data_start = _align(PREAMBLE_LEN + header_len)
            pad = f.read(data_start - PREAMBLE_LEN - header_len)
    except OSError as e:
        raise FileFormatError(f"{file}: cannot read ({e.strerror or e}).", file=file) from e
    if zlib.crc32(raw) != header_crc:
        raise _fail(file, "header checksum mismatch: the file is corrupted.")
    if pad != _NIL * (data_start - PREAMBLE_LEN - header_len) or data_start > size:
        raise _fail(file, "corrupted padding after the header.")
    with _no_gc():
        try:
            fields = msgpack.unpackb(
                raw,
                raw=False,
                use_list=True,
                strict_map_key=True,
                ext_hook=_no_ext,
                max_str_len=1 << 24,
                max_bin_len=1 << 10,
                max_array_len=MAX_TENSORS,
                max_map_len=MAX_TENSORS,
                max_ext_len=0,
            )
        except Exception as e:  # msgpack raises ValueError, StackError, ExtraData, FormatError...
            raise _fail(file, f"malformed header ({type(e).__name__}: {e}).") from e
        if not isinstance(fields, dict):
            raise _fail(file, "malformed header (not a map).")
        # The index leaves the raw map: 2 containers per tensor that would stay alive (and be
        # traversed by every full GC of the process) for what Header.columns already holds.
        columns, positions = _parse_index(file, fields.pop("tensors", None), file_len - data_start)
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return Header(file, version, data_start, file_len, fields, identity, columns, positions)


_FIELDS = ("key", "group", "dtype", "shape", "offset", "length", "xxh3")


def _types(column: Iterable[Any]) -> set[type]:
    return set(map(type, column))


def _parse_index(
    file: str, raw: Any, data_len: int
) -> tuple[Columns, dict[str, dict[str, int]]]:
    """Validates the tensor index column by column; the first failing rule names its first entry.

    Every rule is checked over the whole index with C-level builtins (sets of types, min/max,
    ``map``); only when one fails is the index walked again to name the offending entry.

    Returns:
      ``(columns, {group: {key: position}})``.
    """
    if not isinstance(raw, list):
        raise _fail(file, "malformed header: no tensor index.")
    n = len(raw)
    if not _types(raw) <= {dict}:
        i = next(i for i, e in enumerate(raw) if type(e) is not dict)
        raise _fail(file, f"tensor index entry {i} is not a map.")
    try:
        keys, groups, dtypes, shapes, offsets, lengths, crcs = (
            tuple([e[f] for e in raw]) for f in _FIELDS
        )
    except KeyError:  # a field is missing: let the type checks below name the entry
        keys, groups, dtypes, shapes, offsets, lengths, crcs = (
            tuple([e.get(f) for e in raw]) for f in _FIELDS
        )
    # Any entry with more than the 7 fields may be a PRNG key array.
    impls = tuple([e.get("prng_impl") for e in raw]) if set(map(len, raw)) - {len(_FIELDS)} else None

    def fail(i: int, msg: str) -> FileFormatError:
        key = keys[i]
        where = f"tensor {key!r:.80}" if isinstance(key, str) else f"tensor index entry {i}"
        return _fail(file, f"{where}: {msg}", key)

    # keys: strings, unique within their group; groups: from GROUPS.
    if not (_types(keys) <= {str} and all(map(GROUPS.__contains__, groups))):
        i = next(i for i in range(n) if type(keys[i]) is not str or groups[i] not in GROUPS)
        raise fail(i, "missing, duplicate or malformed key/group.")
    if groups.count(GROUPS[0]) == n:  # the common case, in C
        positions = {GROUPS[0]: dict(zip(keys, range(n))), GROUPS[1]: {}}
    else:
        positions = {g: {} for g in GROUPS}
        for i, (g, k) in enumerate(zip(groups, keys)):
            positions[g][k] = i
    if sum(map(len, positions.values())) != n:  # a key twice in one group
        seen: set[tuple[str, str]] = set()
        for i, gk in enumerate(zip(groups, keys)):
            if gk in seen:
                raise fail(i, "missing, duplicate or malformed key/group.")
            seen.add(gk)
    # dtypes: from the allowlist.
    sizes = _itemsizes()
    if not (_types(dtypes) <= {str} and set(dtypes) <= sizes.keys()):
        i = next(i for i, d in enumerate(dtypes) if not (type(d) is str and d in sizes))
        storage_dtype(dtypes[i], file=file, key=keys[i])
    # shapes: lists of at most MAX_NDIM ints in [0, MAX_DIM).
    dims = list(chain.from_iterable(shapes)) if _types(shapes) <= {list} else None
    if (
        dims is None
        or max(map(len, shapes), default=0) > MAX_NDIM
        or not _types(dims) <= {int}
        or (dims and (min(dims) < 0 or max(dims) >= MAX_DIM))
    ):
        i = next(i for i, s in enumerate(shapes) if not _good_shape(s))
        raise fail(i, f"malformed shape {shapes[i]!r:.80}.")
    # offsets and lengths: ints; checksums: 8 bytes.
    if not (
        _types(offsets) <= {int}
        and _types(lengths) <= {int}
        and _types(crcs) <= {bytes}
        and set(map(len, crcs)) <= {8}
    ):
        i = next(
            i
            for i, (o, n_, c) in enumerate(zip(offsets, lengths, crcs))
            if not (type(o) is int and type(n_) is int and type(c) is bytes and len(c) == 8)
        )
        raise fail(i, "malformed offset/length/checksum.")
    # length == prod(shape) * itemsize, and no more bytes than the file holds.
    itemsizes = tuple(map(sizes.__getitem__, dtypes))
    if tuple(map(mul, map(math.prod, shapes), itemsizes)) != lengths:
        i = next(i for i in range(n) if math.prod(shapes[i]) * itemsizes[i] != lengths[i])
        raise fail(i, f"length {lengths[i]} does not match shape {tuple(shapes[i])} of {dtypes[i]}.")
    longest = max(lengths, default=0)
    if longest > data_len:  # before any layout arithmetic
        i = lengths.index(longest)
        raise fail(i, f"{lengths[i]} bytes claimed, the file holds {data_len} bytes of data.")
    # An empty tensor's other dims are not bounded by its length: bound them as numpy/XLA need.
    for i in [i for i, length in enumerate(lengths) if length == 0] if 0 in lengths else ():
        if math.prod(d or 1 for d in shapes[i]) * itemsizes[i] >= MAX_NBYTES:
            raise fail(i, f"shape {tuple(shapes[i])!r:.80} of {dtypes[i]} is too large "
                          f"(over 2**62 bytes without its zero dims).")  # fmt: skip
    # PRNG key data: uint32, shape ending with the implementation's key shape (jax would refuse
    # anything else with a raw TypeError when the key is wrapped).
    for i, impl in enumerate(impls or ()):
        if impl is not None and not _good_key_data(impl, dtypes[i], shapes[i]):
            what = f"{dtypes[i]} {tuple(shapes[i])!r:.60}"
            raise fail(i, f"malformed PRNG key entry ({impl!r:.40}, {what}); expected "
                          f"uint32 key data whose shape ends with {_PRNG_SHAPES}.")  # fmt: skip
    # offsets: exactly the canonical layout (no gaps, no overlaps), covering all the data.
    if longest <= MAX_SEGMENT:  # the common case, inlined: _next_offset for one segment
        expected = [ALIGN, *[-(-(o + m + 5) // ALIGN) * ALIGN for o, m in zip(offsets, lengths)]]
    else:
        expected = [ALIGN, *map(_next_offset, offsets, lengths)]
    if n and expected[:-1] != list(offsets):
        i = next(i for i in range(n) if offsets[i] != expected[i])
        raise fail(i, f"offset {offsets[i]} out of place (expected {expected[i]}); "
                      "offsets must follow the canonical layout (no gaps, no overlaps).")  # fmt: skip
    end = _end(offsets[-1], lengths[-1]) if n else 0
    if end != data_len:
        raise _fail(file, f"the tensor index covers {end} data bytes, the file holds {data_len}.")

    if impls is not None and impls.count(None) == n:
        impls = None
    # Shapes become tuples: the lists stay in the raw header, which callers may change.
    columns = Columns(keys, groups, dtypes, tuple(map(tuple, shapes)), offsets, lengths, crcs, impls)
    return columns, positions


_PRNG_SHAPES = ", ".join(f"{v[1]} for {k}" for k, v in _PRNG.items())


def _good_key_data(impl: Any, dtype: str, shape: list[int]) -> bool:
    key_shape = _PRNG.get(impl) if type(impl) is str else None
    if key_shape is None or dtype != "uint32":
        return False
    k = len(key_shape[1])
    return len(shape) >= k and tuple(shape[len(shape) - k :]) == key_shape[1]


def _good_shape(s: Any) -> bool:
    return (
        type(s) is list
        and len(s) <= MAX_NDIM
        and all(type(d) is int and 0 <= d < MAX_DIM for d in s)
    )


# --- reading tensors ------------------------------------------------------------------------------
def check_identity(header: Header, fd: int) -> None:
    """Refuses a file descriptor whose file is not the one ``header`` was read from.

    Raises:
      FileFormatError: the file was replaced or modified since its header was read.
    """
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != header.identity:
        raise _fail(
            header.file,
            "the file was replaced or modified since its header was read; open it again.",
        )


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
    segs = ((gap, c.offsets[i], length),) if length <= MAX_SEGMENT else _segments_at(gap, length)
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
            h.update(part)
        start += n
    if verify and (xxhash.xxh3_64_digest(flat) if h is None else h.digest()) != c.xxh3[i]:
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)
    return out


READ_AHEAD = 256 << 10  # bytes read at once for small tensors (see read_near)
_SMALL = 64 << 10


def read_near(
    fd: int, header: Header, i: int, ahead: tuple[int, bytes], *, verify: bool = True
) -> tuple[np.ndarray, tuple[int, bytes]]:
    """Reads entry ``i`` like :func:`read_at`, small tensors through a read-ahead window.

    ``ahead`` is ``(start, bytes)``: the file's bytes from ``start`` on, from an earlier call.
    A tensor of up to 64 KiB (with its padding) inside it costs no system call; otherwise the
    next :data:`READ_AHEAD` bytes from its padding on are read (one ``pread`` for the many small
    tensors that follow it in file order). Larger tensors are read straight into their array.

    Returns:
      ``(array, window)``: a new numpy array, and the window for the next call.

    Raises:
      FileFormatError: as :func:`read_at`. OSError: the operating system could not read.
    """
    c = header.columns
    length, base = c.lengths[i], header.data_start
    gap = base + (_end(c.offsets[i - 1], c.lengths[i - 1]) if i else 0)  # gap_start(i), inlined
    off = base + c.offsets[i]
    if length > _SMALL or length > MAX_SEGMENT:
        return read_at(fd, header, i, verify=verify), ahead
    at, window = ahead
    if not (at <= gap and off + length <= at + len(window)):
        at, window = gap, os.pread(fd, READ_AHEAD, gap)
        if len(window) < off + length - gap:
            key = c.keys[i]
            raise _fail(header.file, f"tensor {key!r}: file truncated while reading.", key)
    if window[gap - at : off - at] != _NILS[off - 5 - gap] + _BIN32.pack(_BIN32_TAG, length):
        key = c.keys[i]
        raise _fail(header.file, f"tensor {key!r}: corrupted padding before its data.", key)
    if verify and xxhash.xxh3_64_digest(memoryview(window)[off - at : off - at + length]) != c.xxh3[i]:
        key = c.keys[i]
        raise _fail(header.file, f"tensor {key!r}: checksum mismatch: the file is corrupted.", key)
    dt = _dtypes()[c.dtypes[i]]
    arr = np.ndarray(c.shapes[i], dt, window, off - at).copy() if length else np.empty(c.shapes[i], dt)
    return arr, (at, window)


def _exportable(dtype: str) -> bool:
    try:
        memoryview(np.empty(0, _dtypes()[dtype]))
    except (ValueError, TypeError):
        return False
    return True


class _Exportable(dict):  # dtype name -> whether numpy exports its arrays as buffers
    def __missing__(self, dtype: str) -> bool:
        self[dtype] = _exportable(dtype)
        return self[dtype]


_EXPORTABLE = _Exportable()


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


# Python >= 3.13 can map without keeping a duplicate descriptor open for the mapping's lifetime.
MMAP_NO_FD: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}

_preadv: Callable[[int, list[memoryview], int], int] = getattr(os, "preadv", _preadv_fallback)


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
        raise FileFormatError(f"{header.file}: cannot read ({e.strerror or e}).", file=header.file) from e
    try:
        check_identity(header, fd)
        return read_at(fd, header, i, verify=verify)
    except OSError as e:
        raise FileFormatError(f"{header.file}: cannot read ({e.strerror or e}).", file=header.file) from e
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
    header: Header, positions: Sequence[int] | None = None, *, verify: bool = True
) -> list[np.ndarray]:
    """Reads the tensors at ``positions`` (ascending; None: all) from one private memory map.

    Each array is a copy-on-write view of the file's pages (no copy is made; writing to it never
    touches the file), except tensors stored in several segments, which are copied into one
    array. Each tensor's padding and checksum are checked; with ``positions=None`` that is every
    byte of the data. Files are only ever replaced by rename (never truncated in place), so the
    mapping stays valid.

    Returns:
      One array per position, of the stored dtype and shape (PRNG keys: their uint32 key data).

    Raises:
      FileFormatError: a corrupted tensor (the first in file order), naming it; or the file was
        replaced or modified since its header was read.
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
    base = header.data_start
    raw = memoryview(mm)
    dtypes = _dtypes()
    keys, offsets, lengths = c.keys, c.offsets, c.lengths
    digest = xxhash.xxh3_64_digest
    out = []
    for i in todo:  # the hot loop of every load: plain locals, no calls that can be avoided
        off, n = offsets[i], lengths[i]
        if n > MAX_SEGMENT:
            out.append(_read_segments(header, raw, i, verify))
            continue
        gap = header.gap_start(i) if i and lengths[i - 1] > MAX_SEGMENT else (offsets[i - 1] + lengths[i - 1] if i else 0)
        if raw[base + gap : base + off] != _NILS[off - 5 - gap] + _BIN32.pack(_BIN32_TAG, n):
            raise _fail(header.file, f"tensor {keys[i]!r}: corrupted padding before its data.", keys[i])
        if verify and digest(raw[base + off : base + off + n]) != c.xxh3[i]:
            raise _fail(header.file, f"tensor {keys[i]!r}: checksum mismatch: the file is corrupted.", keys[i])
        dt = dtypes[c.dtypes[i]]
        out.append(np.ndarray(c.shapes[i], dt, mm, base + off) if n else np.empty(c.shapes[i], dt))
    return out


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
