"""The temporary file one model file is written into by several processes (see
:mod:`jaxnets.io._spread`): process 0 creates it, the others join it, each writes its own byte
ranges into it, process 0 finishes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from typing import Any

from jaxnets.core import processes
from jaxnets.core import progress as _progress
from jaxnets.errors import JaxnetsError
from jaxnets.io import _atomic
from jaxnets.io._layout import TensorSource
from jaxnets.io._tensors import stream_digest
from jaxnets.io._writer import Plan

__all__ = ["SharedFile"]

_MAX_BUFFERS = 1000  # per pwritev: under IOV_MAX (1024 on Linux)
_MAX_BYTES = 32 << 20  # per pwritev
_TOKEN = 16  # random bytes process 0 writes for the others to find: the path is shared


class SharedFile:
    """This process's descriptor of the temporary file (process 0 creates it, the others join)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.fd = -1
        self.tmp = ""
        self._start = 0  # the pending run of contiguous buffers: where it starts, where it ends
        self._end = -1
        self._bufs: list[Any] = []
        self._nbytes = 0

    def create(self, file_len: int) -> list[str]:
        """Process 0: the temporary file at its final size, a token in it; ``[its name, token]``."""
        folder = os.path.dirname(os.path.abspath(self.file))
        _atomic.remove_stale(folder)
        try:
            self.fd, self.tmp = _atomic.create_temp(self.file)
            os.ftruncate(self.fd, file_len)  # sparse until each process fills its part
            token = secrets.token_bytes(_TOKEN)
            _pwrite_all(self.fd, token, 0)  # later overwritten by the preamble and header
            os.fsync(self.fd)  # so that the other hosts see it
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"creating {self.tmp or 'a temporary file'}") from e
        return [os.path.basename(self.tmp), token.hex()]

    def join(self, name: str, token: str, file_len: int, keys: list[str]) -> bool:
        """Any other process: opens process 0's temporary file ``name`` next to the destination
        as this process sees it; it must hold process 0's token."""
        folder = os.path.dirname(os.path.abspath(self.file))
        self.tmp = tmp = os.path.join(folder, os.path.basename(name))
        try:
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise _not_shared(self.file, tmp, keys, "no such file here") from None
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"opening {tmp}") from e
        self.fd = fd
        try:
            size = os.fstat(fd).st_size
            seen = os.pread(fd, _TOKEN, 0)
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"reading {tmp}") from e
        if size != file_len or seen != bytes.fromhex(token):
            raise _not_shared(self.file, tmp, keys, "another file of that name")
        return True

    def add(self, at: int, buf: Any) -> None:
        """Queues ``buf`` for byte ``at`` of the file (contiguous buffers go in one system call)."""
        n = memoryview(buf).nbytes
        if n == 0:
            return
        if at != self._end or len(self._bufs) >= _MAX_BUFFERS or self._nbytes >= _MAX_BYTES:
            self.flush()
            self._start = at
        self._bufs.append(buf)
        self._nbytes += n
        self._end = at + n

    def flush(self) -> None:
        bufs, at = self._bufs, self._start
        self._bufs, self._nbytes, self._end = [], 0, -1
        if not bufs:
            return
        try:
            views = [memoryview(b).cast("B") for b in bufs]
            while views:
                n = os.pwritev(self.fd, views, at)
                at += n
                while views and n >= len(views[0]):
                    n -= len(views.pop(0))
                if views:
                    views[0] = views[0][n:]
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"writing {self.tmp}") from e

    def close(self, *, fsync: bool) -> None:
        """Flushes what this process wrote (to the disk with ``fsync``) and closes it."""
        fd, self.fd = self.fd, -1
        try:
            if fsync:
                os.fsync(fd)
            os.close(fd)  # on NFS, also what makes the writes visible to process 0
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"flushing {self.tmp}") from e

    def finish(
        self,
        p: Plan,
        tensors: Sequence[TensorSource],
        spread: list[int],
        crcs: dict[int, bytes],
        fsync: bool,
        bar: _progress.Progress,
    ) -> None:
        """Process 0: checksums of the spread tensors read back, the header, flush, rename."""
        try:
            # A new descriptor, opened after the others closed theirs: it sees their writes.
            rfd = os.open(self.tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                for i in spread:
                    pieces = [(p.data_start + data, n) for _, data, n in p.segments(i)]
                    crcs[i] = stream_digest(rfd, pieces, self.file, tensors[i].key)
                    bar.update(p.lengths[i])
            finally:
                os.close(rfd)
            _pwrite_all(self.fd, p.final([crcs[i] for i in range(len(tensors))]), 0)
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"finishing {self.tmp}") from e
        self.close(fsync=fsync)
        try:
            _atomic.commit(self.tmp, self.file, fsync=fsync)
        except OSError as e:
            raise _atomic.write_error(self.file, e, f"renaming {self.tmp} to {self.file}") from e

    def abandon(self, *, remove: bool) -> None:
        """After a failure: closes the descriptor; process 0 removes the temporary file."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if remove and self.tmp:
            _atomic.discard(self.tmp)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _not_shared(file: str, tmp: str, keys: list[str], seen: str) -> JaxnetsError:
    shown = ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")
    return JaxnetsError(
        f"{file}: process {processes.index()} does not see the file process 0 is writing "
        f"({tmp}: {seen}), so this path is not on a filesystem all processes share. These arrays "
        f"are spread over the processes, each writing its shards into the one file: {shown}. "
        "Save to a path every process mounts (NFS, a cluster filesystem, a mounted bucket), or "
        "gather the arrays into one process (jax.experimental.multihost_utils.process_allgather) "
        "and save from it alone; nothing was written.",
        file=file,
        path=keys[0] if keys else None,
    )
