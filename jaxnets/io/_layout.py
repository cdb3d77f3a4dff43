"""The byte layout of a jaxnets file: its constants, dtypes, index types and offset arithmetic.

The layout itself is described in :mod:`jaxnets.io.format` and docs/format.md; this module holds
what the reader (``_header``, ``_tensors``) and the writer (``_writer``) both compute with.
"""

from __future__ import annotations

import gc
import math
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import repeat
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from jaxnets.core.prng import key_info
from jaxnets.errors import FileFormatError

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
_CHUNK = 64 << 20  # at most this many bytes per read call

# impl -> (dtype name of the key array, shape of one key's data). Fixed by jax; a test checks them
# against jax, so reading a header never needs to import jax.


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
      JaxnetsError: not a PRNG implementation jaxnets or the running jax knows.
    """
    name, shape = key_info(impl)
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
        return key_info(self.prng_impl)[0] if self.prng_impl else self.dtype

    @property
    def leaf_shape(self) -> tuple[int, ...]:
        """The shape of the leaf as users see it (PRNG keys drop their key-data dims)."""
        if self.prng_impl:
            return self.shape[: len(self.shape) - len(key_info(self.prng_impl)[1])]
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

    ``get()`` is called once, while streaming, and must return a numpy array of exactly ``dtype``
    and ``shape``; it may raise (the save is then abandoned, the old file untouched).

    ``blocks``, for an array spread over several processes (whose whole value no process holds):
    ``blocks()`` gives this process's share of it, ``[(index, block)]`` with one slice per
    dimension (:mod:`jaxnets.io._shards`), each block a single-device jax array or a numpy
    array; across the processes every element is in exactly one block. ``get`` then raises.
    """

    key: str
    group: str
    dtype: str
    shape: tuple[int, ...]
    get: Callable[[], np.ndarray]
    prng_impl: str | None = None
    blocks: Callable[[], list[tuple[tuple[slice, ...], Any]]] | None = None

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
        return Entry(
            c.keys[i],
            c.groups[i],
            c.dtypes[i],
            c.shapes[i],
            c.offsets[i],
            c.lengths[i],
            c.xxh3[i],
            impl,
        )

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
    """The bytes between ``gap_start`` and the payload at ``data``: nil padding, a bin32 header."""
    return _padding(data - 5 - gap_start, length)


@lru_cache(maxsize=1 << 12)  # 20,000 small tensors of a model share a few lengths
def _padding(nils: int, length: int) -> bytes:
    return _NILS[nils] + _BIN32.pack(_BIN32_TAG, length)


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


def _fail(file: str, msg: str, key: Any = None) -> FileFormatError:
    return FileFormatError(f"{file}: {msg}", file=file, path=key if isinstance(key, str) else None)


def _exportable(dtype: str) -> bool:
    try:
        memoryview(np.empty(0, _dtypes()[dtype]))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


class _Exportable(dict):  # dtype name -> whether numpy exports its arrays as buffers
    def __missing__(self, dtype: str) -> bool:
        self[dtype] = _exportable(dtype)
        return self[dtype]


_EXPORTABLE = _Exportable()


# Python >= 3.13 can map without keeping a duplicate descriptor open for the mapping's lifetime.
MMAP_NO_FD: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}
