"""Reading a file's preamble and header: every field checked before it is used (docs/format.md).

The tensor index is checked column by column with C-level builtins (sets of types, min/max,
``map``) and indexed by key and by position once, so a header of n tensors costs O(n) with a
small constant; only when a rule fails is the index walked again to name the offending entry.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterable
from itertools import chain
from operator import mul
from typing import Any

import msgpack

from jaxnets.core.prng import canonical_impl, key_info
from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io import _layout
from jaxnets.io._layout import (
    _NIL,
    ALIGN,
    FORMAT_VERSION,
    GROUPS,
    MAGIC,
    MAX_DIM,
    MAX_HEADER_LEN,
    MAX_NBYTES,
    MAX_NDIM,
    MAX_TENSORS,
    PREAMBLE_LEN,
    Columns,
    Header,
    _align,
    _end,
    _fail,
    _itemsizes,
    _next_offset,
    _no_gc,
    storage_dtype,
)

__all__ = ["read_header", "check_identity"]


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


def _parse_index(file: str, raw: Any, data_len: int) -> tuple[Columns, dict[str, dict[str, int]]]:
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
    impls = (
        tuple([_impl_name(e.get("prng_impl")) for e in raw])
        if set(map(len, raw)) - {len(_FIELDS)}
        else None
    )

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
        raise fail(
            i, f"length {lengths[i]} does not match shape {tuple(shapes[i])} of {dtypes[i]}."
        )
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
        problem = None if impl is None else _key_data_problem(impl, dtypes[i], shapes[i])
        if problem is not None:
            what = f"{dtypes[i]} {tuple(shapes[i])!r:.60}"
            raise fail(i, f"malformed PRNG key entry ({impl!r:.40}, {what}): {problem}.")
    # offsets: exactly the canonical layout (no gaps, no overlaps), covering all the data.
    if longest <= _layout.MAX_SEGMENT:  # the common case, inlined: _next_offset for one segment
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
    columns = Columns(
        keys, groups, dtypes, tuple(map(tuple, shapes)), offsets, lengths, crcs, impls
    )
    return columns, positions


def _impl_name(impl: Any) -> Any:
    """A stored PRNG impl name as jax reads it today (older jax wrote ``'fry'``); others as is."""
    if type(impl) is not str:
        return impl
    try:
        return canonical_impl(impl)
    except JaxnetsError:  # unknown: _key_data_problem reports it with the file and key
        return impl


def _key_data_problem(impl: Any, dtype: str, shape: list[int]) -> str | None:
    """Why an entry is not the key data of ``impl`` (uint32, ending in the key shape), or None."""
    try:
        key_shape = key_info(impl)[1]
    except JaxnetsError as e:
        return str(e)
    k = len(key_shape)
    if dtype != "uint32" or len(shape) < k or tuple(shape[len(shape) - k :]) != key_shape:
        return f"expected uint32 key data whose shape ends with {key_shape} for {impl}"
    return None


def _good_shape(s: Any) -> bool:
    return (
        type(s) is list
        and len(s) <= MAX_NDIM
        and all(type(d) is int and 0 <= d < MAX_DIM for d in s)
    )


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
