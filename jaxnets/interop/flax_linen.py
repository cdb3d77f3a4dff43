"""``flax.linen`` variables <-> PyTorch-layout state_dicts, given the module and an example input.

A linen variables dict does not say which layer made each array (a ``Dense`` kernel and a
``DenseGeneral`` kernel look alike), so the module is run once abstractly (``jax.eval_shape``,
no arithmetic) on the example arguments and each layer it calls is recorded with its path.
Keys are the module paths (``Conv_0.weight``, or your ``setup`` attribute names); an
``nn.Sequential``'s ``layers_i`` become ``i`` as in ``torch.nn.Sequential``. Only the ``params``
and ``batch_stats`` collections are weights. Layouts: :mod:`jaxnets.interop._layouts`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import jax

from jaxnets.core.state_dict import DtypePolicy
from jaxnets.errors import JaxnetsError
from jaxnets.interop._plan import Layer, from_torch, to_torch

__all__ = ["linen_state_dict", "load_linen_state_dict"]

_KINDS = {
    "Dense": "linear",
    "Conv": "conv",
    "BatchNorm": "batchnorm",
    "LayerNorm": "layernorm",
    "Embed": "embed",
    "MultiHeadDotProductAttention": "mha",
}
_COLLECTIONS = ("params", "batch_stats")
Where = tuple[str, tuple[str, ...]]  # (collection, path of the array)


def _linen() -> Any:
    try:
        import flax.linen as nn
    except ImportError as e:  # pragma: no cover - exercised where flax is absent
        raise ImportError("jaxnets.interop's flax functions need flax: pip install 'jaxnets[flax]'") from e
    return nn


def _kind(module: Any) -> str | None:
    for base in type(module).__mro__:
        if base.__module__.startswith("flax.linen") and base.__name__ in _KINDS:
            return _KINDS[base.__name__]
    return None


def _modules(module: Any, variables: Mapping[str, Any], args: tuple, kwargs: dict) -> dict[tuple[str, ...], Any]:
    """Every submodule the module calls on the example arguments, by path (nothing computed)."""
    nn = _linen()
    seen: dict[tuple[str, ...], Any] = {}

    def record(next_fun: Any, a: Any, kw: Any, context: Any) -> Any:
        m = context.module
        if m.scope is not None:
            seen.setdefault(tuple(m.scope.path), m)
        return next_fun(*a, **kw)

    def run(v: Any) -> Any:
        with nn.intercept_methods(record):
            return module.apply(v, *args, mutable=True, **kwargs)

    jax.eval_shape(run, variables)
    return seen


def _leaves(variables: Mapping[str, Any]) -> list[tuple[Where, Any]]:
    out: list[tuple[Where, Any]] = []

    def go(col: str, node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                go(col, v, (*path, k))
        else:
            out.append(((col, path), node))

    for col in _COLLECTIONS:
        if col in variables:
            go(col, variables[col], ())
    return out


def _layers(module: Any, variables: Mapping[str, Any], args: tuple, kwargs: dict) -> tuple[list[Layer], list[dict[str, Any]]]:
    """The layers (torch prefixes, rules, arrays) and, aligned, where each array lives."""
    nn = _linen()
    mods = _modules(module, variables, args, kwargs)
    owners = {p: k for p, m in mods.items() if (k := _kind(m))}

    def torch_path(path: tuple[str, ...]) -> tuple[Hashable, ...]:
        out: list[Hashable] = []
        for i, c in enumerate(path):
            if isinstance(mods.get(path[:i]), nn.Sequential) and c.startswith("layers_"):
                out.append(int(c[len("layers_") :]))
            else:
                out.append(c)
        return tuple(out)

    layers: dict[tuple[str, ...], tuple[str, dict[str, Any], dict[str, Any]]] = {}
    unknown: set[str] = set()
    for where, leaf in _leaves(variables):
        path = where[1]
        owner = next((path[:i] for i in range(len(path)) if path[:i] in owners), None)
        if owner is not None:
            kind = owners[owner]
        else:
            parent = mods.get(path[:-1])
            if parent is None or type(parent).__module__.startswith("flax."):
                unknown.add(f"{'/'.join(path)} ({type(parent).__name__ if parent is not None else 'not called'})")
                continue
            owner, kind = path[:-1], "same"
        _, arrays, places = layers.setdefault(owner, (kind, {}, {}))
        for c in path[len(owner) : -1]:
            arrays, places = arrays.setdefault(c, {}), places.setdefault(c, {})
        arrays[path[-1]], places[path[-1]] = leaf, where
    if unknown:
        raise JaxnetsError(
            "variables with no PyTorch layout rule in jaxnets.interop (a flax layer without one, "
            "or not called on the example input): " + ", ".join(sorted(unknown))
            + f". Supported: {', '.join(_KINDS)}."
        )
    out: list[Layer] = []
    placed: list[dict[str, Any]] = []
    called = {p: i for i, p in enumerate(mods)}  # torch's order is definition order: use call order
    for owner in sorted(layers, key=lambda p: called.get(p, len(called))):
        kind, arrays, places = layers[owner]
        out.append(Layer(torch_path(owner), kind, arrays))
        placed.append(places)
    return out, placed


def linen_state_dict(module: Any, variables: Mapping[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A ``flax.linen`` model's variables as a PyTorch state_dict (PyTorch's keys and layouts).

    Args:
      module: the linen ``nn.Module``.
      variables: its variables, ``{"params": ..., "batch_stats": ...}`` as ``module.init`` gives.
      *args, **kwargs: an example call (``x`` of the input shape; only shapes are used), so that
        every layer is seen with its type.

    Returns:
      ``{"Conv_0.weight": (out, in, kh, kw), ...}`` as numpy arrays.

    Raises:
      JaxnetsError: a flax layer has no PyTorch layout here, or a variable's layer was not called.
      ImportError: flax is not installed.
    """
    return to_torch(_layers(module, variables, args, kwargs)[0])


def load_linen_state_dict(
    module: Any,
    variables: Mapping[str, Any],
    source: Any,
    *args: Any,
    strict: bool = True,
    dtypes: DtypePolicy = "cast",
    **kwargs: Any,
) -> dict[str, Any]:
    """New linen variables with the entries of a PyTorch-layout state_dict, checked first.

    Args:
      module, variables, *args, **kwargs: as for :func:`linen_state_dict`; ``variables`` is the
        template (and, with ``strict=False``, the values of missing entries). It is not modified.
      source: a flat state_dict with PyTorch's keys and layouts, or a jaxnets file path.
      strict, dtypes: as for :func:`jaxnets.load_state_dict`.

    Returns:
      ``{"params": ..., "batch_stats": ...}``: plain nested dicts; other collections as given.

    Raises:
      StateDictError: every missing, unexpected (when strict) and misshapen key at once.
    """
    layers, where = _layers(module, variables, args, kwargs)
    new = from_torch(layers, source, strict=strict, dtypes=dtypes)

    def copy(node: Any) -> Any:
        return {k: copy(v) for k, v in node.items()} if isinstance(node, Mapping) else node

    out = {col: copy(v) for col, v in variables.items()}

    def put(places: dict[str, Any], arrays: dict[str, Any]) -> None:
        for name, place in places.items():
            if isinstance(place, dict):
                put(place, arrays[name])
                continue
            col, path = place
            node = out[col]
            for c in path[:-1]:
                node = node[c]
            node[path[-1]] = arrays[name]

    for places, arrays in zip(where, new):
        put(places, arrays)
    return out
