"""jaxnets: pure-function models for JAX whose state_dicts are PyTorch's, saved and restored safely.

The public API is flat: ``jaxnets.state_dict``, ``jaxnets.load_state_dict``, ``jaxnets.register``,
``jaxnets.nn.Linear``, ``jaxnets.models.resnet18`` ... Nothing heavy happens at import time.
"""

from jaxnets import interop, models, nn, optim
from jaxnets.checkpoint import Checkpoint, CheckpointManager
from jaxnets.core import (
    LeafInfo,
    Mismatch,
    StructureReport,
    check_state_dict,
    compare,
    flatten,
    from_config,
    load_state_dict,
    register,
    state_dict,
    to_config,
    tree_from_spec,
    tree_spec,
)
from jaxnets.errors import (
    CheckpointError,
    FileFormatError,
    FileWriteError,
    JaxnetsError,
    JaxnetsWarning,
    RegistryError,
    StateDictError,
)
from jaxnets.io import LoadedModel, Reader, load, open, save, save_state_dict  # noqa: A004
from jaxnets.io.model_file import package_version
from jaxnets.nn.summary import summary

__version__ = package_version()

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "FileFormatError",
    "FileWriteError",
    "JaxnetsError",
    "JaxnetsWarning",
    "LeafInfo",
    "LoadedModel",
    "Mismatch",
    "Reader",
    "RegistryError",
    "StateDictError",
    "StructureReport",
    "__version__",
    "check_state_dict",
    "compare",
    "flatten",
    "from_config",
    "interop",
    "load",
    "load_state_dict",
    "models",
    "nn",
    "open",
    "optim",
    "register",
    "save",
    "save_state_dict",
    "state_dict",
    "summary",
    "to_config",
    "tree_from_spec",
    "tree_spec",
]
