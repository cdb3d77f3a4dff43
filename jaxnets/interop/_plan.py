"""A model seen as PyTorch sees it: a list of layers, each a key prefix, a layout rule and arrays.

The flax and equinox front ends only find the layers (:class:`Layer`); everything else is here
and shared: the torch-layout state_dict (:func:`to_torch`) and the checked way back
(:func:`from_torch`), which goes through :func:`jaxnets.load_state_dict` so that a state_dict that
does not fit gets the same full report (every missing, unexpected, misshapen key) as anywhere else.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxnets.core.state_dict import DtypePolicy, load_state_dict
from jaxnets.core.tree import join_key, split_key
from jaxnets.errors import JaxnetsError
from jaxnets.interop._layouts import RULES, Rule

__all__ = ["Layer", "to_torch", "from_torch"]

_SAME = Rule(
    lambda v: {k: np.asarray(x) for k, x in v.items()},
    lambda t, like: {k: t[k] for k in like},
)


class Layer(NamedTuple):
    """One layer of a model, as PyTorch names it.

    Attributes:
      prefix: the path of the layer (``("features", 0)``); its entries are ``features.0.<name>``.
      kind: a key of :data:`jaxnets.interop._layouts.RULES`, or ``"same"`` for arrays whose
        layout is already PyTorch's (kept under their own names).
      vars: the layer's current arrays, named as the source library names them.
    """

    prefix: tuple[Hashable, ...]
    kind: str
    vars: dict[str, Any]


def _rule(kind: str) -> Rule:
    return _SAME if kind == "same" else RULES[kind]


def _keys(layers: Sequence[Layer]) -> list[tuple[int, str, str, Any]]:
    """(layer index, torch key, local torch name, array) for every entry, in order."""
    out = []
    for i, layer in enumerate(layers):
        for name, arr in _rule(layer.kind).to_torch(layer.vars).items():
            out.append((i, join_key([*layer.prefix, *name.split(".")]), name, arr))
    return out


def to_torch(layers: Sequence[Layer]) -> dict[str, np.ndarray]:
    """The PyTorch-layout state_dict of ``layers``: ``{"conv.weight": (out, in, kh, kw), ...}``.

    Raises:
      JaxnetsError: two layers give the same key.
    """
    sd: dict[str, np.ndarray] = {}
    for _, key, _, arr in _keys(layers):
        if key in sd:
            raise JaxnetsError(f"two entries of the model have the PyTorch key {key!r}; rename one.", path=key)
        sd[key] = arr
    return sd


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": x}`` -> ``{"a": {"b": x}}``: a template whose flattened keys are ``flat``'s."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = split_key(key)
        node = root
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return root


def from_torch(
    layers: Sequence[Layer], source: Any, *, strict: bool, dtypes: DtypePolicy
) -> list[dict[str, Any]]:
    """Each layer's new arrays (in its own library's layout) from a PyTorch-layout state_dict.

    Args:
      layers: the model's layers with their current arrays (their shapes and dtypes are the
        template; with ``strict=False`` their values are kept for missing entries).
      source: a flat state_dict (numpy, jax or torch values) or a jaxnets file path.
      strict, dtypes: as for :func:`jaxnets.load_state_dict`.

    Returns:
      ``[new vars of layers[0], ...]``; nothing is assigned anywhere.

    Raises:
      StateDictError: listing every missing, unexpected (when strict) and misshapen entry.
    """
    entries = _keys(layers)
    # The template holds what jax holds: torch's int64 num_batches_tracked is int32 without x64.
    template = {
        key: np.asarray(arr, dtype=jax.dtypes.canonicalize_dtype(np.asarray(arr).dtype))
        for _, key, _, arr in entries
    }
    loaded = load_state_dict(_nest(template), source, strict=strict, dtypes=dtypes)
    per_layer: list[dict[str, Any]] = [{} for _ in layers]
    for i, key, name, _ in entries:
        node = loaded
        for part in split_key(key):
            node = node[part]
        per_layer[i][name] = node
    return [_rule(layer.kind).from_torch(t, layer.vars) for layer, t in zip(layers, per_layer)]
