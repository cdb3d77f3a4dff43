"""``flax.nnx`` modules <-> PyTorch-layout state_dicts.

Keys follow the nnx attribute names as PyTorch's follow module attributes: ``self.conv1 =
nnx.Conv(...)`` gives ``conv1.weight``, an ``nnx.List`` or list of layers ``blocks.0.weight``, and
an ``nnx.Sequential`` numbers its layers directly (``0.weight``), as ``torch.nn.Sequential`` does.
The state_dict holds the ``nnx.Param`` and ``nnx.BatchStat`` variables (subclasses included):
RNG state, caches and intermediates are not weights. Layouts: :mod:`jaxnets.interop._layouts`.
Variables held directly by your own modules keep their names and layout; a flax layer with no
rule here (``ConvTranspose``, ``LinearGeneral``, ``RMSNorm``...) is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from jaxnets.core.state_dict import DtypePolicy
from jaxnets.errors import JaxnetsError
from jaxnets.interop._plan import Layer, from_torch, to_torch

__all__ = ["nnx_state_dict", "load_nnx_state_dict"]

_KINDS = {
    "Linear": "linear",
    "Conv": "conv",
    "BatchNorm": "batchnorm",
    "LayerNorm": "layernorm",
    "Embed": "embed",
    "MultiHeadAttention": "mha",
}


def _nnx() -> Any:
    try:
        from flax import nnx
    except ImportError as e:  # pragma: no cover - exercised where flax is absent
        raise ImportError(
            "jaxnets.interop's flax functions need flax: pip install 'jaxnets[flax]'"
        ) from e
    return nnx


def _value(var: Any) -> Any:
    return var.get_value() if hasattr(var, "get_value") else var.value


def _set(var: Any, value: Any) -> None:
    if hasattr(var, "set_value"):
        var.set_value(value)
    else:  # flax < 0.12.1 has no set_value
        var.value = value


def _kind(node: Any) -> str | None:
    """The layout rule of a flax layer, None for a container or a user's own module."""
    cls = type(node)
    for base in cls.__mro__:  # a subclass of nnx.Linear is still laid out as a Linear
        if base.__module__.startswith("flax.nnx") and base.__name__ in _KINDS:
            return _KINDS[base.__name__]
    return None


def _from_flax(node: Any) -> bool:
    return type(node).__module__.startswith("flax.")


def _check_mha(path: str, v: dict[str, Any]) -> None:
    """torch's MultiheadAttention packs q, k, v as (3E, E): every projection must be (E, H, D), H*D = E."""
    e, h, d = v["query"]["kernel"].shape
    shapes = {p: v[p]["kernel"].shape for p in ("query", "key", "value")}
    bad = set(v) - {"query", "key", "value", "out"}
    if h * d != e or any(s != (e, h, d) for s in shapes.values()) or v["out"]["kernel"].shape != (h, d, e) or bad:
        raise JaxnetsError(
            f"{path}: this MultiHeadAttention has no torch.nn.MultiheadAttention layout (q/k/v "
            f"kernels {shapes}, out {v['out']['kernel'].shape}, extra {sorted(bad)}); torch needs "
            "in_features == qkv_features == out_features == in_kv_features, num_kv_heads == "
            "num_heads and normalize_qk=False.",
            path=path,
        )


def _definition_order(nodes: dict[tuple[Hashable, ...], Any], path: tuple[Hashable, ...]) -> list[int]:
    """Where each component of ``path`` was defined in its parent (iter_graph sorts by name)."""
    key = []
    for i, c in enumerate(path):
        attrs = getattr(nodes.get(path[:i]), "__dict__", None)
        key.append(list(attrs).index(c) if isinstance(attrs, dict) and c in attrs else c if isinstance(c, int) else 0)
    return key


def _layers(module: Any) -> tuple[list[Layer], list[Any]]:
    """The module's layers (torch prefixes, rules, current arrays) and their variables, aligned."""
    nnx = _nnx()
    nodes = dict(nnx.iter_graph(module))
    kept = (nnx.Param, nnx.BatchStat)
    # Variables directly in these flax containers are a user's own (nnx.List([nnx.Param(...)])).
    containers = tuple(getattr(nnx, n) for n in ("List", "Dict", "Sequential") if hasattr(nnx, n))

    def torch_path(path: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        # nnx.Sequential(a, b) holds .layers[i]; torch.nn.Sequential's keys are "i.".
        return tuple(
            c for i, c in enumerate(path)
            if not (c == "layers" and isinstance(nodes.get(path[:i]), nnx.Sequential))
        )

    owners = {p: k for p, n in nodes.items() if isinstance(n, nnx.Module) and (k := _kind(n))}
    layers: dict[tuple[Hashable, ...], tuple[str, dict[str, Any], dict[str, Any]]] = {}
    unsupported: set[str] = set()
    for path, var in nodes.items():
        if not isinstance(var, kept):
            continue
        owner = next((path[:i] for i in range(len(path)) if path[:i] in owners), None)
        if owner is None:
            parent = nodes.get(path[:-1])
            if _from_flax(parent) and not isinstance(parent, containers):
                unsupported.add(f"{'.'.join(map(str, path[:-1])) or '(root)'} ({type(parent).__name__})")
                continue
            owner, kind = path[:-1], "same"
        else:
            kind = owners[owner]
        _, arrays, owned = layers.setdefault(owner, (kind, {}, {}))
        node_a, node_v = arrays, owned
        for c in path[len(owner) : -1]:  # attention's query/key/value/out sub-layers
            node_a, node_v = node_a.setdefault(c, {}), node_v.setdefault(c, {})
        node_a[path[-1]], node_v[path[-1]] = _value(var), var
    if unsupported:
        raise JaxnetsError(
            "flax layers with no PyTorch layout rule in jaxnets.interop: "
            + ", ".join(sorted(unsupported))
            + f". Supported: {', '.join(_KINDS)}.",
        )
    out, variables = [], []
    for owner in sorted(layers, key=lambda p: _definition_order(nodes, p)):
        kind, arrays, vs = layers[owner]
        if kind == "mha":
            _check_mha(".".join(map(str, owner)), arrays)
        if kind == "same":  # torch's order: own parameters, then buffers, each as defined
            attrs = list(getattr(nodes.get(owner), "__dict__", {}))
            rank = {n: (isinstance(vs[n], nnx.BatchStat), attrs.index(n) if n in attrs else n) for n in arrays}
            arrays = {n: arrays[n] for n in sorted(arrays, key=rank.__getitem__)}
        out.append(Layer(torch_path(owner), kind, arrays))
        variables.append(vs)
    return out, variables


def nnx_state_dict(module: Any) -> dict[str, Any]:
    """A ``flax.nnx`` module's weights as a PyTorch state_dict (PyTorch's keys and layouts).

    Args:
      module: an ``nnx.Module``; e.g. with ``self.conv = nnx.Conv(3, 8, (3, 3))`` and
        ``self.bn = nnx.BatchNorm(8)``.

    Returns:
      ``{"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "bn.weight": ..., "bn.running_mean":
      ..., "bn.num_batches_tracked": 0, ...}`` as numpy arrays, ready for
      ``torch_model.load_state_dict({k: torch.from_numpy(v.copy()) ...}, strict=True)``,
      :func:`jaxnets.save_state_dict`, safetensors or ``jaxnets convert``.

    Raises:
      JaxnetsError: a flax layer has no PyTorch layout here, or an attention layer cannot be
        packed as torch's ``in_proj_weight``.
      ImportError: flax is not installed.
    """
    return to_torch(_layers(module)[0])


def load_nnx_state_dict(
    module: Any, source: Any, *, strict: bool = True, dtypes: DtypePolicy = "cast"
) -> None:
    """Loads a PyTorch-layout state_dict into a ``flax.nnx`` module, in place (as torch does).

    Every key, shape and dtype is checked first, against the module's own PyTorch-layout state
    (:func:`nnx_state_dict`); nothing is assigned unless all of it fits.

    Args:
      module: the ``nnx.Module`` to fill.
      source: a flat state_dict with PyTorch's keys and layouts (torch tensors, numpy or jax
        arrays; e.g. ``torch_model.state_dict()``) or the path of a jaxnets file.
      strict, dtypes: as for :func:`jaxnets.load_state_dict`. ``num_batches_tracked`` is
        expected (torch always writes it) and dropped: flax keeps no batch count.

    Raises:
      StateDictError: every missing, unexpected (when strict) and misshapen key at once.
      JaxnetsError: the module has a flax layer with no PyTorch layout here.
    """
    layers, variables = _layers(module)
    new = from_torch(layers, source, strict=strict, dtypes=dtypes)

    def assign(vs: dict[str, Any], arrays: dict[str, Any]) -> None:
        for name, var in vs.items():
            if isinstance(var, dict):
                assign(var, arrays[name])
            else:
                _set(var, arrays[name])

    for vs, arrays in zip(variables, new):
        assign(vs, arrays)
