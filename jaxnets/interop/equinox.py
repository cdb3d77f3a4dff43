"""equinox modules <-> PyTorch-layout state_dicts.

equinox already stores ``Linear``, ``Conv``, ``LayerNorm`` and ``Embedding`` weights in PyTorch's
layouts, and an equinox module is a pytree, so keys are its attribute paths (``features.0.weight``;
an ``eqx.nn.Sequential``'s ``layers`` are numbered directly, as ``torch.nn.Sequential`` does).
Two things differ from PyTorch and are converted: a conv bias is ``(out, 1, ..., 1)`` here and
``(out,)`` there, and ``BatchNorm``'s running statistics live in an ``eqx.nn.State`` (pass it as
``state``). Other equinox layers (``ConvTranspose``, ``MultiheadAttention``, ``GroupNorm``...) are
an error, never a guess; arrays held by your own modules keep their names and layout.
Without torch in the picture, ``jaxnets.state_dict(module)`` / ``jaxnets.load_state_dict(module,
sd)`` work on any equinox module as they do on any pytree (see docs/compatibility.md).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from jaxnets.core.state_dict import DtypePolicy
from jaxnets.errors import JaxnetsError
from jaxnets.interop._plan import Layer, from_torch, to_torch

__all__ = ["eqx_state_dict", "load_eqx_state_dict"]

_KINDS = {"Linear": "same", "Conv": "eqx_conv", "LayerNorm": "same", "Embedding": "same", "BatchNorm": "eqx_batchnorm"}


def _eqx() -> Any:
    try:
        import equinox as eqx
    except ImportError as e:  # pragma: no cover - exercised where equinox is absent
        raise ImportError("jaxnets.interop's equinox functions need equinox: pip install 'jaxnets[equinox]'") from e
    return eqx


def _component(entry: Any) -> Hashable:
    if isinstance(entry, GetAttrKey):
        return entry.name
    if isinstance(entry, SequenceKey):
        return entry.idx
    if isinstance(entry, DictKey):
        return entry.key
    raise JaxnetsError(f"unsupported pytree path entry {entry!r} in an equinox module")


def _kind(node: Any) -> str | None:
    for base in type(node).__mro__:
        if base.__module__.startswith("equinox") and base.__name__ in _KINDS:
            return _KINDS[base.__name__]
    return None


def _layers(module: Any, state: Any) -> tuple[list[Layer], list[dict[str, Any]], Any, list[Any]]:
    """(layers, where each array is: a leaf index or a BatchNorm's state, treedef, leaves)."""
    eqx = _eqx()
    flat, treedef = jax.tree_util.tree_flatten_with_path(module)
    nodes: dict[tuple[Hashable, ...], Any] = {(): module}

    def node_at(path: tuple[Hashable, ...]) -> Any:
        if path not in nodes:
            parent, c = node_at(path[:-1]), path[-1]
            nodes[path] = parent[c] if isinstance(c, int) or isinstance(parent, dict) else getattr(parent, str(c))
        return nodes[path]

    def owner_of(path: tuple[Hashable, ...]) -> tuple[tuple[Hashable, ...], str | None]:
        """The outermost layer on the path (or the direct parent), or the equinox layer we cannot map."""
        for j in range(len(path)):
            node = node_at(path[:j])
            if _kind(node):
                return path[:j], None
            if type(node).__module__.startswith("equinox") and not isinstance(node, eqx.nn.Sequential):
                return path[:j], f"{'.'.join(map(str, path[:j])) or '(root)'} ({type(node).__name__})"
        return path[:-1], None

    layers: dict[tuple[Hashable, ...], tuple[str, dict[str, Any], dict[str, Any]]] = {}
    unsupported: set[str] = set()
    for i, (keypath, leaf) in enumerate(flat):
        if not eqx.is_array(leaf):
            continue
        path = tuple(_component(e) for e in keypath)
        owner, bad = owner_of(path)
        if bad:
            unsupported.add(bad)
            continue
        kind = _kind(node_at(owner)) or "same"
        _, arrays, where = layers.setdefault(owner, (kind, {}, {}))
        name = ".".join(map(str, path[len(owner) :]))
        arrays[name], where[name] = leaf, i
    for owner, (kind, arrays, where) in layers.items():
        if kind != "eqx_batchnorm":
            continue
        bn = node_at(owner)
        if getattr(bn, "ema_state_index", None) is None or state is None:
            raise JaxnetsError(
                f"{'.'.join(map(str, owner))}: a BatchNorm's running statistics are in an "
                "eqx.nn.State: pass it as state= (and only mode='ema' keeps torch's running "
                "mean and variance).",
                path=".".join(map(str, owner)),
            )
        arrays["running_mean"], arrays["running_var"] = state.get(bn.ema_state_index)
        where["running_mean"] = where["running_var"] = bn
    if unsupported:
        raise JaxnetsError(
            "equinox layers with no PyTorch layout rule in jaxnets.interop: "
            + ", ".join(sorted(unsupported)) + f". Supported: {', '.join(_KINDS)}."
        )

    def torch_path(path: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        return tuple(c for j, c in enumerate(path)
                     if not (c == "layers" and isinstance(node_at(path[:j]), eqx.nn.Sequential)))

    out = [Layer(torch_path(p), kind, arrays) for p, (kind, arrays, _) in layers.items()]
    return out, [where for _, _, where in layers.values()], treedef, [leaf for _, leaf in flat]


def eqx_state_dict(module: Any, state: Any = None) -> dict[str, Any]:
    """An equinox module's weights as a PyTorch state_dict (PyTorch's keys and layouts).

    Args:
      module: an ``eqx.Module``.
      state: its ``eqx.nn.State`` when it has ``BatchNorm`` layers (``eqx.nn.make_with_state``).

    Returns:
      ``{"0.weight": ..., "1.running_mean": ..., "1.num_batches_tracked": 0, ...}`` as numpy arrays.

    Raises:
      JaxnetsError: an equinox layer has no PyTorch layout here, or BatchNorm without ``state``.
      ImportError: equinox is not installed.
    """
    return to_torch(_layers(module, state)[0])


def load_eqx_state_dict(
    module: Any, source: Any, state: Any = None, *, strict: bool = True, dtypes: DtypePolicy = "cast"
) -> Any:
    """A copy of an equinox module (and state) holding a PyTorch-layout state_dict, checked first.

    Args:
      module: the template ``eqx.Module`` (not modified: equinox modules are immutable).
      source: a flat state_dict with PyTorch's keys and layouts, or a jaxnets file path.
      state: the module's ``eqx.nn.State`` when it has ``BatchNorm`` layers.
      strict, dtypes: as for :func:`jaxnets.load_state_dict`.

    Returns:
      The new module, or ``(module, state)`` when ``state`` is given.

    Raises:
      StateDictError: every missing, unexpected (when strict) and misshapen key at once.
    """
    layers, where, treedef, leaves = _layers(module, state)
    new = from_torch(layers, source, strict=strict, dtypes=dtypes)
    leaves = list(leaves)
    for places, arrays in zip(where, new):
        for name, place in places.items():
            if isinstance(place, int):
                leaves[place] = arrays[name]
        bns = {id(p): p for p in places.values() if not isinstance(p, int)}
        for bn in bns.values():
            state = state.set(bn.ema_state_index, (arrays["running_mean"], arrays["running_var"]))
            state = state.set(bn.ema_first_time_index, jax.numpy.array(False))  # stats now exist
    out = jax.tree_util.tree_unflatten(treedef, leaves)
    return out if state is None else (out, state)
