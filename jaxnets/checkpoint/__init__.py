"""Training checkpoints on orbax: :class:`CheckpointManager` and the :class:`Checkpoint` it restores."""

from jaxnets.checkpoint.manager import Checkpoint, CheckpointManager

__all__ = ["Checkpoint", "CheckpointManager"]
