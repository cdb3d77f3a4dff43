"""Files: one portable msgpack file for weights or a complete model (layout: docs/format.md).

* :func:`save` / :func:`load`: a complete model (config, params, buffers, optimizer, metadata);
* :func:`save_state_dict` / :func:`read_state_dict`: weights only;
* :func:`open`: a lazy reader (header only until a tensor is asked for).
"""

from jaxnets.io.model_file import LoadedModel, load, read_state_dict, save, save_state_dict
from jaxnets.io.reader import Reader
from jaxnets.io.reader import open_file as open  # noqa: A001  (jaxnets.open, like builtins.open)

__all__ = ["LoadedModel", "Reader", "load", "open", "read_state_dict", "save", "save_state_dict"]
