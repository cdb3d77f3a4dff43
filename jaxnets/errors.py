"""The exceptions jaxnets raises, and the one policy for choosing them.

* **Bad data** -- a file, checkpoint or state_dict that is corrupted, hostile, of another
  architecture, or cannot be written -- raises a :class:`JaxnetsError` subclass naming the file
  (``.file``) and the key path (``.path``): :class:`FileFormatError`, :class:`StateDictError`,
  :class:`RegistryError`, :class:`CheckpointError`, :class:`FileWriteError`.
* **Bad arguments** -- a value of the wrong type or out of range passed to a function, a layer's
  hyperparameters, an input of the wrong shape, a missing PRNG key in training -- raise Python's
  ``TypeError`` (wrong type) or ``ValueError`` (wrong value), saying what is accepted.

Every message says what went wrong, where, and what to do about it; nothing is filled in or
dropped silently instead of raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jaxnets.core.structure import StructureReport

__all__ = [
    "JaxnetsError",
    "StateDictError",
    "FileFormatError",
    "FileWriteError",
    "RegistryError",
    "CheckpointError",
    "JaxnetsWarning",
]


class JaxnetsError(Exception):
    """Base class of every error jaxnets raises on bad input.

    Attributes:
      path: the key path (``"features.0.weight"``) the error is about, or ``None``.
      file: the file or directory the error is about, or ``None``.
    """

    def __init__(self, message: str, *, path: str | None = None, file: str | None = None):
        super().__init__(message)
        self.path = path
        self.file = file


class StateDictError(JaxnetsError, KeyError):
    """A state_dict does not fit its model or template.

    Lists every missing, unexpected, misshapen and mistyped entry at once.

    Attributes:
      report: the full :class:`~jaxnets.StructureReport`.
      missing_keys, unexpected_keys: as in ``torch.nn.Module.load_state_dict``.
    """

    def __init__(self, message: str, report: StructureReport, *, file: str | None = None):
        problems = report.problem_paths()
        super().__init__(message, path=problems[0] if problems else None, file=file)
        self.report = report

    @property
    def missing_keys(self) -> list[str]:
        return list(self.report.missing)

    @property
    def unexpected_keys(self) -> list[str]:
        return list(self.report.unexpected)

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable.
        return str(self.args[0])


class FileFormatError(JaxnetsError):
    """A file is not a valid jaxnets file: truncated, corrupted, hostile or of an unknown version."""


class FileWriteError(JaxnetsError, OSError):
    """A file could not be written (disk full, read-only filesystem, no permission...).

    Nothing at the destination was changed: the old file, if any, is intact. Still an ``OSError``
    (``except OSError`` catches it), with the operating system's ``errno`` and ``strerror``.

    Attributes:
      file: the destination path.
      errno, strerror: as reported by the operating system (None if unknown).
    """

    def __init__(self, message: str, *, file: str, cause: OSError | None = None):
        super().__init__(message, file=file)
        if cause is not None:
            self.errno = cause.errno
            self.strerror = cause.strerror

    def __str__(self) -> str:  # OSError would print "[Errno n] strerror" instead of the message.
        return str(self.args[0])


class RegistryError(JaxnetsError):
    """A stored class name is not registered, or a class cannot be registered."""


class CheckpointError(JaxnetsError):
    """A checkpoint could not be saved or restored."""


class JaxnetsWarning(UserWarning):
    """Something was done on request that the user should know about (e.g. a lossy cast)."""
