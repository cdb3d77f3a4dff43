"""Export of one restored checkpoint step as a complete jaxnets model file (``jaxnets.save``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jaxnets.errors import CheckpointError
from jaxnets.io import save

if TYPE_CHECKING:
    from jaxnets.checkpoint.manager import Checkpoint

__all__ = ["write_model_file"]


def write_model_file(ckpt: Checkpoint, path: str | os.PathLike[str], *, step_dir: str) -> None:
    """Writes a restored step (model, params, buffers, optimizer and its state) to ``path``.

    The step number, metrics and extras go into the file's metadata.

    Raises:
      CheckpointError: the step was saved without ``model=``, so it cannot be a model file.
    """
    if ckpt.model is None:
        raise CheckpointError(
            f"{step_dir}: step {ckpt.step} was saved without model=, so it cannot become a model "
            "file; save with model=... (or use jaxnets.save_state_dict on ckpt.params).",
            file=step_dir,
        )
    save(
        os.fspath(path),
        ckpt.model,
        ckpt.params,
        ckpt.state,
        opt_state=ckpt.opt_state,
        optimizer=ckpt.optimizer,
        metadata={"checkpoint_step": ckpt.step, "metrics": ckpt.metrics, "extra": ckpt.extra},
    )
