"""``jaxnets.open(path)``: a lazy reader of a jaxnets file.

Opening reads only the preamble and the header; ``reader[key]`` range-reads one tensor (and checks
its checksum), ``reader.mmap(key)`` maps it without reading, so one tensor of a file larger than RAM
can be read. The reader is a ``Mapping`` from the model's state_dict keys to numpy arrays, with
``infos()`` describing every entry without reading data, which is what
``jaxnets.load_state_dict(model, path)`` uses to check a file before loading it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxnets.core.structure import LeafInfo
from jaxnets.errors import FileFormatError
from jaxnets.io import format as fmt

__all__ = ["Reader", "open_file"]


class Reader(Mapping[str, Any]):
    """A jaxnets file, read lazily. Use ``jaxnets.open(path)``, as a context manager if you like.

    As a mapping it holds the model's entries (params and buffers, by state_dict key); the
    optimizer state's entries are under ``group="opt_state"`` in :meth:`keys`, :meth:`infos`,
    :meth:`get_tensor`.

    Attributes:
      path: the file.
      format_version: the file format version (see docs/format.md).
      header: the raw header map (JSON-able), for tools.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._header = fmt.read_header(self.path)
        self._groups = {g: self._header.group(g) for g in ("model", "opt_state")}
        self._closed = False

    # --- what the file says -------------------------------------------------------------------
    @property
    def format_version(self) -> int:
        return self._header.version

    @property
    def header(self) -> dict[str, Any]:
        return self._header.fields

    @property
    def kind(self) -> str:
        """``"model"`` (a complete model) or ``"state_dict"`` (weights only)."""
        return str(self._header.fields.get("kind", "state_dict"))

    @property
    def jaxnets_version(self) -> str | None:
        return self._header.fields.get("jaxnets_version")

    @property
    def provenance(self) -> dict[str, Any]:
        """Who wrote the file: jaxnets, jax, numpy and Python versions, UTC date."""
        p = self._header.fields.get("provenance")
        return dict(p) if isinstance(p, dict) else {}

    @property
    def model_config(self) -> Any:
        """The model's stored config (``{"__class__": name, "config": {...}}``), or None."""
        return self._header.fields.get("model")

    @property
    def optimizer_config(self) -> Any:
        """The optimizer's stored config, or None."""
        return self._header.fields.get("optimizer")

    @property
    def metadata_config(self) -> Any:
        """The metadata as stored (a config; see :func:`jaxnets.to_config`), without decoding it."""
        return self._header.fields.get("metadata")

    @property
    def metadata(self) -> Any:
        """The metadata, decoded (registered classes in it must be registered in this process)."""
        from jaxnets.core.registry import from_config

        return from_config(self.metadata_config, file=self.path)

    @property
    def nbytes(self) -> int:
        """Size of the file in bytes."""
        return self._header.file_len

    # --- tensors ------------------------------------------------------------------------------
    def entries(self, group: str = "model") -> dict[str, fmt.Entry]:
        """The index entries (key, dtype, shape, offset, length, crc32) of a group by key."""
        return dict(self._group(group))

    def keys(self, group: str = "model") -> Any:  # type: ignore[override]
        """The keys of a group (``"model"``: params and buffers; ``"opt_state"``)."""
        return self._group(group).keys()

    def infos(self, group: str = "model") -> dict[str, LeafInfo]:
        """Shape and dtype of every entry of a group, without reading data."""
        return {k: LeafInfo(e.leaf_shape, e.leaf_dtype) for k, e in self._group(group).items()}

    def tensor_nbytes(self, key: str, group: str = "model") -> int:
        """Stored size of one entry in bytes."""
        return self._entry(key, group).length

    def get_tensor(self, key: str, group: str = "model", *, verify: bool = True) -> Any:
        """Reads one entry: a numpy array (a jax PRNG key array for typed keys).

        Raises:
          KeyError: no such key. FileFormatError: its bytes are corrupted.
        """
        self._check_open()
        entry = self._entry(key, group)
        arr = fmt.read_tensor(self._header, entry, verify=verify)
        return _finish_leaf(entry, arr)

    def mmap(self, key: str, group: str = "model") -> np.ndarray:
        """A read-only memory map of one entry's bytes (no read, no checksum check).

        Raises:
          FileFormatError: the entry is split into several segments (over 4 GiB) or a PRNG key.
        """
        self._check_open()
        entry = self._entry(key, group)
        segs = self._header.layout[self._header.entries.index(entry)]
        if len(segs) != 1 or entry.prng_impl:
            raise FileFormatError(
                f"{self.path}: {key!r} cannot be memory-mapped (stored in {len(segs)} segments"
                f"{' as PRNG key data' if entry.prng_impl else ''}); use reader[key].",
                file=self.path,
                path=key,
            )
        dt = fmt.storage_dtype(entry.dtype, file=self.path)
        if entry.length == 0:
            return np.empty(entry.shape, dt)
        return np.memmap(
            self.path,
            dtype=dt,
            mode="r",
            offset=self._header.data_start + entry.offset,
            shape=entry.shape,
        )

    def read_all(
        self, group: str | None = None, *, verify: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Reads every entry (of one group, or all groups with every padding byte checked).

        Returns:
          ``{group: {key: array}}``.
        """
        self._check_open()
        entries = None if group is None else list(self._group(group).values())
        out: dict[str, dict[str, Any]] = {g: {} for g in self._groups}
        for e, arr in fmt.read_tensors(self._header, entries, verify=verify):
            out[e.group][e.key] = _finish_leaf(e, arr)
        return out

    def verify(self) -> None:
        """Checks every byte of the file. Raises FileFormatError at the first problem."""
        self.read_all()

    # --- Mapping over the model's entries -----------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups["model"])

    def __len__(self) -> int:
        return len(self._groups["model"])

    def __contains__(self, key: object) -> bool:
        return key in self._groups["model"]

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Marks the reader closed (it holds no open file between reads)."""
        self._closed = True

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = {g: len(v) for g, v in self._groups.items() if v}
        return f"<jaxnets.Reader {self.path!r} v{self.format_version} {self.kind} tensors={n}>"

    # --- helpers ------------------------------------------------------------------------------
    def _group(self, group: str) -> dict[str, fmt.Entry]:
        if group not in self._groups:
            raise ValueError(f"group must be one of {sorted(self._groups)}, got {group!r}")
        return self._groups[group]

    def _entry(self, key: str, group: str) -> fmt.Entry:
        entries = self._group(group)
        if key not in entries:
            raise KeyError(f"{self.path}: no entry {key!r} in group {group!r}")
        return entries[key]

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the reader is closed")


def _finish_leaf(entry: fmt.Entry, arr: np.ndarray) -> Any:
    if entry.prng_impl:
        import jax

        return jax.random.wrap_key_data(arr, impl=entry.prng_impl)  # type: ignore[arg-type]
    return arr


def open_file(path: str | os.PathLike[str]) -> Reader:
    """Opens a jaxnets file lazily: reads and checks only the preamble and header.

    Args:
      path: a file written by ``jaxnets.save`` or ``jaxnets.save_state_dict``.

    Returns:
      A :class:`Reader`: ``.keys()``, ``reader[key]``, ``.infos()``, ``.model_config``,
      ``.optimizer_config``, ``.metadata``, ``.provenance``, ``.format_version``.

    Raises:
      FileFormatError: the file is not a valid jaxnets file (wrong magic, unknown version,
        truncated, corrupted header).
    """
    return Reader(path)
