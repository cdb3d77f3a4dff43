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

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.core.structure import LeafInfo, dtype_name, leaf_info
from jaxnets.core.tree import flatten, tree_spec
from jaxnets.errors import CheckpointError

__all__ = ["FIELDS", "FORMAT", "VERSION", "GROUP_PREFIX", "pack", "stored_infos", "unpack"]

FIELDS = ("params", "state", "opt_state", "rng")
FORMAT = "jaxnets.checkpoint"
VERSION = 1
GROUP_PREFIX = "__group__."

# Kinds of leaves: "jax" (jax.Array), "key" (typed PRNG key array), "numpy" (np.ndarray),
# "npscalar" (np.generic), "py" (bool/int/float/str, value kept in the JSON).


def _kind(key: str, leaf: Any) -> str:
    if isinstance(leaf, jax.Array):
        return "key" if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else "jax"
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


_name = functools.lru_cache(maxsize=None)(dtype_name)


def _fully_addressable(x: Any) -> bool:
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def pack(record: Mapping[str, Any], *, group_below: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits a training state into orbax arrays and JSON metadata.

    Args:
      record: ``{"params": ..., "state": ..., "opt_state": ..., "rng": ...}`` (values may be None).
      group_below: arrays smaller than this many bytes are packed into one buffer per dtype.

    Returns:
      ``(arrays, meta)``: the flat dict of arrays orbax saves, and the JSON-able description.

    Raises:
      CheckpointError: a leaf is of a type that cannot be checkpointed.
    """
    flat = flatten(dict(record))
    leaves: dict[str, dict[str, Any]] = {}
    arrays: dict[str, Any] = {}
    small: dict[str, list[tuple[str, Any]]] = {}
    for key, leaf in flat.items():
        kind = _kind(key, leaf)
        if kind == "py":
            info = leaf_info(leaf)
            entry: dict[str, Any] = {"kind": kind, "shape": [], "dtype": info.dtype}
        else:  # per-dtype cache: dtype_name costs ~50us, a lot on 2,000 leaves
            entry = {
                "kind": kind,
                "shape": [int(d) for d in leaf.shape],
                "dtype": _name(leaf.dtype),
            }
        leaves[key] = entry
        if kind == "py":
            if isinstance(leaf, float) and not math.isfinite(leaf):
                entry["value"] = repr(leaf)  # JSON has no nan/inf; float() reads these back
                entry["float"] = True
            else:
                entry["value"] = leaf
            continue
        data = leaf
        if kind == "key":
            entry["impl"] = str(jax.random.key_impl(leaf))
            data = jax.random.key_data(leaf)
        elif kind == "npscalar":
            data = np.asarray(leaf)
        nbytes = int(np.prod(data.shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
        if nbytes < group_below and _fully_addressable(data):
            small.setdefault(dtype_name(data.dtype), []).append((key, data))
        else:
            arrays[key] = data
    groups: dict[str, int] = {}
    for dt, members in small.items():
        # One device-to-host transfer for all of them, then one concatenation.
        host = jax.device_get([d for _, d in members])
        offset = 0
        for (key, _), h in zip(members, host):
            leaves[key]["group"] = dt
            leaves[key]["offset"] = offset
            offset += int(np.size(h))
        buf = np.concatenate([np.ravel(h) for h in host])
        # A host jax.Array, not numpy: orbax writes numpy leaves before save() returns and jax
        # arrays in the background (the async stall in docs/benchmarks.md). 64-bit buffers stay
        # numpy when jax would truncate them (x64 disabled).
        if jax.dtypes.canonicalize_dtype(buf.dtype) == buf.dtype:
            buf = jax.device_put(buf, jax.devices("cpu")[0])
        arrays[GROUP_PREFIX + dt] = buf
        groups[dt] = offset
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": tree_spec(dict(record)),
        "leaves": leaves,
        "groups": groups,
    }
    return arrays, meta


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
