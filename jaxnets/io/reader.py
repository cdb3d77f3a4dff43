"""``jaxnets.open(path)``: a lazy reader of a jaxnets file.

Opening reads only the preamble and the header; ``reader[key]`` range-reads one tensor (and checks
its checksum), ``reader.mmap(key)`` maps it without reading, so one tensor of a file larger than RAM
can be read. The reader is a ``Mapping`` from the model's state_dict keys to numpy arrays, with
``infos()`` describing every entry without reading data, which is what
``jaxnets.load_state_dict(model, path)`` uses to check a file before loading it.

``reader.get_tensor(key, sharding=s)`` builds a jax array with sharding ``s`` from range reads of
this process's shards only (docs/multihost.md), as ``jaxnets.load(path, sharding=...)`` does.

Every key lookup is O(1) (the header is indexed by key and by position once). A reader holds one
file descriptor, opened at the first tensor read (after checking that the file is still the one
whose header was read: a file replaced since is an error, not a mix of two files) and closed by
:meth:`Reader.close` or the ``with`` block. Reads are positional (``preadv``: one system call per
tensor, and a file truncated under the reader is an error, not a crash), so threads may share a
reader; ``close()`` never waits, and the descriptor is closed when the last read in progress ends.
"""

from __future__ import annotations

import mmap as _mmap
import os
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np

from jaxnets.core.progress import Progress
from jaxnets.core.structure import LeafInfo
from jaxnets.errors import FileFormatError
from jaxnets.io import _shards
from jaxnets.io import format as fmt
from jaxnets.io.leaves import exact_for_jax

__all__ = ["Reader", "open_file"]


class Reader(Mapping[str, Any]):
    """A jaxnets file, read lazily. Use ``jaxnets.open(path)``, as a context manager if you like.

    As a mapping it holds the model's entries (params and buffers, by state_dict key); the
    optimizer state's entries are under ``group="opt_state"`` in :meth:`keys`, :meth:`infos`,
    :meth:`get_tensor`. Safe to share between threads.

    Attributes:
      path: the file.
      format_version: the file format version (see docs/format.md).
      header: the raw header map (JSON-able), for tools; the tensor index is :meth:`entries`.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._header = fmt.read_header(self.path)
        self._groups = self._header.positions  # {group: {key: position}}, each in file order
        self._lock = threading.Lock()  # guards opening and closing, not each read
        self._closed = False
        self._fd: int | None = None
        self._close_fd: weakref.finalize | None = None
        # One item per read in progress on self._fd. list.append/pop are atomic under the GIL, so a
        # read costs no lock; close() and the last read out decide under the lock who closes.
        self._reading: list[None] = []
        self._map: _mmap.mmap | None = None
        # (start, bytes): the file's bytes from start on, read ahead for the next small tensors
        # (format.read_near). Replaced whole, never changed, so threads share it without a lock.
        self._ahead: tuple[int, memoryview] = (0, memoryview(b""))

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

        return from_config(self.metadata_config, file=self.path, path="metadata")

    @property
    def nbytes(self) -> int:
        """Size of the file in bytes."""
        return self._header.file_len

    # --- tensors ------------------------------------------------------------------------------
    def entries(self, group: str = "model") -> dict[str, fmt.Entry]:
        """The index entries (key, dtype, shape, offset, length, xxh3) of a group by key."""
        self._group(group)
        return dict(self._header.group(group))

    def keys(self, group: str = "model") -> Any:  # type: ignore[override]
        """The keys of a group (``"model"``: params and buffers; ``"opt_state"``)."""
        return self._group(group).keys()

    def infos(self, group: str = "model") -> dict[str, LeafInfo]:
        """Shape and dtype of every entry of a group, without reading data."""
        c = self._header.columns
        positions = self._group(group)
        if c.prng_impls is None:
            return {k: LeafInfo(c.shapes[i], c.dtypes[i]) for k, i in positions.items()}
        return {k: LeafInfo(e.leaf_shape, e.leaf_dtype) for k, e in self.entries(group).items()}

    def tensor_nbytes(self, key: str, group: str = "model") -> int:
        """Stored size of one entry in bytes."""
        return self._header.columns.lengths[self._position(key, group)]

    def get_tensor(
        self, key: str, group: str = "model", *, verify: bool = True, sharding: Any = None
    ) -> Any:
        """Reads one entry: a new numpy array (a jax PRNG key array for typed keys).

        Only the entry's bytes and the padding before them are read (one system call); its
        checksum is checked unless ``verify=False``.

        With ``sharding`` (a ``jax.sharding.Sharding``), the entry comes back as a jax array
        placed so, each of this process's shards built from range reads of its own bytes
        (``jax.make_array_from_callback``): no process reads, maps or holds more of a large entry
        than its shards. The checksum covers the whole entry, so ``verify`` then streams all of
        its bytes through a 16 MiB buffer first (the page cache holds them, not this process).
        A 64-bit entry jax cannot hold exactly (without ``jax_enable_x64``) is refused.

        Raises:
          KeyError: no such key. ValueError: the reader is closed, or ``group`` is unknown.
          FileFormatError: its bytes are corrupted, or the file was replaced since it was opened.
          JaxnetsError: with ``sharding``, 64-bit values jax would change.
        """
        if sharding is not None:
            return self._read_sharded(key, group, sharding, verify=verify, convert=None)
        positions = self._groups.get(group) if isinstance(group, str) else None
        i = positions.get(key) if positions is not None and isinstance(key, str) else None
        if i is None:
            i = self._position(key, group)  # raises the right error
        self._reading.append(None)
        try:
            fd = self._fd
            if fd is None or self._closed:  # checked after counting this read: see close()
                fd = self._open()
            arr, self._ahead = fmt.read_near(fd, self._header, i, self._ahead, verify=verify)
        except OSError as e:
            raise FileFormatError(
                f"{self.path}: cannot read {key!r} ({e.strerror or e}).", file=self.path, path=key
            ) from e
        finally:
            self._reading.pop()
            if self._closed:
                self._close_if_idle()
        impls = self._header.columns.prng_impls
        return _finish_leaf(self._header.entry(i), arr) if impls and impls[i] else arr

    def _read_sharded(
        self,
        key: str,
        group: str,
        sharding: Any,
        *,
        verify: bool,
        convert: Callable[[np.ndarray], np.ndarray] | None,
    ) -> Any:
        """One entry as a jax array with ``sharding``, its shards from range reads (for
        :meth:`get_tensor` and ``jaxnets.load``).

        Args:
          convert: what each block becomes before it is placed (``jaxnets.load``: its ``dtype=``
            cast, or the check that jax holds it exactly); None: that check.
        """
        import jax

        i = self._position(key, group)
        h = self._header
        impl = h.columns.prng_impls[i] if h.columns.prng_impls else None
        if convert is None:
            convert = partial(exact_for_jax, key, file=self.path, castable=False)
        shape = h.columns.shapes[i]
        self._reading.append(None)
        try:
            fd = self._fd
            if fd is None or self._closed:
                fd = self._open()
            if impl or h.columns.lengths[i] <= fmt.READ_AHEAD:  # small: read once; shards: slices
                whole, self._ahead = fmt.read_near(fd, h, i, self._ahead, verify=verify)
                if impl:  # the key data, placed with the key array's sharding (trailing dims whole)
                    data = jax.make_array_from_callback(shape, sharding, lambda idx: whole[idx])
                    return jax.random.wrap_key_data(data, impl=impl)
                whole = convert(whole)
                return jax.make_array_from_callback(shape, sharding, lambda idx: whole[idx])
            if verify:
                fmt.verify_streaming(fd, h, i)

            def block(index: Any) -> np.ndarray:
                return convert(fmt.read_block(fd, h, i, _shards.normalize(index, shape)))

            return jax.make_array_from_callback(shape, sharding, block)
        except OSError as e:
            raise FileFormatError(
                f"{self.path}: cannot read {key!r} ({e.strerror or e}).", file=self.path, path=key
            ) from e
        finally:
            self._reading.pop()
            if self._closed:
                self._close_if_idle()

    def mmap(self, key: str, group: str = "model") -> np.ndarray:
        """A read-only view of one entry's bytes in a memory map of the file (no read, no checksum).

        All calls share one mapping of the file per reader; each view keeps it alive, also after
        :meth:`close`. The padding before the entry is checked; its checksum is not (use
        ``reader[key]`` or :meth:`verify` for that).

        Raises:
          FileFormatError: the entry is split into several segments (over 4 GiB) or a PRNG key.
        """
        i = self._position(key, group)
        entry = self._header.entry(i)
        segs = self._header.segments(i)
        if len(segs) != 1 or entry.prng_impl:
            raise FileFormatError(
                f"{self.path}: {key!r} cannot be memory-mapped (stored in {len(segs)} segments"
                f"{' as PRNG key data' if entry.prng_impl else ''}); use reader[key].",
                file=self.path,
                path=key,
            )
        dt = fmt.storage_dtype(entry.dtype, file=self.path, key=key)
        if entry.length == 0:
            out = np.empty(entry.shape, dt)
            out.flags.writeable = False
            return out
        mm = self._mapping()
        base = self._header.data_start
        gap, data, length = segs[0]
        if mm[base + gap : base + data] != fmt._gap_bytes(gap, data, length):
            raise FileFormatError(
                f"{self.path}: tensor {key!r}: corrupted padding before its data.",
                file=self.path,
                path=key,
            )
        return np.ndarray(entry.shape, dt, mm, base + data)  # read-only: the mapping is PROT_READ

    def read_all(
        self,
        group: str | None = None,
        *,
        verify: bool = True,
        skip: Mapping[str, Collection[str]] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Reads every entry (of one group, or of all groups with every padding byte checked).

        The arrays are private copy-on-write views of one memory map of the file (see
        :func:`jaxnets.io.format.read_arrays`).

        Args:
          group: one group, or None for all.
          verify: check every checksum (padding is always checked).
          skip: ``{group: keys}`` not to read (``jaxnets.load`` reads them shard by shard).
          progress: counts the bytes checked (:mod:`jaxnets.core.progress`).

        Returns:
          ``{group: {key: array}}``, each group in file order.
        """
        self._check_open()
        h = self._header
        out: dict[str, dict[str, Any]] = {g: {} for g in self._groups}
        if skip and any(skip.values()):
            todo = [
                i
                for g, positions in self._groups.items()
                if group is None or g == group
                for k, i in positions.items()
                if k not in skip.get(g, ())
            ]
            todo.sort()
            for i, arr in zip(todo, fmt.read_arrays(h, todo, verify=verify, progress=progress)):
                out[h.columns.groups[i]][h.columns.keys[i]] = arr
        elif group is None:  # one pass over the whole file
            arrays = fmt.read_arrays(h, None, verify=verify, progress=progress)
            if not self._groups["opt_state"]:
                out["model"] = dict(zip(h.columns.keys, arrays))
            else:
                for k, g, arr in zip(h.columns.keys, h.columns.groups, arrays):
                    out[g][k] = arr
        else:
            positions = self._group(group)  # ascending: file order
            arrays = fmt.read_arrays(h, list(positions.values()), verify=verify, progress=progress)
            out[group] = dict(zip(positions, arrays))
        if h.columns.prng_impls:
            for g, by_key in out.items():
                for k, arr in by_key.items():
                    i = self._groups[g][k]
                    if h.columns.prng_impls[i]:
                        by_key[k] = _finish_leaf(h.entry(i), arr)
        return out

    def verify(self) -> None:
        """Checks every byte of the file. Raises FileFormatError at the first problem."""
        self.read_all()

    # --- Mapping over the model's entries -----------------------------------------------------
    __getitem__ = get_tensor  # reader[key]: the model group, checksum verified

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups["model"])

    def __len__(self) -> int:
        return len(self._groups["model"])

    def __contains__(self, key: object) -> bool:
        return key in self._groups["model"]

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the reader: its descriptor at once, or when the reads in progress end.

        Arrays already returned stay valid (``mmap`` views keep their mapping alive). Reading after
        ``close()`` raises ValueError; closing twice is fine.
        """
        with self._lock:
            self._closed = True  # set before looking at _reading: see get_tensor
            self._map = None  # views handed out keep the mapping alive; it is unmapped after them
        self._close_if_idle()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = {g: len(v) for g, v in self._groups.items() if v}
        return f"<jaxnets.Reader {self.path!r} v{self.format_version} {self.kind} tensors={n}>"

    # --- helpers ------------------------------------------------------------------------------
    def _group(self, group: str) -> Mapping[str, int]:
        positions = self._groups.get(group) if isinstance(group, str) else None
        if positions is None:
            raise ValueError(f"group must be one of {sorted(self._groups)}, got {group!r}")
        return positions

    def _position(self, key: str, group: str) -> int:
        i = self._group(group).get(key) if isinstance(key, str) else None
        if i is None:
            raise KeyError(f"{self.path}: no entry {key!r} in group {group!r}")
        return i

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the reader is closed")

    def _open(self) -> int:
        """The descriptor, opened (and the file's identity checked) on first use.

        Raises:
          ValueError: the reader is closed.
        """
        with self._lock:
            self._check_open()
            if self._fd is None:
                fd = _open(self.path)
                try:
                    fmt.check_identity(self._header, fd)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
                # Also closed if the reader is dropped unclosed (jaxnets.load does not close it).
                self._close_fd = weakref.finalize(self, os.close, fd)
            return self._fd

    def _close_if_idle(self) -> None:
        # A read that started before close() set _closed is in _reading, so the descriptor stays
        # open for it; one that starts after sees _closed and never uses the descriptor.
        with self._lock:
            if self._closed and not self._reading and self._close_fd is not None:
                self._close_fd()  # os.close(fd), exactly once
                self._close_fd = None
                self._fd = None

    def _mapping(self) -> _mmap.mmap:
        """One read-only shared mapping of the whole file, made on first use."""
        with self._lock:
            self._check_open()
            if self._map is None:
                fd = _open(self.path)
                try:
                    fmt.check_identity(self._header, fd)
                    self._map = _mmap.mmap(
                        fd, self._header.file_len, prot=_mmap.PROT_READ, **fmt.MMAP_NO_FD
                    )
                except OSError as e:
                    raise FileFormatError(
                        f"{self.path}: cannot map ({e.strerror or e}).", file=self.path
                    ) from e
                finally:
                    os.close(fd)  # the mapping does not need it
            return self._map


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read ({e.strerror or e}).", file=path) from e


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
