"""The safetensors format, read and written here for every dtype it defines (float8 and float4 too).

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length ``N``,
``N`` bytes of JSON ``{key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the tensors' bytes, little-endian, C order, covering the data section exactly.
The header is validated the way the safetensors library does (bounded size, no duplicate keys,
offsets that tile the data section), so a hostile header is a :class:`FileFormatError`, never a
huge allocation. Tensors are read one at a time into fresh memory, which the reader owns.

Reading the format here rather than through ``safetensors.numpy`` is what makes float8 work: numpy
has no float8 dtype and safetensors' numpy reader asks numpy for one; ml_dtypes (a jax dependency)
has them all.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.structure import LeafInfo, dtype_name
from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io import _atomic

__all__ = ["Header", "read_header", "read_tensor", "write", "DTYPES", "ORDER_KEY"]

# safetensors dtype -> numpy/ml_dtypes name.
DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn", "F6_E2M3": "float6_e2m3fn", "F6_E3M2": "float6_e3m2fn",
}  # fmt: skip
_CODES = {v: k for k, v in DTYPES.items()}
# Sub-byte dtypes are packed. F4 packs two values per byte, the first in the low 4 bits (as
# torch's float4_e2m1fn_x2, which safetensors maps to F4). The format fixes no bit order for
# F6, so jaxnets neither reads nor writes it rather than guess.
_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_NO_LAYOUT = {"F6_E2M3", "F6_E3M2"}
# safetensors sorts keys; `jaxnets convert` records the original (PyTorch's) order here.
ORDER_KEY = "jaxnets.key_order"
MAX_HEADER = 100_000_000  # the safetensors library's own limit
_MAX_NDIM = 64


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: its dtype code, shape and byte range in the data section."""

    code: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def info(self) -> LeafInfo:
        return LeafInfo(self.shape, DTYPES[self.code])


@dataclass(frozen=True)
class Header:
    """A validated safetensors header: entries in the file's key order, metadata, data start."""

    path: str
    entries: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int

    def keys(self) -> list[str]:
        """The keys in PyTorch's order when ``jaxnets convert`` recorded it, else the file's."""
        stored = list(self.entries)
        try:
            listed = json.loads(self.metadata.get(ORDER_KEY, "[]"))
        except ValueError:
            listed = []
        if isinstance(listed, list) and len(listed) == len(stored) and set(listed) == set(stored):
            return [str(k) for k in listed]
        return stored


def _bad(path: str, why: str, key: str | None = None) -> FileFormatError:
    return FileFormatError(f"{path}: not a valid safetensors file ({why}).", file=path, path=key)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _nbytes(code: str, shape: tuple[int, ...]) -> int | None:
    n = 1
    for d in shape:
        n *= d  # Python ints: a hostile shape cannot overflow
    bits = _BITS.get(code)
    if bits is None:
        return n * jnp.dtype(DTYPES[code]).itemsize
    return None if (n * bits) % 8 else n * bits // 8


def read_header(path: str | os.PathLike[str]) -> Header:
    """Reads and validates the header of a safetensors file (no tensor data).

    Raises:
      FileFormatError: anything that the safetensors library would refuse, naming the key.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise _bad(path, f"header length {n} does not fit a file of {size} bytes")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, f"header is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _bad(path, "header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(path, "__metadata__ is not a map of strings")
    data_len = size - 8 - n
    entries: dict[str, Entry] = {}
    for key, spec in doc.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"entry {key!r} is not {{dtype, shape, data_offsets}}", key)
        code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if not isinstance(code, str) or code not in DTYPES:
            raise _bad(path, f"{key!r} has dtype {code!r}, which safetensors does not define", key)
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise _bad(path, f"{key!r} has shape {shape!r}", key)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise _bad(path, f"{key!r} has data_offsets {offsets!r}", key)
        begin, end = offsets
        want = _nbytes(code, tuple(shape))
        if want is None:
            raise _bad(path, f"{key!r}: {code} of shape {tuple(shape)} does not fill whole bytes", key)
        if not 0 <= begin <= end <= data_len or end - begin != want:
            raise _bad(path, f"{key!r} has data_offsets {offsets} for {want} bytes in a data section of {data_len}", key)
        entries[key] = Entry(code, tuple(shape), begin, end)
    # The data section is tiled exactly: no holes (hidden payloads) and no overlaps.
    at = 0
    for key, entry in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if entry.begin != at:
            raise _bad(path, f"{key!r} starts at byte {entry.begin} of the data, expected {at} (a hole or an overlap)", key)
        at = entry.end
    if at != data_len:
        raise _bad(path, f"{data_len - at} bytes after the last tensor")
    return Header(path, entries, dict(meta), 8 + n)


def read_tensor(header: Header, key: str, f: io.BufferedReader | None = None) -> np.ndarray:
    """One tensor as a new numpy array (float8/float4/bfloat16 as ml_dtypes types).

    ``f``: the file, open for reading, to reuse between tensors (opened here when None).

    Raises:
      KeyError: no such key. FileFormatError: the file changed or F6 (no agreed bit layout).
    """
    e = header.entries[key]
    if e.code in _NO_LAYOUT:
        raise FileFormatError(
            f"{header.path}: {key!r} is {e.code} (6-bit floats): safetensors fixes no bit order for "
            "packing them, so jaxnets does not read them rather than guess.",
            file=header.path, path=key,
        )
    buf = np.empty(e.end - e.begin, np.uint8)
    if f is None:
        with open(header.path, "rb") as own:
            own.seek(header.data_start + e.begin)
            got = own.readinto(buf.data)
    else:
        f.seek(header.data_start + e.begin)
        got = f.readinto(buf.data)
    if got != buf.size:
        raise FileFormatError(f"{header.path}: truncated while reading {key!r}.", file=header.path, path=key)
    if e.code == "F4":
        values = np.empty(2 * buf.size, np.uint8)
        values[0::2], values[1::2] = buf & 0x0F, buf >> 4
        return values.view(jnp.dtype("float4_e2m1fn")).reshape(e.shape)
    dtype = jnp.dtype(DTYPES[e.code])
    if dtype.itemsize > 1 and sys.byteorder == "big":
        return buf.view(dtype.newbyteorder("<")).astype(dtype).reshape(e.shape)
    return buf.view(dtype).reshape(e.shape)


def write(path: str | os.PathLike[str], arrays: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Writes ``{key: numpy array}`` as a safetensors file, atomically (temp file, then rename).

    The keys' order is recorded in the metadata (:data:`ORDER_KEY`) so that readers here give
    them back in PyTorch's order; other readers see the usual sorted file.

    Raises:
      JaxnetsError: an entry's dtype has no safetensors equivalent (int4, complex128, float6,
        PRNG keys), naming every such key and dtype; nothing is written then.
    """
    path = os.fspath(path)
    bad: list[str] = []  # what is wrong, per key
    bad_keys: list[str] = []
    specs: dict[str, Any] = {}
    data: list[np.ndarray] = []
    at = 0
    for key, value in arrays.items():
        if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            bad.append(f"{key!r} (a typed PRNG key array, {value.dtype})")
            bad_keys.append(key)
            continue
        arr = np.asarray(value)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-D)
            arr = arr.copy(order="C")
        name = dtype_name(arr.dtype) if arr.dtype.kind != "O" else "object"
        code = _CODES.get(name)
        if code is None or code in _NO_LAYOUT or (code == "F4" and arr.size % 2):
            bad.append(f"{key!r} ({name}{', an odd number of values' if code == 'F4' else ''})")
            bad_keys.append(key)
            continue
        if code == "F4":
            nibbles = arr.reshape(-1).view(np.uint8) & 0x0F
            raw = nibbles[0::2] | (nibbles[1::2] << 4)
        else:
            if arr.dtype.itemsize > 1 and arr.dtype.byteorder in ("=", "|") and sys.byteorder == "big":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            elif arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            raw = arr.reshape(-1).view(np.uint8)
        specs[key] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [at, at + raw.size]}
        at += raw.size
        data.append(raw)
    if bad:
        raise JaxnetsError(
            f"{path}: safetensors cannot hold {bad[0]}"
            + (f" (nor {', '.join(bad[1:])})" if len(bad) > 1 else "")
            + "; its dtypes are "
            + ", ".join(sorted(n for c, n in DTYPES.items() if c not in _NO_LAYOUT))
            + ". Cast the entry, or write a jaxnets file.",
            file=path,
            path=str(bad_keys[0]),
        )
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[ORDER_KEY] = json.dumps(list(specs))
    head = json.dumps({"__metadata__": meta, **specs}, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # tensors start 8-byte aligned, as safetensors pads

    def write(f: BinaryIO) -> None:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in data:
            f.write(raw.data)

    _atomic.replace_with(path, write)
