"""What the CLI opens: every file :mod:`jaxnets.io.sources` reads, plus checkpoint directories.

A directory is a Hugging Face model folder when it holds one of its weights files
(``model.safetensors``, ``model.safetensors.index.json``, ...) and a jaxnets checkpoint
otherwise; checkpoints sit above io, so only the CLI knows both.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from jaxnets.cli.checkpoints import CheckpointSource
from jaxnets.io.sources import Source, model_folder_file
from jaxnets.io.sources import open_source as open_file_source

__all__ = ["Source", "open_source"]


def open_source(path: str | os.PathLike[str]) -> Source:
    """The source for ``path``: a checkpoint directory, or any file :mod:`jaxnets.io.sources` reads.

    Raises:
      FileNotFoundError: nothing at ``path``.
      JaxnetsError: the file is not of the format its name says, or not a checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", str(p))
    if p.is_dir() and model_folder_file(p) is None:
        return CheckpointSource(p)
    return open_file_source(p)
