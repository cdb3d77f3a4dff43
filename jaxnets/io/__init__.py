"""Files: one portable msgpack file for weights or a complete model (layout: docs/format.md).

* :func:`save` / :func:`load`: a complete model (config, params, buffers, optimizer, metadata);
* :func:`save_state_dict`: weights only; ``jaxnets.load_state_dict(model, path)`` loads them;
* :func:`open`: the lazy reader of either (header only until a tensor is asked for);
* :mod:`.sources`: every weights file jaxnets reads (jaxnets, safetensors, Hugging Face folders,
  PyTorch), one lazy mapping each.

Importing this package lets ``jaxnets.load_state_dict`` (in the core, below io) read paths: it
installs :func:`~jaxnets.io.sources.open_source` as the core's file opener.
"""

from jaxnets.core.state_dict import set_file_opener
from jaxnets.io.model_file import LoadedModel, load, save, save_state_dict
from jaxnets.io.reader import Reader
from jaxnets.io.reader import open_file as open  # noqa: A001  (jaxnets.open, like builtins.open)
from jaxnets.io.sources import open_source

set_file_opener(open_source)

__all__ = ["LoadedModel", "Reader", "load", "open", "save", "save_state_dict"]
