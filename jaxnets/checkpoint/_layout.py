"""How one training state is laid out inside an orbax step directory (see docs/checkpoints.md).

A step directory holds two orbax items:

* ``arrays`` — an orbax PyTree (``PyTreeSave``) of a *flat* dict: each large array under its
  jaxnets key (``params.fc1.weight``), and every small array packed into one flat buffer per dtype
  (``__group__.float32``). Orbax pays a fixed cost per leaf, so a 2,000-leaf tree of small arrays
  is saved as a handful of buffers instead (docs/benchmarks.md).
* ``meta`` — JSON (``JsonSave``, see :mod:`jaxnets.checkpoint.meta`): the tree spec of
  ``{"params", "state", "opt_state", "rng"}`` (:func:`jaxnets.core.tree.tree_spec`), and per leaf
  its kind, shape, dtype and where it lives; the checksums; the model and optimizer configs,
  metrics and extras.

A save runs in two parts. :func:`snapshot` runs before ``save()`` returns and does only what
must happen then: it takes each array's data out of the caller's reach (on the CPU a read-only
view that pins the buffer, so a donating ``jit`` copies instead of reusing it; on accelerators
the device-to-host copy, all transfers started before any is waited on; numpy leaves are
copied). :func:`finish` runs in the background: packing, checksums, the JSON.

Typed PRNG keys are stored as their ``key_data`` (uint32) with the impl name, and rebuilt with
``jax.random.wrap_key_data``; Python scalars are stored in the JSON, so their type survives.

In a multi-process job, global arrays and per-process values go where
:mod:`jaxnets.checkpoint._spread` says (rows per process, blocks hashed by their owners), and a
step is format 3; everything else is as above.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checkpoint import _spread
from jaxnets.checkpoint._integrity import array_checksum, checksums
from jaxnets.checkpoint._processes import Processes
from jaxnets.checkpoint._spread import Spread
from jaxnets.checkpoint.meta import (
    FORMAT,
    GROUP_PREFIX,
    PGROUP_PREFIX,
    json_checksum,
    key_size,
    seal,
)
from jaxnets.core.placement import Placer
from jaxnets.core.structure import LeafInfo, dtype_name, leaf_info
from jaxnets.core.tree import flatten, map_with_keys, tree_spec

__all__ = ["Plan", "Snapshot", "check_json", "finish", "local_hashes", "make_plan", "snapshot", "unpack"]

# dtypes jax arrays export through the buffer protocol (bfloat16, float8, int4 are not).
_BUFFER_DTYPES = frozenset(
    np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
              np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128)
)


@functools.cache  # a jax dtype query costs ~50 us; 2,000 leaves share a few dtypes
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
    raise TypeError(
        f"{key or '<root>'}: cannot checkpoint a {type(leaf).__module__}.{type(leaf).__qualname__}; "
        "leaves must be jax/numpy arrays, PRNG keys or Python scalars (use extra= for other "
        "JSON-able data)."
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """The layout of one tree structure, reused while a training loop saves the same structure.

    Working it out costs ~0.1 s on 2,000 leaves (keys, tree spec, metadata); with the plan,
    ``save()`` only takes the data, which keeps the async stall small (docs/benchmarks.md).
    """

    signature: Any  # jax treedef + (type, shape, dtype) of each leaf
    keys: tuple[str, ...]  # in jax's leaf order
    kinds: tuple[str, ...]
    grouped: dict[str, list[int]]  # group dtype -> leaf indices packed into that buffer
    single: list[int]  # leaf indices orbax stores on their own
    on_device: list[int]  # large global leaves (several processes): copied on the devices
    accelerated: list[int]  # jax/key leaves on an accelerator: their host copies start first
    exported: list[int]  # single-device CPU jax leaves in a buffer-protocol dtype (cheapest pin)
    py: list[int]  # Python scalars, stored in the JSON
    meta: dict[str, Any]  # the JSON, py values from the save that made the plan
    per_process: tuple[str, ...] = ()  # save(per_process=...) the plan was made for
    spread: Spread | None = None  # several processes: rows, pieces, per-process leaves
    fingerprint: str = ""  # hash of the layout (keys, kinds, shapes, dtypes, where each goes)
    nbytes: int = 0  # the array data of a step, all processes together (a progress bar's total)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What :func:`snapshot` took: each leaf's data, out of the caller's reach.

    Attributes:
      plan: the layout.
      data: per leaf (in ``plan.keys`` order): a host numpy array, a jax array on device for
        ``plan.on_device`` leaves, the host copies of the blocks this process owns of a small
        global leaf (several processes), or the Python value of a ``py`` leaf.
    """

    plan: Plan
    data: list[Any]


def _signature(record: Mapping[str, Any]) -> tuple[list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten(dict(record))
    sig = (
        treedef,
        tuple((type(x), getattr(x, "shape", None), getattr(x, "dtype", None)) for x in leaves),
    )
    return leaves, sig


def _py_entry(entry: dict[str, Any], leaf: Any) -> None:
    if isinstance(leaf, float) and not math.isfinite(leaf):
        entry["value"] = repr(leaf)  # JSON has no nan/inf; float() reads these back
        entry["float"] = True
    else:
        entry["value"] = leaf
        entry.pop("float", None)


def _on_accelerator(x: jax.Array) -> bool:
    return any(d.platform != "cpu" for d in x.devices())


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def make_plan(
    record: Mapping[str, Any], *, group_below: int, per_process: tuple[str, ...] = ()
) -> Plan:
    """Works out where every leaf of ``record`` goes (see :func:`snapshot`).

    Args:
      record: the four trees.
      group_below: arrays smaller than this many bytes are packed.
      per_process: key prefixes (``"rng"``, ``"state.counter"``) of leaves stored per process
        in a multi-process job (:mod:`jaxnets.checkpoint._spread`); each must name a leaf.

    Raises:
      TypeError: a leaf is of a type that cannot be checkpointed (names its key).
      ValueError: ``per_process`` names no leaf, a global array or a Python scalar.
    """
    flat = flatten(dict(record))
    processes = jax.process_count()
    single_process = processes == 1
    unknown = [p for p in per_process if not any(_under(k, (p,)) for k in flat)]
    if unknown:
        raise ValueError(
            f"save(per_process=...): {', '.join(map(repr, unknown))} names no saved leaf; give "
            "key prefixes of what is saved (e.g. 'rng', 'state.counter')."
        )
    mine: set[str] = set()  # per-process leaves
    glob: set[str] = set()  # arrays spread over several processes
    leaves: dict[str, dict[str, Any]] = {}
    small: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    alone: list[str] = []
    kinds: dict[str, str] = {}
    nbytes = 0
    on_device: set[str] = set()
    accelerated: set[str] = set()
    exported: set[str] = set()
    for key, leaf in flat.items():
        kind = kinds[key] = _kind(key, leaf)
        if not single_process and _under(key, per_process):
            if kind == "py":
                raise ValueError(
                    f"{key}: a Python scalar cannot be saved per process (it is stored in the "
                    f"metadata, once); make it a numpy array (np.asarray({key.rsplit('.', 1)[-1]})) "
                    "or leave it out of per_process=."
                )
            if kind in ("jax", "key") and not leaf.is_fully_addressable:
                raise ValueError(
                    f"{key}: per_process= names a global array (spread over several processes' "
                    "devices): it has one value, stored once. Name only process-local values "
                    "(numpy arrays, PRNG keys and jax arrays on this process's devices)."
                )
            mine.add(key)
        if kind == "py":
            entry: dict[str, Any] = {"kind": kind, "shape": [], "dtype": leaf_info(leaf).dtype}
            _py_entry(entry, leaf)
            leaves[key] = entry
            continue
        entry = {"kind": kind, "shape": [int(d) for d in leaf.shape], "dtype": dtype_name(leaf.dtype)}
        leaves[key] = entry
        data_dtype = np.dtype(np.uint32) if kind == "key" else np.dtype(leaf.dtype)
        sizes[key] = math.prod(leaf.shape)
        if kind == "key":
            entry["impl"] = str(jax.random.key_impl(leaf))
            sizes[key] *= key_size(entry["impl"])
        nbytes += sizes[key] * data_dtype.itemsize * (processes if key in mine else 1)
        small_enough = sizes[key] * data_dtype.itemsize < group_below
        # With one process every array is addressable (checking costs ~50us a leaf).
        if kind in ("jax", "key") and not single_process and not leaf.is_fully_addressable:
            glob.add(key)  # packed as pieces in rows when small, else by orbax: _spread
            if not small_enough:
                on_device.add(key)
                alone.append(key)
            continue
        if kind in ("jax", "key") and _on_accelerator(leaf):
            accelerated.add(key)
        elif kind == "jax" and data_dtype in _BUFFER_DTYPES and len(leaf.devices()) == 1:
            exported.add(key)  # (the buffer protocol is for single-device arrays only)
        if key in mine:
            continue  # in this process's row: _spread
        if small_enough:
            small.setdefault(dtype_name(data_dtype), []).append(key)
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
        "version": 2,  # format 3 only where it is needed, so that jaxnets 0.2 reads the rest
        "spec": tree_spec(dict(record)),
        "leaves": leaves,
        "groups": groups,  # lengths; finish() adds the checksums
    }
    jax_leaves, sig = _signature(record)
    # The keys in jax's leaf order: the same tree with each leaf replaced by its key.
    order = jax.tree_util.tree_leaves(map_with_keys(lambda k, _: k, dict(record)))
    if len(order) != len(jax_leaves) or set(order) != set(flat):
        sig = None  # containers jax and jaxnets see differently: no reuse, always correct
        order = list(flat)
    index = {k: i for i, k in enumerate(order)}
    spread = None
    if not single_process:
        spread, pgroups = _spread.make_spread(
            order,
            [flat[k] for k in order],
            leaves,
            packed=[index[k] for k in glob if k not in on_device],
            alone=[index[k] for k in on_device],
            per_process=[index[k] for k in mine],
            once=[index[k] for k in order if k not in glob and k not in mine],
        )
        meta.update(version=3, processes=spread.processes, pgroups=pgroups)
    meta = check_json(meta, "the checkpoint structure")
    return Plan(
        signature=sig,
        keys=tuple(order),
        kinds=tuple(kinds[k] for k in order),
        grouped={dt: [index[k] for k in members] for dt, members in small.items()},
        single=[index[k] for k in alone],
        on_device=[index[k] for k in on_device],
        accelerated=[index[k] for k in accelerated],
        exported=[index[k] for k in exported],
        py=[index[k] for k in order if kinds[k] == "py"],
        meta=meta,
        per_process=per_process,
        spread=spread,
        fingerprint="" if spread is None else _layout_checksum(meta),
        nbytes=nbytes,
    )


def _layout_checksum(meta: Mapping[str, Any]) -> str:
    """Hash of the layout: every leaf's entry but Python scalars' values (compared as values)."""
    leaves = {k: {f: v for f, v in e.items() if f not in ("value", "float")} for k, e in meta["leaves"].items()}
    return json_checksum({**meta, "leaves": leaves})


def layout_of(plan: Plan) -> dict[str, str]:
    """``{key: its entry}`` (no values), to name the keys whose layout differs across processes."""
    return {
        k: json_checksum({f: v for f, v in e.items() if f not in ("value", "float")})
        for k, e in plan.meta["leaves"].items()
    }


def snapshot(
    record: Mapping[str, Any],
    *,
    group_below: int,
    plan: Plan | None = None,
    per_process: tuple[str, ...] = (),
) -> tuple[Snapshot, Plan]:
    """Takes every leaf's data out of the caller's reach; the part of a save that blocks.

    After it returns, nothing the caller does to its arrays changes what is saved: numpy leaves
    are copied; a jax array's host data is either a read-only view of its buffer (CPU: the view
    pins the buffer, so a later donating ``jit`` copies instead of reusing it, and jax arrays are
    otherwise immutable) or a host copy (accelerators).

    Args:
      record: ``{"params": ..., "state": ..., "opt_state": ..., "rng": ...}`` (values may be None).
      group_below: arrays smaller than this many bytes are packed into one buffer per dtype.
      plan: the plan of an earlier save; reused when the structure, shapes and dtypes are equal.
      per_process: see :func:`make_plan`.

    Returns:
      ``(snapshot, plan)``: pass the snapshot to :func:`finish`, the plan to the next call.

    Raises:
      TypeError: a leaf cannot be checkpointed.
      ValueError: an array was deleted (e.g. donated) before ``save()``.
    """
    jax_leaves, sig = _signature(record)
    if plan is None or plan.signature is None or plan.signature != sig or plan.per_process != per_process:
        plan = make_plan(record, group_below=group_below, per_process=per_process)
        if plan.signature is None:
            jax_leaves = list(flatten(dict(record)).values())
    kinds = plan.kinds
    # py leaves are immutable: kept as they are; every array is replaced by its data below.
    data: list[Any] = list(jax_leaves)
    on_device = set(plan.on_device)
    for i in plan.on_device:  # other processes hold the rest: a copy on the devices
        x = jax_leaves[i]
        data[i] = jax.random.key_data(x) if kinds[i] == "key" else jnp.array(x, copy=True)
    pieced: list[int] = []  # small global leaves: this process's pieces, as host copies
    if plan.spread is not None:
        pieced = [i for i in plan.spread.pieces if i not in on_device]
        for i in pieced:
            data[i] = _spread.take_pieces(plan.spread, i, jax_leaves[i], kinds[i] == "key")
        on_device.update(pieced)
    for i, k in enumerate(kinds):
        if k == "key" and i not in on_device:
            data[i] = jax.random.key_data(jax_leaves[i])  # a fresh uint32 array
        elif k == "numpy":
            data[i] = np.array(jax_leaves[i], copy=True)  # the caller may change it in place
        elif k == "npscalar":
            data[i] = np.asarray(jax_leaves[i])
    for i in plan.accelerated:  # start every device-to-host copy before waiting on one
        data[i].copy_to_host_async()
    # The pin: on the CPU a view of each buffer (a memoryview where the buffer protocol carries
    # the dtype, ~30% cheaper than np.asarray); on accelerators np.asarray is the host copy.
    exported = plan.exported
    skip = on_device.union(exported)
    host = [i for i, k in enumerate(kinds) if k in ("jax", "key") and i not in skip]
    collecting = gc.isenabled()
    gc.disable()  # ~20% of this loop on 20,000 leaves is the collector, finding no garbage
    try:
        export: Any = memoryview  # jax arrays have the buffer protocol; typeshed does not know
        for i, mv in zip(exported, map(export, [data[i] for i in exported])):
            data[i] = mv
        for i, arr in zip(host, map(np.asarray, [data[i] for i in host])):
            data[i] = arr
        for i in pieced:
            data[i] = [np.asarray(d) for d in data[i]]
    except (RuntimeError, BufferError) as e:  # jax: the array was deleted
        bad = next((i for i in host + exported if isinstance(data[i], jax.Array) and data[i].is_deleted()), None)
        if bad is None:
            raise
        raise ValueError(
            f"{plan.keys[bad]}: this array was deleted (donated to a jit?) before save(); save "
            "the arrays before passing them to a function that donates them."
        ) from e
    finally:
        if collecting:
            gc.enable()
    return Snapshot(plan, data), plan


def _packed(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """One flat buffer of ``parts``, 64-byte aligned (so jax can hold it without a copy)."""
    n = sum(p.size for p in parts)
    raw = np.empty(n * dtype.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + n * dtype.itemsize].view(dtype)
    if parts:
        np.concatenate([p.reshape(-1) for p in parts], out=out)
    return out


def finish(
    snap: Snapshot,
    fields: Mapping[str, Any],
    *,
    procs: Processes | None = None,
    exchange: int = -1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Packs, hashes and describes a snapshot: the background part of a save.

    In a multi-process job every process packs and hashes what it stores, then sends its hashes
    to process 0 (exchange ``exchange`` of ``procs``), whose metadata is the one written.

    Args:
      snap: from :func:`snapshot`.
      fields: the rest of the metadata (step, configs, metrics, extra), already JSON.
      procs, exchange: the job's processes and the exchange reserved for this save (several
        processes only).

    Returns:
      ``(arrays, meta)``: the flat dict of arrays orbax saves, and the sealed metadata (complete
      on process 0 only, the one that writes it).

    Raises:
      CheckpointError: (process 0) another process failed or did not send its hashes in time.
    """
    plan, data = snap.plan, list(snap.data)
    spread = plan.spread
    try:
        for i in plan.exported:
            data[i] = np.asarray(data[i])  # the pinned buffer as an array, no copy
        arrays: dict[str, Any] = {}
        for dt, idxs in plan.grouped.items():
            arrays[GROUP_PREFIX + dt] = _packed([data[i] for i in idxs], np.dtype(jnp.dtype(dt)))
        for i in plan.single:
            arrays[plan.keys[i]] = data[i]
        writer = spread is None or spread.index == 0  # the others' metadata is not written
        host = {name: a for name, a in arrays.items() if isinstance(a, np.ndarray)}
        sums = checksums(host) if writer else {}
        payload: dict[str, Any] = {}
        if spread is not None:
            rows, row_sums = _spread.row_arrays(spread, data)
            arrays.update(rows)
            shards = {plan.keys[i]: _spread.shard_hashes(spread, i, data[i]) for i in plan.on_device}
            payload = {"rows": row_sums, "shards": shards}
    except BaseException as e:
        if procs is not None and procs.multi:
            procs.gather(exchange, "save", e)  # process 0 hears of it now, not at its timeout
        raise
    parts = procs.gather(exchange, "save", payload) if procs is not None and procs.multi else None
    meta = dict(plan.meta)
    leaves = meta["leaves"] = dict(meta["leaves"])
    for i in plan.single:
        k = plan.keys[i]
        leaves[k] = {**leaves[k], "xxh3": sums.get(k)}  # (several processes: shards, below)
        if spread is None and plan.kinds[i] in ("jax", "key") and isinstance(data[i], np.ndarray):
            arrays[k] = _as_jax(data[i])  # orbax's chunked format for jax arrays: fast restores
    for i in plan.py:
        entry = leaves[plan.keys[i]] = dict(leaves[plan.keys[i]])
        _py_entry(entry, data[i])
    meta["groups"] = {
        dt: {"length": n, "xxh3": sums.get(GROUP_PREFIX + dt)} for dt, n in plan.meta["groups"].items()
    }
    if spread is not None:
        meta["pgroups"] = {dt: dict(g) for dt, g in plan.meta["pgroups"].items()}
        if parts is not None:
            _spread.gathered_meta(spread, plan.keys, leaves, meta["pgroups"], parts)
    meta.update(fields)
    if plan.py:  # the rest was checked when the plan was made
        check_json([leaves[plan.keys[i]] for i in plan.py], "Python scalar leaves")
    return arrays, seal(meta) if writer else meta


def local_hashes(snap: Snapshot) -> dict[str, str]:
    """``{key: hash}`` of every process-local leaf stored once (several processes: they must be
    equal on every process, which the manager checks before anything is written)."""
    plan = snap.plan
    if plan.spread is None:
        return {}
    out = {}
    for i in plan.spread.once:
        x = snap.data[i]
        if plan.kinds[i] == "py":
            out[plan.keys[i]] = json_checksum([type(x).__name__, repr(x)])
        else:
            out[plan.keys[i]] = array_checksum(np.asarray(x))
    return out


def _as_jax(a: np.ndarray) -> Any:
    """A host array as a CPU jax array: without a copy when aligned, as views of jax buffers are."""
    try:
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # no CPU backend (JAX_PLATFORMS=cuda): orbax writes numpy too
        return a
    return jax.device_put(a, cpu, may_alias=True)


def check_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON data (round-tripped), or a TypeError naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{what} must be JSON-able (numbers, strings, lists, str-keyed dicts; no NaN): {e}."
        ) from e


def unpack(
    meta: Mapping[str, Any],
    arrays: Mapping[str, Any],
    keys: list[str],
    place: Placer,
    *,
    step_dir: str = "",
) -> dict[str, Any]:
    """Rebuilds the leaves ``keys`` from restored orbax arrays.

    Args:
      meta: the stored metadata, checked (:func:`jaxnets.checkpoint.meta.check_meta`).
      arrays: the restored orbax ``arrays`` item, checked against ``meta``
        (:func:`jaxnets.checkpoint.meta.check_arrays`): individual arrays already placed by
        orbax; group buffers as numpy.
      keys: the leaves wanted.
      place: where the jax leaves go (a per-process leaf always to this process's devices).
      step_dir: named in errors.

    Returns:
      ``{key: leaf}``.

    Raises:
      CheckpointError: a per-process leaf, in a job of another size than the one that saved it.
    """
    out: dict[str, Any] = {}
    to_put: dict[str, np.ndarray] = {}
    local: set[str] = set()  # per-process values: placed on this process's devices only
    rows = {n[len(PGROUP_PREFIX) :]: a for n, a in arrays.items() if n.startswith(PGROUP_PREFIX)}
    for k in keys:
        e = meta["leaves"][k]
        kind = e["kind"]
        if kind == "py":
            out[k] = float(e["value"]) if e.get("float") else e["value"]
            continue
        if "group" in e or "pgroup" in e:
            if "pgroup" in e:
                data = _spread.assemble_leaf(k, e, rows, step_dir=step_dir)
                if "offsets" in e:
                    local.add(k)
            else:
                buf = arrays[GROUP_PREFIX + e["group"]]
                shape = tuple(e["shape"])
                if kind == "key":
                    shape += (key_size(e["impl"]),)
                start = e["offset"]
                data = np.asarray(buf[start : start + math.prod(shape)]).reshape(shape)
            if kind in ("jax", "key"):
                to_put[k] = data
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
        # One batched transfer for all the small leaves; keys are placed by their stored info.
        infos = {k: LeafInfo(tuple(meta["leaves"][k]["shape"]), meta["leaves"][k]["dtype"]) for k in to_put}
        placed = place.put(to_put, infos=infos, local=local)
        for k, arr in placed.items():
            e = meta["leaves"][k]
            out[k] = jax.random.wrap_key_data(arr, impl=e["impl"]) if e["kind"] == "key" else arr
    return out
