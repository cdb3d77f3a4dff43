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
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import zlib
from functools import lru_cache

from jaxnets.errors import FileWriteError

__all__ = ["create_temp", "discard", "commit", "remove_stale", "write_error", "TEMP_PATTERN"]

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
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
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
