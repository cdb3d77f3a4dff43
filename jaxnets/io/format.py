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

Cost: a header of n tensors is parsed in O(n) with a small constant and indexed by key and by
position once; reading one tensor costs O(1) plus its bytes; writing costs O(n) plus the bytes.

This module is the one import for all of it; the parts live in one file each:
``_layout`` (constants, dtypes, :class:`Entry`, :class:`Header`, offset arithmetic), ``_header``
(reading and checking the header), ``_tensors`` (reading tensors), ``_writer`` (writing files),
``_atomic`` (the temporary file that replaces the destination), ``_spread`` (one file written
by every process of a job, each its own shards, into ``_shared_file``; ``_shards``: where a
shard's bytes lie).
"""

from jaxnets.io._header import check_identity, read_header
from jaxnets.io._layout import (
    ALIGN,
    FORMAT_VERSION,
    GROUPS,
    MAGIC,
    MAX_SEGMENT,
    MMAP_NO_FD,
    PREAMBLE_LEN,
    Columns,
    Entry,
    Header,
    TensorSource,
    _dtypes,
    _gap_bytes,
    _itemsizes,
    _preamble,
    prng_key_info,
    storage_dtype,
)
from jaxnets.io._spread import abandon as abandon_spread
from jaxnets.io._spread import write_spread
from jaxnets.io._tensors import (
    READ_AHEAD,
    STREAM_CHUNK,
    read_arrays,
    read_at,
    read_block,
    read_near,
    read_tensor,
    read_tensors,
    stream_digest,
    verify_file,
    verify_streaming,
)
from jaxnets.io._writer import write_file

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "ALIGN",
    "GROUPS",
    "MAX_SEGMENT",
    "PREAMBLE_LEN",
    "READ_AHEAD",
    "MMAP_NO_FD",
    "Entry",
    "Columns",
    "TensorSource",
    "Header",
    "storage_dtype",
    "prng_key_info",
    "write_file",
    "write_spread",
    "abandon_spread",
    "read_header",
    "check_identity",
    "read_at",
    "read_block",
    "read_near",
    "read_arrays",
    "read_tensor",
    "read_tensors",
    "verify_file",
    "verify_streaming",
    "stream_digest",
    "STREAM_CHUNK",
    # private, for the other io modules and tests: dtype tables, layout helpers
    "_dtypes",
    "_itemsizes",
    "_gap_bytes",
    "_preamble",
]
