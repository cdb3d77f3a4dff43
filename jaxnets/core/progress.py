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

import sys
import time
from typing import IO, Any

__all__ = ["AUTO_BYTES", "Progress", "check_progress", "progress"]

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
        self._stream.write(
            f"\r{self.desc}: {frac:4.0%} |{'#' * filled}{' ' * (30 - filled)}| "
            f"{_gib(self._done)}/{_gib(self.total)} GiB"
        )
        self._stream.flush()
        self._drawn = time.monotonic()


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f}"


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
