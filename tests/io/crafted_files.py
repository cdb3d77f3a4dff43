"""Model files written by jaxnets' own writer from trees that need not fit their model.

``jaxnets.save`` refuses params that do not fit the model, so files that lie (a bias of the wrong
shape, a transposed weight, an optimizer state of another model) are made here with the same
byte writer (``jaxnets.io.format.write_file``, which computes every checksum) and header fields
as ``save`` writes, unchecked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jaxnets
from jaxnets.core.state_dict import _merge
from jaxnets.io import format as fmt
from jaxnets.io.model_file import tensor_sources


def write_model_file(
    path: Path,
    model: Any,
    params: Any,
    state: Any = None,
    *,
    opt_state: Any = None,
    optimizer: Any = None,
    **fields: Any,
) -> Path:
    """Writes ``params``/``state`` (jax-array leaves) under ``model``'s config, unchecked.

    ``model`` and ``optimizer`` are objects (stored with ``to_config``) or raw configs; extra
    keyword arguments replace header fields (``versions``, ``leaves``, ``trees``...).
    """

    def config(x: Any) -> Any:
        try:
            return jaxnets.to_config(x)
        except jaxnets.RegistryError:
            return x

    sources = tensor_sources(jaxnets.flatten(_merge(params, state)), "model")
    trees = {"params": jaxnets.tree_spec(params), "state": jaxnets.tree_spec(state)}
    if opt_state is not None:
        sources += tensor_sources(jaxnets.flatten(opt_state), "opt_state")
        trees["opt_state"] = jaxnets.tree_spec(opt_state)
    header = {
        "format": fmt.MAGIC,
        "kind": "model",
        "jaxnets_version": "test",
        "provenance": {},
        "model": config(model),
        "versions": {},
        "optimizer": None if optimizer is None else config(optimizer),
        "metadata": None,
        "trees": trees,
        **fields,
    }
    fmt.write_file(path, sources, header, fsync=False)
    return path
