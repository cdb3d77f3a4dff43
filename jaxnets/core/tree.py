"""The one flattener: any pytree <-> flat PyTorch-style keys (``features.0.weight``).

Every part of jaxnets that walks a pytree (state_dicts, model files, checkpoints, the CLI) goes
through this module. Its rules:

* dicts (str or int keys), lists, tuples, ``None``, NamedTuples (by field name), dataclasses and
  any node registered with ``jax.tree_util`` are containers; everything else is a leaf.
* A leaf's key joins its path components with ``.``. A component containing ``.`` or ``\\`` is
  escaped with ``\\`` (``{"a.b": x}`` -> ``a\\.b``), so distinct paths never share a key.
* Plain dicts are walked in insertion order (a freshly initialised model is in PyTorch's order);
  ``None`` and empty containers have no leaves.
* :func:`tree_spec` describes the containers as JSON so that :func:`tree_from_spec` rebuilds the
  exact tree (tuples stay tuples, int keys stay ints, optax states come back as their NamedTuple
  types) from a flat dict alone, as model files and checkpoints need.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, cast

import jax
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

from jaxnets.core import registry
from jaxnets.errors import FileFormatError, JaxnetsError, RegistryError

__all__ = [
    "SEP",
    "escape",
    "join_key",
    "split_key",
    "flatten",
    "map_with_keys",
    "tree_spec",
    "tree_from_spec",
    "spec_keys",
]

SEP = "."
_ESC = "\\"
# Leaves known without asking jax (ShapeDtypeStruct: the leaves of eval_shape templates, which the
# checks walk on every save and load; jax's own flatten costs ~20 us a leaf to say so).
_ATOMIC = (
    jax.Array,
    np.ndarray,
    np.generic,
    jax.ShapeDtypeStruct,
    int,
    float,
    complex,
    bool,
    str,
    bytes,
)

# A node's children as (path component, child) plus a function rebuilding the node from children.
_Children = tuple[list[tuple[Hashable, Any]], Callable[[list[Any]], Any]]


def escape(component: Hashable) -> str:
    """One path component as it appears in a key: ints as digits, ``.`` and ``\\`` escaped."""
    if isinstance(component, bool) or not isinstance(component, (str, int)):
        raise JaxnetsError(
            f"pytree key {component!r} ({type(component).__name__}) cannot be part of a "
            "state_dict key; use str or int dict keys."
        )
    text = str(component)
    return text.replace(_ESC, _ESC + _ESC).replace(SEP, _ESC + SEP)


def join_key(components: tuple[Hashable, ...] | list[Hashable]) -> str:
    """``("features", 0, "weight")`` -> ``"features.0.weight"``."""
    return SEP.join(escape(c) for c in components)


def split_key(key: str) -> list[str]:
    """The inverse of :func:`join_key` up to types: ``"a\\.b.0"`` -> ``["a.b", "0"]``."""
    parts: list[str] = []
    cur: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == _ESC:
            cur.append(next(chars, ""))
        elif ch == SEP:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _children(node: Any) -> _Children | None:
    """The children of a container node, or None when ``node`` is a leaf."""
    if isinstance(node, _ATOMIC):
        return None
    if node is None:
        return [], lambda _: None
    t = type(node)
    if t is dict:
        keys = list(node)
        return list(node.items()), lambda cs: dict(zip(keys, cs))
    if t is list:
        return list(enumerate(node)), list
    if t is tuple:
        return list(enumerate(node)), tuple
    if _is_namedtuple(node):
        return list(zip(node._fields, node)), lambda cs: t(*cs)
    # Anything else registered with jax (dataclasses, flax structs, custom nodes): one level.
    entries, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    treedef = cast(Any, treedef)
    if treedef.num_leaves == 1 and len(entries) == 1 and entries[0][1] is node:
        return None
    out: list[tuple[Hashable, Any]] = []
    for path, child in entries:
        (entry,) = path
        if isinstance(entry, DictKey):
            out.append((entry.key, child))
        elif isinstance(entry, SequenceKey):
            out.append((entry.idx, child))
        elif isinstance(entry, GetAttrKey):
            out.append((entry.name, child))
        elif isinstance(entry, FlattenedIndexKey):
            out.append((entry.key, child))
        else:  # pragma: no cover - future jax key kinds
            out.append((str(entry), child))
    return out, treedef.unflatten


def _walk(
    tree: Any, prefix: tuple[Hashable, ...] = ()
) -> Iterator[tuple[tuple[Hashable, ...], Any]]:
    kids = _children(tree)
    if kids is None:
        yield prefix, tree
        return
    for comp, child in kids[0]:
        yield from _walk(child, prefix + (comp,))


def flatten(tree: Any) -> dict[str, Any]:
    """Flattens any pytree into ``{key: leaf}`` with PyTorch-style keys (see module docstring).

    Args:
      tree: any pytree; e.g. ``{"fc1": {"weight": w}}`` or an optax state.

    Returns:
      A dict from keys like ``"fc1.weight"`` or ``"0.mu.fc1.weight"`` to the leaves, unchanged.
      A bare leaf is returned under the key ``""``.

    Raises:
      JaxnetsError: a key is not str/int, or two paths give the same key (e.g. ``{1: a, "1": b}``).
    """
    flat: dict[str, Any] = {}
    for path, leaf in _walk(tree):
        key = join_key(path)
        if key in flat:
            raise JaxnetsError(
                f"two entries of the pytree have the same key {key!r}; rename one.", path=key
            )
        flat[key] = leaf
    return flat


def map_with_keys(fn: Callable[[str, Any], Any], tree: Any) -> Any:
    """Rebuilds ``tree`` with each leaf replaced by ``fn(key, leaf)``; containers keep their types."""

    def go(node: Any, prefix: tuple[Hashable, ...]) -> Any:
        kids = _children(node)
        if kids is None:
            return fn(join_key(prefix), node)
        entries, rebuild = kids
        return rebuild([go(child, prefix + (comp,)) for comp, child in entries])

    return go(tree, ())


# --- structure specs ------------------------------------------------------------------------------
# Spec nodes (JSON-able; see docs/format.md):
#   {"t": "leaf"} | {"t": "none"} | {"t": "dict", "k": [keys], "c": [specs]}
#   {"t": "list", "c": [...]} | {"t": "tuple", "c": [...]}
#   {"t": "class", "name": registered name, "k": [field names], "c": [...]}
_MAX_SPEC_DEPTH = 256


def tree_spec(tree: Any) -> dict[str, Any]:
    """A JSON-able description of ``tree``'s containers, for :func:`tree_from_spec`.

    Plain containers, registered classes and optax's states are described so that they rebuild
    from the spec alone. Any other pytree node (an ``nnx.State``, an equinox module, a flax
    struct) is an *opaque* node: its type name and children are recorded, so its leaves are
    stored and checked by key, but it rebuilds only into a template of that type
    (``jaxnets.load_state_dict(template, path)``, ``restore(like=...)``).

    Raises:
      RegistryError: an unregistered NamedTuple (``@jaxnets.register`` it: its fields rebuild it).
    """

    def go(node: Any) -> dict[str, Any]:
        kids = _children(node)
        if kids is None:
            return {"t": "leaf"}
        if node is None:
            return {"t": "none"}
        entries, _ = kids
        children = [go(c) for _, c in entries]
        t = type(node)
        if t is dict:
            keys = [k for k, _ in entries]
            for k in keys:
                escape(k)  # validates the key type
            return {"t": "dict", "k": keys, "c": children}
        if t in (list, tuple):
            return {"t": t.__name__, "c": children}
        keys = [k for k, _ in entries]
        try:
            name = registry.registered_name(t)
        except RegistryError:
            if _is_namedtuple(node):
                raise
            for k in keys:
                escape(k)
            return {
                "t": "opaque",
                "type": f"{t.__module__}.{t.__qualname__}",
                "k": keys,
                "c": children,
            }
        return {"t": "class", "name": name, "k": keys, "c": children}

    return go(tree)


def spec_keys(spec: Mapping[str, Any]) -> list[str]:
    """The flat keys of the leaves a spec describes, in order."""
    keys: list[str] = []

    def go(node: Mapping[str, Any], prefix: tuple[Hashable, ...], depth: int) -> None:
        if depth > _MAX_SPEC_DEPTH:
            raise FileFormatError(f"tree structure nested deeper than {_MAX_SPEC_DEPTH} levels.")
        t = node.get("t")
        if t == "leaf":
            keys.append(join_key(prefix))
        elif t == "none":
            return
        elif t in ("dict", "class", "opaque"):
            for k, c in zip(node["k"], node["c"], strict=True):
                go(c, prefix + (k,), depth + 1)
        elif t in ("list", "tuple"):
            for i, c in enumerate(node["c"]):
                go(c, prefix + (i,), depth + 1)
        else:
            raise FileFormatError(f"unknown tree node type {t!r} in a stored structure.")

    try:
        go(spec, (), 0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FileFormatError(f"malformed stored tree structure ({e}).") from e
    return keys


def tree_from_spec(spec: Mapping[str, Any], flat: Mapping[str, Any]) -> Any:
    """Rebuilds the tree ``spec`` describes, taking each leaf from ``flat`` by key.

    The caller checks ``flat`` against ``spec_keys(spec)`` first (see :mod:`jaxnets.core.structure`);
    here a missing key is a KeyError.

    Raises:
      RegistryError: a stored class name is not registered, or the tree holds an opaque node
        (a type that rebuilds only into a template; see :func:`tree_spec`).
      FileFormatError: the spec is malformed.
    """

    def go(node: Mapping[str, Any], prefix: tuple[Hashable, ...]) -> Any:
        t = node["t"]
        if t == "leaf":
            return flat[join_key(prefix)]
        if t == "none":
            return None
        if t == "dict":
            return {k: go(c, prefix + (k,)) for k, c in zip(node["k"], node["c"], strict=True)}
        if t in ("list", "tuple"):
            items = [go(c, prefix + (i,)) for i, c in enumerate(node["c"])]
            return items if t == "list" else tuple(items)
        if t == "class":
            cls = registry.lookup(node["name"]).cls
            values = {k: go(c, prefix + (k,)) for k, c in zip(node["k"], node["c"], strict=True)}
            try:
                return cls(**values)
            except TypeError as e:
                raise FileFormatError(
                    f"cannot rebuild {node['name']} at {join_key(prefix)!r}: {e}"
                ) from e
        if t == "opaque":
            at = f" at {join_key(prefix)!r}" if prefix else ""
            raise RegistryError(
                f"the tree was saved from a {str(node.get('type'))[:120]}{at}, which jaxnets stores "
                "by key but cannot rebuild without its code. Load it into a tree of that type: "
                "jaxnets.load_state_dict(template, path) for a file, restore(like={...}) for a "
                "checkpoint (e.g. template = nnx.state(model), or your equinox module)."
            )
        raise FileFormatError(f"unknown tree node type {t!r} in a stored structure.")

    spec_keys(spec)  # validates shape and depth before building anything
    return go(spec, ())
