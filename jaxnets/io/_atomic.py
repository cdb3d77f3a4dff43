"""Replacing a file atomically: write a temporary file in the destination's folder, fsync, rename.

The temporary file is named ``.NAME.<pid>.<host>.<random>.tmp`` (``host``: 8 hex digits of the
CRC-32 of the host name), so that a later save into the same folder can tell a leftover of a
writer that died (SIGKILL, power loss) from the file of a save still running: it removes exactly
the files of that pattern whose host is this host and whose process no longer exists
(``os.kill(pid, 0)`` raises ``ProcessLookupError``). A live process's file, another host's (a
shared filesystem) and anything not matching the pattern are never touched. See docs/format.md.

Every OS error (disk full, read-only filesystem, permissions) becomes a
:class:`~jaxnets.errors.FileWriteError` naming the destination and the cause; the temporary file is
removed and the destination is never touched before the final rename.

:class:`AtomicFile` is that temporary file. It writes gathered buffers with ``os.writev`` (no copy
in user space, few system calls), from a background thread for large files: ``writev`` releases
the GIL, so the caller prepares (and hashes) the next tensors while the kernel copies the last.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import socket
import threading
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any, BinaryIO

from jaxnets.errors import FileWriteError

__all__ = [
    "AtomicFile",
    "create_temp",
    "discard",
    "commit",
    "remove_stale",
    "write_error",
    "TEMP_PATTERN",
]

TEMP_PATTERN = re.compile(
    r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.(?P<host>[0-9a-f]{8})\.[0-9a-f]{8}\.tmp", re.DOTALL
)
_NAME_BYTES = 200  # room for the suffix within the usual 255-byte limit on a file name


@lru_cache(maxsize=1)
def _host() -> str:
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'surrogateescape')):08x}"


def write_error(path: str, e: OSError, what: str) -> FileWriteError:
    """The :class:`FileWriteError` for an OS error ``e`` raised while doing ``what``."""
    cause = e.strerror or str(e) or type(e).__name__
    return FileWriteError(
        f"{path}: cannot save: {cause} (while {what}); the destination was not changed.",
        file=path,
        cause=e,
    )


def create_temp(path: str) -> tuple[int, str]:
    """Creates an empty temporary file next to ``path``: ``(fd open for writing, its path)``.

    Raises:
      OSError: as ``os.open`` raises it (the caller turns it into a FileWriteError).
    """
    folder, name = os.path.split(os.path.abspath(path))
    short = os.fsdecode(os.fsencode(name)[:_NAME_BYTES])
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    for _ in range(16):
        tmp = os.path.join(folder, f".{short}.{os.getpid()}.{_host()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp  # mode as open() gives it, less the umask
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary file name next to {path}")


def discard(tmp: str) -> None:
    """Removes a temporary file (after a failed save); a file already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def commit(tmp: str, path: str, *, fsync: bool) -> None:
    """Renames ``tmp`` over ``path`` (then fsyncs the folder so the rename survives a crash).

    Raises:
      OSError: from the rename (the caller removes ``tmp`` and raises a FileWriteError).
    """
    os.replace(tmp, path)
    if fsync:
        with contextlib.suppress(OSError):  # not every platform can open a directory (Windows)
            dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def replace_with(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` whole or not at all: ``write(f)`` fills a temporary file next to it, which
    is fsynced and renamed over ``path`` (for writers that need a file object: safetensors,
    ``torch.save``). A killed writer's temporary file is one :func:`remove_stale` cleans up.

    Raises:
      FileWriteError: an OS error (the destination is unchanged); whatever ``write`` raises.
    """
    try:
        fd, tmp = create_temp(path)
    except OSError as e:
        raise write_error(path, e, "creating a temporary file") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path, fsync=True)
    except OSError as e:
        discard(tmp)
        raise write_error(path, e, f"writing {tmp}") from e
    except BaseException:
        discard(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # exists (another user's), or not a pid at all
        return True
    return True


def remove_stale(folder: str) -> list[str]:
    """Removes the temporary files of dead writers on this host in ``folder``.

    Returns:
      The paths removed.
    """
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return []
    removed = []
    try:
        it = os.scandir(folder)
    except OSError:
        return []  # an unreadable folder: the save itself will report what is wrong
    with it:
        for d in it:
            if not (d.name.startswith(".") and d.name.endswith(".tmp")):
                continue
            m = TEMP_PATTERN.fullmatch(d.name)
            if m is None or m["host"] != _host():
                continue
            pid = int(m["pid"])
            if pid == os.getpid() or _alive(pid):
                continue
            # Someone else's leftover that cannot be removed (permissions) must not fail this save.
            with contextlib.suppress(OSError):
                if d.is_file(follow_symlinks=False):
                    os.unlink(d.path)
                    removed.append(d.path)
    return removed


class AtomicFile:
    """A temporary file next to ``path`` that replaces ``path`` on :meth:`commit`, or vanishes.

    Use as a context manager: leaving the block without ``commit()`` (an exception) removes the
    temporary file and leaves ``path`` untouched.

    Attributes:
      buffers, nbytes: the buffers gathered since the last :meth:`flush` and their total size.
        Hot loops may append to ``buffers`` and add to ``nbytes`` directly, then call
        :meth:`maybe_flush`.

    Raises (every method):
      FileWriteError: an OS error, naming ``path`` and the cause.
    """

    MAX_BUFFERS = 1000  # under IOV_MAX (1024 on Linux)
    MAX_BYTES = 32 << 20  # per writev: buffers held here may be copies the caller made for us

    def __init__(self, path: str, *, background: bool = False):
        self.path = path
        remove_stale(os.path.dirname(os.path.abspath(path)))
        try:
            self.fd, self.tmp = create_temp(path)
        except OSError as e:
            raise write_error(path, e, "creating a temporary file") from e
        self.buffers: list[Any] = []
        self.nbytes = 0
        self._committed = False
        self._error: BaseException | None = None  # what the writer thread raised
        self._queue: queue.Queue[tuple[list[Any], int] | None] | None = None
        self._thread: threading.Thread | None = None
        if background:  # at most 2 batches wait: bounds what is held alive
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._run, name="jaxnets-writer", daemon=True)
            self._thread.start()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            self.abort()

    def add(self, buf: Any) -> None:
        """Queues ``buf`` (bytes-like, C-contiguous) to be written after what is queued."""
        self.buffers.append(buf)
        self.nbytes += memoryview(buf).nbytes
        self.maybe_flush()

    def maybe_flush(self) -> None:
        if len(self.buffers) >= self.MAX_BUFFERS or self.nbytes >= self.MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        """Writes (or hands to the writer thread) everything queued so far."""
        batch, n = self.buffers, self.nbytes
        self.buffers, self.nbytes = [], 0
        if self._queue is None:
            self._writev(batch, n)
        else:
            self._raise_error()
            self._queue.put((batch, n))

    def wait(self) -> None:
        """Writes everything queued so far and waits until it is written (the writer thread, if
        any, keeps running); nothing queued is referenced any more afterwards."""
        self.flush()
        if self._queue is not None:
            self._queue.join()
        self._raise_error()

    def pwrite(self, data: bytes | bytearray, offset: int) -> None:
        """Writes ``data`` at ``offset`` once everything queued is written."""
        self._drain()
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(self.fd, view, offset + len(data) - len(view)) :]
        except OSError as e:
            raise write_error(self.path, e, f"writing {self.tmp}") from e

    def commit(self, *, fsync: bool = True) -> None:
        """Writes what is queued, fsyncs (unless ``fsync=False``), closes, renames over ``path``."""
        self._drain()
        try:
            if fsync:
                os.fsync(self.fd)
        except OSError as e:
            raise write_error(self.path, e, f"flushing {self.tmp} to disk") from e
        fd, self.fd = self.fd, -1
        try:
            os.close(fd)  # can report a delayed write error (e.g. on NFS)
        except OSError as e:
            raise write_error(self.path, e, f"closing {self.tmp}") from e
        try:
            commit(self.tmp, self.path, fsync=fsync)
        except OSError as e:
            raise write_error(self.path, e, f"renaming {self.tmp} to {self.path}") from e
        self._committed = True

    def abort(self) -> None:
        """Stops writing, closes and removes the temporary file; ``path`` is untouched."""
        if self._thread is not None:
            self._error = self._error or OSError("aborted")  # the thread skips what is queued
            self._queue.put(None)  # type: ignore[union-attr]
            self._thread.join()
            self._thread = None
        fd, self.fd = self.fd, -1
        if fd >= 0:  # never closed twice: the number may be reused at once
            with contextlib.suppress(OSError):  # a failed save is being reported already
                os.close(fd)
        discard(self.tmp)

    # --- internals ------------------------------------------------------------------------------
    def _drain(self) -> None:
        self.flush()
        if self._thread is not None:
            self._queue.put(None)  # type: ignore[union-attr]
            self._thread.join()
            self._thread = None
            self._queue = None
        self._raise_error()

    def _raise_error(self) -> None:
        e = self._error
        if isinstance(e, OSError):
            raise write_error(self.path, e, f"writing {self.tmp}") from e
        if e is not None:
            raise e

    def _run(self) -> None:
        # Whatever happens, keep taking batches until the sentinel: the caller's thread may be
        # blocked putting one into the full queue. Errors are raised in the caller's thread.
        q = self._queue
        while True:
            item = q.get()  # type: ignore[union-attr]
            try:
                if item is None:
                    return
                if self._error is None:
                    try:
                        self._writev(*item)
                    except BaseException as e:
                        self._error = e
            finally:
                item = None  # the batch's buffers are released before the next one is awaited
                q.task_done()  # type: ignore[union-attr]

    def _writev(self, views: list[Any], left: int) -> None:
        try:
            while views:
                n = os.writev(self.fd, views)
                if n == left:
                    return
                # A short write (a buffer over ~2 GiB, a signal): drop what was written, go on.
                left -= n
                views = [memoryview(b).cast("B") for b in views]
                while n >= len(views[0]):
                    n -= len(views.pop(0))
                views[0] = views[0][n:]
        except OSError as e:
            if threading.current_thread() is self._thread:
                raise
            raise write_error(self.path, e, f"writing {self.tmp}") from e
