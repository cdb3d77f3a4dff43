"""How one training state is laid out inside an orbax step directory (see docs/checkpoints.md).

A step directory holds two orbax items:

* ``arrays`` — an orbax PyTree (``PyTreeSave``) of a *flat* dict: each large array under its
  jaxnets key (``params.fc1.weight``), and every small array packed into one flat buffer per dtype
  (``__group__.float32``). Orbax pays a fixed cost per leaf, so a 2,000-leaf tree of small arrays
  is saved as a handful of buffers instead (the 3x+ in docs/benchmarks.md).
* ``meta`` — JSON (``JsonSave``): the tree spec of ``{"params", "state", "opt_state", "rng"}``
  (:func:`jaxnets.core.tree.tree_spec`), and per leaf its kind, shape, dtype and where it lives;
  plus the model and optimizer configs, metrics and extras.

Typed PRNG keys are stored as their ``key_data`` (uint32) with the impl name, and rebuilt with
``jax.random.wrap_key_data``; Python scalars are stored in the JSON, so their type survives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.core.structure import LeafInfo, dtype_name, leaf_info
from jaxnets.core.tree import flatten, map_with_keys, tree_spec
from jaxnets.errors import CheckpointError

__all__ = [
    "FIELDS",
    "FORMAT",
    "GROUP_PREFIX",
    "VERSION",
    "Plan",
    "make_plan",
    "pack",
    "stored_infos",
    "unpack",
]

FIELDS = ("params", "state", "opt_state", "rng")
FORMAT = "jaxnets.checkpoint"
VERSION = 1
GROUP_PREFIX = "__group__."

# Kinds of leaves: "jax" (jax.Array), "key" (typed PRNG key array), "numpy" (np.ndarray),
# "npscalar" (np.generic), "py" (bool/int/float/str, value kept in the JSON).


# Per-dtype caches: these numpy/jax dtype queries cost ~50us each, a lot on 2,000 leaves.
_name = functools.lru_cache(maxsize=None)(dtype_name)


@functools.cache
def _is_key(dtype: Any) -> bool:
    return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))


def _kind(key: str, leaf: Any) -> str:
    if isinstance(leaf, jax.Array):
        return "key" if _is_key(leaf.dtype) else "jax"
    if isinstance(leaf, np.ndarray):
        return "numpy"
    if isinstance(leaf, np.generic):
        return "npscalar"
    if isinstance(leaf, (bool, int, float, str)):
        return "py"
    raise CheckpointError(
        f"{key or '<root>'}: cannot checkpoint a {type(leaf).__module__}.{type(leaf).__qualname__}; "
        "leaves must be jax/numpy arrays, PRNG keys or Python scalars (use extra= for other "
        "JSON-able data).",
        path=key,
    )


def _fully_addressable(x: Any, single_process: bool) -> bool:
    # Checking the sharding costs ~50us a leaf; with one process every array is addressable.
    return single_process or not isinstance(x, jax.Array) or x.is_fully_addressable


@dataclasses.dataclass(frozen=True)
class Plan:
    """The layout of one tree structure, reused while a training loop saves the same structure.

    Working it out costs ~0.1 s on 2,000 leaves (keys, tree spec, metadata); with the plan,
    ``save()`` only copies the data, which keeps the async stall small (docs/benchmarks.md).
    """

    signature: Any  # jax treedef + (type, shape, dtype) of each leaf
    keys: tuple[str, ...]  # in jax's leaf order
    kinds: tuple[str, ...]
    grouped: dict[str, list[int]]  # dtype -> leaf indices packed into that buffer
    single: list[int]  # leaf indices orbax stores on their own
    py: list[int]  # Python scalars, stored in the JSON
    meta: dict[str, Any]  # the JSON, py values from the save that made the plan


def _signature(record: Mapping[str, Any]) -> tuple[list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten(dict(record))
    sig = (
        treedef,
        tuple((type(x), getattr(x, "shape", None), getattr(x, "dtype", None)) for x in leaves),
    )
    return leaves, sig


def _data(kind: str, leaf: Any, *, copy: bool) -> Any:
    if kind == "key":
        return jax.random.key_data(leaf)
    if kind == "npscalar":
        return np.asarray(leaf)
    if kind == "numpy" and copy:
        return np.array(leaf, copy=True)  # the caller may change it while it is written
    return leaf


def _py_entry(entry: dict[str, Any], leaf: Any) -> None:
    if isinstance(leaf, float) and not math.isfinite(leaf):
        entry["value"] = repr(leaf)  # JSON has no nan/inf; float() reads these back
        entry["float"] = True
    else:
        entry["value"] = leaf
        entry.pop("float", None)


def make_plan(record: Mapping[str, Any], *, group_below: int) -> Plan:
    """Works out where every leaf of ``record`` goes (see :func:`pack`).

    Raises:
      CheckpointError: a leaf is of a type that cannot be checkpointed.
    """
    flat = flatten(dict(record))
    single_process = jax.process_count() == 1
    leaves: dict[str, dict[str, Any]] = {}
    small: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    alone: list[str] = []
    kinds: dict[str, str] = {}
    for key, leaf in flat.items():
        kind = kinds[key] = _kind(key, leaf)
        if kind == "py":
            entry: dict[str, Any] = {"kind": kind, "shape": [], "dtype": leaf_info(leaf).dtype}
            _py_entry(entry, leaf)
            leaves[key] = entry
            continue
        entry = {"kind": kind, "shape": [int(d) for d in leaf.shape], "dtype": _name(leaf.dtype)}
        leaves[key] = entry
        data = _data(kind, leaf, copy=False)
        if kind == "key":
            entry["impl"] = str(jax.random.key_impl(leaf))
        sizes[key] = math.prod(data.shape)
        if sizes[key] * data.dtype.itemsize < group_below and _fully_addressable(
            data, single_process
        ):
            small.setdefault(_name(data.dtype), []).append(key)
        else:
            alone.append(key)
    groups: dict[str, int] = {}
    for dt, members in small.items():
        offset = 0
        for key in members:
            leaves[key]["group"], leaves[key]["offset"] = dt, offset
            offset += sizes[key]
        groups[dt] = offset
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": tree_spec(dict(record)),
        "leaves": leaves,
        "groups": groups,
    }
    meta = check_json(meta, "the checkpoint structure")
    jax_leaves, sig = _signature(record)
    # The keys in jax's leaf order: the same tree with each leaf replaced by its key.
    order = jax.tree_util.tree_leaves(map_with_keys(lambda k, _: k, dict(record)))
    if len(order) != len(jax_leaves) or set(order) != set(flat):
        sig = None  # containers jax and jaxnets see differently: no reuse, always correct
        order = list(flat)
    index = {k: i for i, k in enumerate(order)}
    return Plan(
        signature=sig,
        keys=tuple(order),
        kinds=tuple(kinds[k] for k in order),
        grouped={dt: [index[k] for k in members] for dt, members in small.items()},
        single=[index[k] for k in alone],
        py=[index[k] for k in order if kinds[k] == "py"],
        meta=meta,
    )


def pack(
    record: Mapping[str, Any], *, group_below: int, plan: Plan | None = None
) -> tuple[dict[str, Any], dict[str, Any], Plan]:
    """Splits a training state into orbax arrays and JSON metadata.

    Args:
      record: ``{"params": ..., "state": ..., "opt_state": ..., "rng": ...}`` (values may be None).
      group_below: arrays smaller than this many bytes are packed into one buffer per dtype.
      plan: the plan of an earlier save; reused when the structure, shapes and dtypes are equal.

    Returns:
      ``(arrays, meta, plan)``: the flat dict of arrays orbax saves, the JSON-able description,
      and the plan to pass next time.

    Raises:
      CheckpointError: a leaf is of a type that cannot be checkpointed.
    """
    jax_leaves, sig = _signature(record)
    if plan is None or plan.signature is None or plan.signature != sig:
        plan = make_plan(record, group_below=group_below)
        if plan.signature is None:
            jax_leaves = list(flatten(dict(record)).values())
    arrays: dict[str, Any] = {}
    for dt, idxs in plan.grouped.items():
        # One device-to-host transfer for all of them, then one concatenation into a fresh
        # buffer that only this checkpoint owns: orbax writes it in the background without its
        # defensive copy (see manager._arrays_handler).
        host = jax.device_get([_data(plan.kinds[i], jax_leaves[i], copy=False) for i in idxs])
        arrays[GROUP_PREFIX + dt] = np.concatenate([np.ravel(h) for h in host])
    for i in plan.single:
        arrays[plan.keys[i]] = _data(plan.kinds[i], jax_leaves[i], copy=True)
    meta = dict(plan.meta)
    if plan.py:
        meta["leaves"] = dict(meta["leaves"])
        for i in plan.py:
            entry = meta["leaves"][plan.keys[i]] = dict(meta["leaves"][plan.keys[i]])
            _py_entry(entry, jax_leaves[i])
    return arrays, meta, plan


def check_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON data (round-tripped), or a CheckpointError naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{what} must be JSON-able (numbers, strings, lists, str-keyed dicts): {e}."
        ) from e


def stored_infos(meta: Mapping[str, Any]) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of every stored leaf, as :func:`jaxnets.core.structure.compare` takes."""
    return {k: LeafInfo(tuple(e["shape"]), e["dtype"]) for k, e in meta["leaves"].items()}


def needed_arrays(meta: Mapping[str, Any], keys: list[str]) -> list[str]:
    """The orbax ``arrays`` entries that hold the given leaves."""
    out: dict[str, None] = {}
    for k in keys:
        e = meta["leaves"][k]
        if e["kind"] == "py":
            continue
        out[GROUP_PREFIX + e["group"] if "group" in e else k] = None
    return list(out)


def unpack(
    meta: Mapping[str, Any],
    arrays: Mapping[str, Any],
    keys: list[str],
    place: Callable[[str, LeafInfo], Any],
) -> dict[str, Any]:
    """Rebuilds the leaves ``keys`` from restored orbax arrays.

    Args:
      meta: the stored metadata.
      arrays: the restored orbax ``arrays`` item (individual arrays already placed by orbax; group
        buffers as numpy).
      keys: the leaves wanted.
      place: ``place(key, info)`` -> the ``jax.sharding.Sharding`` of a jax leaf.

    Returns:
      ``{key: leaf}``.
    """
    out: dict[str, Any] = {}
    to_put: list[tuple[str, np.ndarray, Any, dict[str, Any]]] = []
    for k in keys:
        e = meta["leaves"][k]
        kind = e["kind"]
        if kind == "py":
            out[k] = float(e["value"]) if e.get("float") else e["value"]
            continue
        if "group" in e:
            buf = arrays[GROUP_PREFIX + e["group"]]
            shape = tuple(e["shape"])
            n = int(np.prod(shape, dtype=np.int64))
            data: Any = None
            if kind == "key":
                size = _key_size(e)
                data = np.asarray(buf[e["offset"] : e["offset"] + n * size]).reshape(
                    shape + (size,)
                )
            else:
                data = np.asarray(buf[e["offset"] : e["offset"] + n]).reshape(shape)
            if kind in ("jax", "key"):
                to_put.append((k, data, place(k, LeafInfo(tuple(e["shape"]), e["dtype"])), e))
            else:
                out[k] = data.copy() if kind == "numpy" else data[()]
            continue
        data = arrays[k]
        if kind == "key":
            out[k] = jax.random.wrap_key_data(data, impl=e["impl"])
        elif kind == "npscalar":
            out[k] = np.asarray(data)[()]
        else:
            out[k] = data
    if to_put:
        # One batched transfer for all the small leaves.
        placed = jax.device_put([d for _, d, _, _ in to_put], [s for _, _, s, _ in to_put])
        for (k, _, _, e), arr in zip(to_put, placed):
            out[k] = jax.random.wrap_key_data(arr, impl=e["impl"]) if e["kind"] == "key" else arr
    return out


def _key_size(entry: Mapping[str, Any]) -> int:
    """Number of uint32 words per key of ``entry``'s impl (2 for threefry, 4 for rbg)."""
    return int(jax.random.key_data(jax.random.key(0, impl=entry["impl"])).shape[-1])
