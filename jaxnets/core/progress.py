"""The one progress bar: long saves, loads and conversions report the bytes done.

Every long operation takes a ``progress=`` argument with the same meaning:

* ``None`` (the default): a bar when the work is at least :data:`AUTO_BYTES` (1 GiB) and standard
  error is a terminal; silent otherwise (logs, notebooks' captured output, CI);
* ``True``: always a bar, on standard error, whatever its size and wherever it goes;
* ``False``: never.

The bar is tqdm's when tqdm is installed (``pip install tqdm``), else one line of text rewritten
in place, counted in bytes either way. In a job of several processes only the process that does
the writing (or, on a load, each process for its own reads) reports. Nothing here imports jaxnets,
so every layer (files, checkpoints, the CLI) can use it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["AUTO_BYTES", "Progress", "bytes_read", "check_progress", "files_bytes", "polled", "progress"]

AUTO_BYTES = 1 << 30  # with progress=None, work smaller than this shows no bar


def check_progress(value: Any) -> bool | None:
    """``value`` if it is a valid ``progress=`` argument (None, True or False).

    Raises:
      TypeError: anything else.
    """
    if value is None or type(value) is bool:
        return value
    raise TypeError(
        f"progress= takes None (a bar for work of 1 GiB or more on a terminal), True or False; "
        f"got {type(value).__name__} {value!r:.40}."
    )


class Progress:
    """A byte counter that draws a bar, or does nothing. Use :func:`progress` to make one.

    Use as a context manager; :meth:`update` adds bytes done. Cheap enough to call per tensor.
    """

    def __init__(self, total: int, desc: str, stream: IO[str] | None) -> None:
        self.total = total
        self.desc = desc
        self._stream = stream
        self._bar: Any = None
        self._done = 0
        self._drawn = 0.0  # when the text bar was last drawn
        if stream is None:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._draw()
        else:
            self._bar = tqdm(
                total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=stream, dynamic_ncols=True, leave=True,
            )  # fmt: skip

    @property
    def enabled(self) -> bool:
        """Whether a bar is shown."""
        return self._stream is not None

    def update(self, nbytes: int) -> None:
        """Counts ``nbytes`` more bytes as done."""
        if self._stream is None or nbytes <= 0:
            return
        self._done += nbytes
        if self._bar is not None:
            self._bar.update(nbytes)
        elif time.monotonic() - self._drawn >= 0.2 or self._done >= self.total:
            self._draw()

    def update_to(self, done: int) -> None:
        """Counts bytes done up to ``done`` (never back, never past the total)."""
        self.update(min(done, self.total) - self._done)

    def complete(self) -> None:
        """Counts what is left as done (work whose last part is not counted byte by byte)."""
        self.update(self.total - self._done)

    def close(self) -> None:
        """Ends the bar (its last state stays on screen)."""
        if self._stream is None:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
        self._stream = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self) -> None:
        if self._stream is None:
            return
        frac = min(1.0, self._done / self.total) if self.total else 1.0
        filled = int(frac * 30)
        size, unit = _unit(self.total)
        self._stream.write(
            f"\r{self.desc}: {frac:4.0%} |{'#' * filled}{' ' * (30 - filled)}| "
            f"{self._done / size:.2f}/{self.total / size:.2f} {unit}"
        )
        self._stream.flush()
        self._drawn = time.monotonic()


def _unit(total: int) -> tuple[int, str]:
    """The binary unit a bar of ``total`` bytes counts in (as tqdm's ``unit_divisor=1024``)."""
    for shift, name in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if total >= 1 << shift:
            return 1 << shift, name
    return 1, "B"


def progress(total: int, desc: str, enabled: bool | None = None) -> Progress:
    """A progress bar over ``total`` bytes, or a silent counter (see the module docstring).

    Args:
      total: the bytes the work will count.
      desc: what is done (``"saving model.jnet"``), shown before the bar.
      enabled: the caller's ``progress=`` argument: None (auto), True or False.

    Returns:
      A :class:`Progress`, to use as a context manager.

    Raises:
      TypeError: ``enabled`` is not None, True or False.
    """
    enabled = check_progress(enabled)
    stream = sys.stderr  # looked up now: tests and tools may have replaced it
    if enabled is None:
        isatty = getattr(stream, "isatty", None)
        enabled = total >= AUTO_BYTES and callable(isatty) and bool(isatty())
    return Progress(total, desc, stream if enabled else None)


@contextmanager
def polled(bar: Progress, measure: Callable[[], int], interval: float = 0.25) -> Iterator[None]:
    """Moves ``bar`` by ``measure()`` (bytes done so far) every ``interval`` seconds, from a
    thread, while the block runs: for work done inside a library that reports nothing (orbax
    writing or reading a checkpoint). Completes the bar when the block ends without an error.

    Nothing runs when the bar is disabled.
    """
    if not bar.enabled:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            try:
                bar.update_to(measure())
            except Exception:  # noqa: BLE001 - a bar never breaks the work it reports on
                pass

    thread = threading.Thread(target=poll, name="jaxnets-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    bar.complete()


def files_bytes(directory: str, name: str) -> int:
    """The bytes of every file under ``directory/name`` and ``directory/name.*`` (a checkpoint
    step being written, under its temporary name or its final one)."""
    total = 0
    try:
        tops = [e.path for e in os.scandir(directory) if e.name == name or e.name.startswith(name + ".")]
    except OSError:
        return 0
    for top in tops:
        for root, _, names in os.walk(top):
            for name in names:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:  # renamed or removed meanwhile
                    pass
    return total


def bytes_read() -> int:
    """Bytes this process has read from files so far (Linux: ``rchar`` of /proc/self/io; 0
    elsewhere, where a bar then jumps to its end when the work is done)."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
