"""Checksums of checkpoint data: XXH3-64 (the hash model files use), written as 16 hex digits.

What is covered, and what not, is in docs/checkpoints.md ("Integrity"). In short: the bytes of
every stored array (each packed group, each array stored on its own) and the ``meta`` JSON
itself; the hashes of the arrays live in ``meta``, and ``meta`` carries the hash of its own
canonical JSON form, so that one changed bit anywhere in what a restore returns is caught.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import xxhash

__all__ = ["array_checksum", "checksums", "json_checksum"]

_PARALLEL_BYTES = 32 << 20  # below this, starting threads costs more than it saves


def _bytes(x: np.ndarray) -> np.ndarray:
    """``x``'s C-order, little-endian bytes as a flat uint8 array (no copy when already so)."""
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    return np.ascontiguousarray(x).reshape(-1).view(np.uint8)


def array_checksum(x: np.ndarray) -> str:
    """XXH3-64 of an array's bytes in C order, as 16 hex digits."""
    return f"{xxhash.xxh3_64_intdigest(_bytes(x).data):016x}"


def json_checksum(value: Any) -> str:
    """XXH3-64 of the canonical JSON text of ``value`` (sorted keys, no spaces).

    Canonical, so that it does not depend on how a writer spaced the file: a stored meta is
    parsed, and its checksum recomputed from the values it holds.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{xxhash.xxh3_64_intdigest(text.encode()):016x}"


def checksums(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """:func:`array_checksum` of every array, on several threads when there is much data.

    xxhash releases the GIL, so hashing runs at memory speed on every core.
    """
    total = sum(a.nbytes for a in arrays.values())
    workers = min(len(arrays), os.cpu_count() or 1, 8)
    if total < _PARALLEL_BYTES or workers < 2:
        return {k: array_checksum(a) for k, a in arrays.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jaxnets-xxh3") as pool:
        return dict(zip(arrays, pool.map(array_checksum, arrays.values())))
