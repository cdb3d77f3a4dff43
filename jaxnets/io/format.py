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
Saving streams each tensor to disk (the header is written with placeholder checksums, the data
streamed, then the header rewritten in place: checksums are fixed-width ``bin 8`` so its length
never changes). Writes go to a temporary file in the same folder that is fsynced and renamed.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import msgpack
import numpy as np
import xxhash

from jaxnets.errors import FileFormatError, JaxnetsError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ALIGN",
    "Entry",
    "TensorSource",
    "Header",
    "storage_dtype",
    "write_file",
    "read_header",
    "read_tensor",
    "read_tensors",
    "verify_file",
]

MAGIC = "JAXNETS"
FORMAT_VERSION = 1
ALIGN = 64
PREAMBLE_LEN = 35
MAX_SEGMENT = (1 << 32) - ALIGN  # bin32 payloads are < 4 GiB; keep segments aligned.
MAX_HEADER_LEN = 1 << 30
MAX_NDIM = 64
MAX_TENSORS = 10_000_000
_NIL = b"\xc0"
_BIN32 = 0xC6
_CHUNK = 64 << 20  # bytes per write/read call
_BUFFER = 4 << 20

_GROUPS = ("model", "opt_state")
_PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


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


def storage_dtype(name: Any, *, file: str | None = None) -> np.dtype:
    """The numpy dtype stored under ``name`` (``"bfloat16"``, ``"int4"``...), from an allowlist.

    Raises:
      FileFormatError: ``name`` is not a dtype jaxnets stores.
    """
    dt = _dtypes().get(name) if isinstance(name, str) else None
    if dt is None:
        raise FileFormatError(
            f"{file or 'file'}: unknown dtype {name!r:.60} in the tensor index.", file=file
        )
    return dt


@lru_cache(maxsize=8)
def prng_key_info(impl: str) -> tuple[str, int]:
    """(key dtype name, number of trailing key-data dims) of a PRNG implementation, e.g. ``("key<fry>", 1)``."""
    import jax

    k = jax.random.key(0, impl=impl)
    return str(k.dtype), jax.random.key_data(k).ndim


@dataclass(frozen=True)
class Entry:
    """One tensor of the index.

    Attributes:
      key: the flat key (``"fc1.weight"``).
      group: ``"model"`` (params and buffers) or ``"opt_state"``.
      dtype: the stored dtype name (for a PRNG key array: its key data, ``uint32``).
      shape: the stored shape (for a PRNG key array: the key data shape).
      offset: where the first byte lies, relative to ``data_start``.
      length: number of bytes (``prod(shape) * itemsize``).
      checksum: XXH3-64 of the bytes (stored as 8 big-endian bytes under ``"xxh3"``).
      prng_impl: for a typed PRNG key array, its implementation (``"threefry2x32"``), else None.
    """

    key: str
    group: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    checksum: int
    prng_impl: str | None = None

    @property
    def leaf_dtype(self) -> str:
        """The dtype name of the leaf as users see it (``"key<fry>"`` for PRNG keys)."""
        return prng_key_info(self.prng_impl)[0] if self.prng_impl else self.dtype

    @property
    def leaf_shape(self) -> tuple[int, ...]:
        """The shape of the leaf as users see it (PRNG keys drop their key-data dims)."""
        if self.prng_impl:
            return self.shape[: len(self.shape) - prng_key_info(self.prng_impl)[1]]
        return self.shape

    def to_msgpack(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "key": self.key,
            "group": self.group,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "length": self.length,
            "xxh3": struct.pack(">Q", self.checksum),
        }
        if self.prng_impl:
            d["prng_impl"] = self.prng_impl
        return d


@dataclass(frozen=True)
class TensorSource:
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


@dataclass(frozen=True)
class Header:
    """A parsed, validated header: the raw map plus the tensor index by key and group."""

    file: str
    version: int
    data_start: int
    file_len: int
    fields: dict[str, Any]
    entries: tuple[Entry, ...]
    layout: tuple[tuple[tuple[int, int, int], ...], ...]  # per entry: (gap, data, length) segments

    def group(self, group: str) -> dict[str, Entry]:
        return {e.key: e for e in self.entries if e.group == group}


# --- layout ---------------------------------------------------------------------------------------
def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _segments(length: int) -> list[int]:
    if length == 0:
        return [0]
    return [min(MAX_SEGMENT, length - s) for s in range(0, length, MAX_SEGMENT)]


def _layout(lengths: Iterable[int]) -> tuple[list[list[tuple[int, int, int]]], int]:
    """Canonical placement relative to data_start: per tensor, its segments as
    (gap_start, data_start, length); plus the end. A gap is nil padding then a bin32 header."""
    pos = 0
    out = []
    for length in lengths:
        segs = []
        for s in _segments(length):
            data = _align(pos + 5)
            segs.append((pos, data, s))
            pos = data + s
        out.append(segs)
    return out, pos


def _gap_bytes(gap_start: int, data: int, length: int) -> bytes:
    return _NIL * (data - 5 - gap_start) + struct.pack(">BI", _BIN32, length)


def _preamble(header_len: int, header_crc: int, file_len: int) -> bytes:
    # fixarray(5), fixstr(7) magic, uint16 version, uint64 header_len, uint32 crc, uint64 file_len.
    return (
        b"\x95\xa7" + MAGIC.encode()
        + struct.pack(">BH", 0xCD, FORMAT_VERSION)
        + struct.pack(">BQ", 0xCF, header_len)
        + struct.pack(">BI", 0xCE, header_crc)
        + struct.pack(">BQ", 0xCF, file_len)
    )  # fmt: skip


# --- writing --------------------------------------------------------------------------------------
def _as_bytes(arr: np.ndarray) -> memoryview:
    flat = np.ascontiguousarray(arr).reshape(-1)
    return memoryview(flat.view(np.uint8))  # type: ignore[arg-type]


def write_file(
    path: str | os.PathLike[str],
    tensors: Sequence[TensorSource],
    fields: Mapping[str, Any],
    *,
    fsync: bool = True,
) -> int:
    """Writes a file atomically, streaming one tensor at a time.

    Args:
      path: the destination; it is replaced only once the new file is complete (and fsynced).
      tensors: what to store, in order.
      fields: the rest of the header (JSON-able; ``"tensors"`` is reserved).
      fsync: flush the data to the disk before renaming (default); False only for scratch files.

    Returns:
      The file's size in bytes.

    Raises:
      JaxnetsError: a tensor's ``get()`` returned the wrong dtype/shape (or whatever it raised).
    """
    path = os.fspath(path)
    lengths = [t.nbytes for t in tensors]
    layout, data_len = _layout(lengths)

    def header_bytes(crcs: Sequence[int]) -> bytes:
        entries = [
            Entry(
                t.key, t.group, t.dtype, tuple(t.shape), segs[0][1], n, crc, t.prng_impl
            ).to_msgpack()
            for t, segs, n, crc in zip(tensors, layout, lengths, crcs)
        ]
        return msgpack.packb({**fields, "tensors": entries}, use_bin_type=True)

    header = header_bytes([0] * len(tensors))
    data_start = _align(PREAMBLE_LEN + len(header))
    file_len = data_start + data_len
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        # Buffered: small tensors and padding coalesce into few syscalls; big ones pass straight through.
        with os.fdopen(fd, "wb", buffering=_BUFFER) as f:
            f.write(_preamble(len(header), 0, file_len))
            f.write(header)
            f.write(_NIL * (data_start - PREAMBLE_LEN - len(header)))
            crcs = [_write_tensor(f, t, segs) for t, segs in zip(tensors, layout)]
            final = header_bytes(crcs)
            if len(final) != len(header):  # pragma: no cover - checksums are fixed-width
                raise AssertionError("header length changed between passes")
            f.seek(0)
            f.write(_preamble(len(final), zlib.crc32(final), file_len))
            f.write(final)
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(folder)
    return file_len


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory (Windows)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_tensor(f: BinaryIO, t: TensorSource, segs: list[tuple[int, int, int]]) -> int:
    arr = t.get()
    want = storage_dtype(t.dtype)
    if not isinstance(arr, np.ndarray) or arr.dtype != want or tuple(arr.shape) != tuple(t.shape):
        got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
        raise JaxnetsError(
            f"{t.key}: expected {t.dtype} {tuple(t.shape)} while saving, got {got}.", path=t.key
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(want)
    view = _as_bytes(arr)
    if len(segs) == 1:
        gap, data, length = segs[0]
        f.write(_gap_bytes(gap, data, length))
        _write_all(f, view)
        return xxhash.xxh3_64_intdigest(view)
    h = xxhash.xxh3_64()
    start = 0
    for gap, data, length in segs:
        f.write(_gap_bytes(gap, data, length))
        part = view[start : start + length]
        _write_all(f, part)
        h.update(part)
        start += length
    return h.intdigest()


def _write_all(f: BinaryIO, view: memoryview) -> None:
    for i in range(0, len(view), _CHUNK):
        chunk = view[i : i + _CHUNK]
        done = 0
        while done < len(chunk):
            done += f.write(chunk[done:]) or 0


# --- reading --------------------------------------------------------------------------------------
def _fail(file: str, msg: str) -> FileFormatError:
    return FileFormatError(f"{file}: {msg}", file=file)


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
            size = os.fstat(f.fileno()).st_size
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
    if pad != _NIL * (data_start - PREAMBLE_LEN - header_len):
        raise _fail(file, "corrupted padding after the header.")
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
    entries, layout = _parse_index(file, fields.get("tensors"), file_len - data_start)
    return Header(file, version, data_start, file_len, fields, entries, layout)


def _parse_index(file: str, raw: Any, data_len: int) -> tuple[tuple[Entry, ...], Any]:
    if not isinstance(raw, list):
        raise _fail(file, "malformed header: no tensor index.")
    entries: list[Entry] = []
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise _fail(file, f"tensor index entry {i} is not a map.")
        key, group, dtype, shape = e.get("key"), e.get("group"), e.get("dtype"), e.get("shape")
        offset, length, crc, impl = (
            e.get("offset"),
            e.get("length"),
            e.get("xxh3"),
            e.get("prng_impl"),
        )
        where = f"tensor {key!r:.80}" if isinstance(key, str) else f"tensor index entry {i}"
        if not isinstance(key, str) or group not in _GROUPS or (group, key) in seen:
            raise _fail(file, f"{where}: missing, duplicate or malformed key/group.")
        seen.add((group, key))
        dt = storage_dtype(dtype, file=file)
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d < (1 << 62) for d in shape)
        ):
            raise _fail(file, f"{where}: malformed shape {shape!r:.80}.")
        if (
            type(offset) is not int
            or type(length) is not int
            or not isinstance(crc, bytes)
            or len(crc) != 8
        ):
            raise _fail(file, f"{where}: malformed offset/length/checksum.")
        n = 1
        for d in shape:
            n *= d
        if n * dt.itemsize != length:
            raise _fail(
                file, f"{where}: length {length} does not match shape {tuple(shape)} of {dtype}."
            )
        if length > data_len:  # before any layout arithmetic: a claimed 2**124 bytes must not loop
            raise _fail(file, f"{where}: {length} bytes claimed, the file holds {data_len} bytes of data.")
        if impl is not None:
            if impl not in _PRNG_IMPLS or dtype != "uint32" or len(shape) < 1:
                raise _fail(file, f"{where}: malformed PRNG key entry ({impl!r:.40}).")
        entries.append(
            Entry(
                key,
                group,
                str(dtype),
                tuple(shape),
                offset,
                length,
                struct.unpack(">Q", crc)[0],
                impl,
            )
        )
    layout, end = _layout(e.length for e in entries)
    for e, segs in zip(entries, layout):
        if e.offset != segs[0][1]:
            raise _fail(file, f"tensor {e.key!r}: offset {e.offset} out of place (expected {segs[0][1]}); "
                              "offsets must follow the canonical layout (no gaps, no overlaps).")  # fmt: skip
    if end != data_len:
        raise _fail(file, f"the tensor index covers {end} data bytes, the file holds {data_len}.")
    return tuple(entries), tuple(tuple(segs) for segs in layout)


def _read_entry(
    f: BinaryIO, header: Header, entry: Entry, segs: Sequence[tuple[int, int, int]], verify: bool
) -> np.ndarray:
    dt = storage_dtype(entry.dtype, file=header.file)
    out = np.empty(entry.shape, dt)
    view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")  # type: ignore[arg-type]
    h = xxhash.xxh3_64()
    start = 0
    for gap, data, length in segs:
        f.seek(header.data_start + gap)
        want = _gap_bytes(gap, data, length)
        if f.read(len(want)) != want:
            raise _fail(header.file, f"tensor {entry.key!r}: corrupted padding before its data.")
        part = view[start : start + length]
        _read_into(f, part, header.file, entry.key)
        if verify:
            h.update(part)
        start += length
    if verify and h.intdigest() != entry.checksum:
        raise _fail(header.file, f"tensor {entry.key!r}: checksum mismatch: the file is corrupted.")
    return out


def _read_into(f: BinaryIO, view: memoryview, file: str, key: str) -> None:
    done = 0
    while done < len(view):
        n = f.readinto(view[done : done + _CHUNK])  # type: ignore[attr-defined]
        if not n:
            raise _fail(file, f"tensor {key!r}: file truncated while reading.")
        done += n


def read_tensor(header: Header, entry: Entry, *, verify: bool = True) -> np.ndarray:
    """Reads one tensor (range read: only its bytes and its padding), checking its checksum.

    Returns:
      A numpy array of the stored dtype and shape (PRNG keys: their uint32 key data).
    """
    try:
        with open(header.file, "rb", buffering=0) as f:
            return _read_entry(f, header, entry, header.layout[header.entries.index(entry)], verify)
    except OSError as e:
        raise FileFormatError(
            f"{header.file}: cannot read ({e.strerror or e}).", file=header.file
        ) from e


def read_tensors(
    header: Header, entries: Sequence[Entry] | None = None, *, verify: bool = True
) -> Iterator[tuple[Entry, np.ndarray]]:
    """Reads tensors in file order from one private memory map of the file.

    Each array is a copy-on-write view of the file's pages (no copy is made; writing to it never
    touches the file), except tensors stored in several segments, which are copied into one
    array. With ``entries=None`` every tensor is read and every padding byte checked. Files are
    only ever replaced by rename (never truncated in place), so the mapping stays valid.

    Yields:
      ``(entry, array)`` pairs, each verified before it is yielded.
    """
    wanted = header.entries if entries is None else entries
    order = {e: i for i, e in enumerate(header.entries)}
    todo = sorted(wanted, key=order.__getitem__)
    if not todo:
        return
    try:
        with open(header.file, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size != header.file_len:
                raise _fail(header.file, "the file changed size since its header was read.")
            flags = mmap.MAP_PRIVATE | (getattr(mmap, "MAP_POPULATE", 0) if entries is None else 0)
            mm = mmap.mmap(
                f.fileno(), header.file_len, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
    except OSError as e:
        raise FileFormatError(
            f"{header.file}: cannot read ({e.strerror or e}).", file=header.file
        ) from e
    base = header.data_start
    raw = memoryview(mm)
    for ent in todo:
        segs = header.layout[order[ent]]
        for gap, data, length in segs:
            if raw[base + gap : base + data] != _gap_bytes(gap, data, length):
                raise _fail(header.file, f"tensor {ent.key!r}: corrupted padding before its data.")
        dt = storage_dtype(ent.dtype, file=header.file)
        if len(segs) == 1:
            _, data, length = segs[0]
            payload = raw[base + data : base + data + length]
            digest = xxhash.xxh3_64_intdigest(payload) if verify else ent.checksum
            arr = (
                np.frombuffer(mm, np.uint8, length, base + data).view(dt).reshape(ent.shape)
                if length
                else np.empty(ent.shape, dt)
            )
        else:
            arr = np.empty(ent.shape, dt)
            out = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
            h = xxhash.xxh3_64()
            start = 0
            for _, data, length in segs:
                part = raw[base + data : base + data + length]
                out[start : start + length] = part
                h.update(part)
                start += length
            digest = h.intdigest() if verify else ent.checksum
        if digest != ent.checksum:
            raise _fail(
                header.file, f"tensor {ent.key!r}: checksum mismatch: the file is corrupted."
            )
        yield ent, arr


def verify_file(path: str | os.PathLike[str]) -> Header:
    """Checks every byte of a file: preamble, header, all padding, all tensor checksums.

    Raises:
      FileFormatError: at the first problem, naming the file and the tensor.
    """
    header = read_header(path)
    for _ in read_tensors(header):
        pass
    return header
