"""Model files: ``save``/``load`` a complete model, ``save_state_dict`` weights only.

A complete model file holds the model's config (registered class names + hyperparameters, see
:mod:`jaxnets.core.registry`), its params and buffers as a state_dict, optionally the optimizer's
config and state, user metadata, and the version of every registered class in the model so that
files written by older layer versions are migrated on load (docs/custom_layers.md). The byte
layout is :mod:`jaxnets.io.format` (docs/format.md). Nothing on the load path imports, unpickles
or evaluates anything named in the file.
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib.metadata
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core import registry
from jaxnets.core.model import is_model
from jaxnets.core.state_dict import _merge, model_order, to_numpy
from jaxnets.core.structure import LeafInfo, compare, leaf_info
from jaxnets.core.tree import (
    _children,
    flatten,
    map_with_keys,
    spec_keys,
    tree_from_spec,
    tree_spec,
)
from jaxnets.errors import FileFormatError, JaxnetsError, RegistryError, StateDictError
from jaxnets.io import format as fmt
from jaxnets.io.reader import Reader

__all__ = [
    "LoadedModel",
    "save",
    "load",
    "save_state_dict",
    "tensor_sources",
    "provenance",
    "package_version",
]

DtypePolicy: TypeAlias = "str | np.dtype | Mapping[str, Any] | None"
Placement: TypeAlias = "str | jax.Device | None"


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` returns.

    Attributes:
      model: the model spec rebuilt from its stored config (None for a weights-only file).
      params, state: the model's parameters and buffers (jax arrays), in their stored structure.
      opt_state: the optimizer state (optax's own NamedTuple types), or None.
      optimizer: the optimizer rebuilt from its stored config, or None.
      metadata: the stored metadata (decoded), or None.
      path: the file. format_version, provenance: as stored.
    """

    model: Any
    params: Any
    state: Any
    opt_state: Any = None
    optimizer: Any = None
    metadata: Any = None
    path: str = ""
    format_version: int = fmt.FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=dict)


# --- saving ---------------------------------------------------------------------------------------
def package_version() -> str:
    """jaxnets' version from the installed package's metadata (``"0+unknown"`` when not installed)."""
    try:
        return importlib.metadata.version("jaxnets")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def provenance() -> dict[str, Any]:
    """Who writes a file: versions of jaxnets, jax, numpy, Python, and the UTC date."""
    return {
        "jaxnets": package_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def tensor_sources(flat: Mapping[str, Any], group: str) -> list[fmt.TensorSource]:
    """One :class:`~jaxnets.io.format.TensorSource` per leaf of a flat dict; nothing is copied yet.

    Raises:
      JaxnetsError: a leaf's dtype cannot be stored (naming the key).
    """
    out = []
    bad = []
    for key, value in flat.items():
        if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            impl = str(jax.random.key_impl(value))
            data = jax.random.key_data(value)
            out.append(
                fmt.TensorSource(key, group, "uint32", tuple(data.shape), _getter_key(value), impl)
            )
            continue
        if (
            type(value) is np.ndarray
        ):  # the common case, without leaf_info's generality (2000 leaves)
            info = LeafInfo(value.shape, _dtype_name(value.dtype))
        else:
            info = leaf_info(value)
        if info.dtype not in fmt._dtypes():
            bad.append(f"  {key}: dtype {info.dtype}")
            continue
        out.append(fmt.TensorSource(key, group, info.dtype, info.shape, _getter(value, info.dtype)))
    if bad:
        raise JaxnetsError(
            "cannot store these entries (unsupported dtype):\n" + "\n".join(bad),
            path=bad[0].split(":")[0].strip(),
        )
    return out


_DTYPE_NAMES: dict[np.dtype, str] = {}


def _dtype_name(dtype: np.dtype) -> str:
    # np.dtype.name costs ~10 us (it walks numpy's type hierarchy); 2000 leaves share a few dtypes.
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES.setdefault(dtype, dtype.name)
    return name


def _getter(value: Any, dtype: str) -> Callable[[], np.ndarray]:
    # Converted one leaf at a time while streaming, so a tree on a device is never copied to the
    # host all at once.
    return lambda: np.asarray(to_numpy(value), dtype=fmt.storage_dtype(dtype), order="C")


def _getter_key(value: jax.Array) -> Callable[[], np.ndarray]:
    return lambda: np.asarray(jax.random.key_data(value), order="C")


def _flat_weights(params: Any, state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat state_dict, tree specs) of params/state given as pytrees or as flat state_dicts."""
    if (
        isinstance(params, Mapping)
        and state is None
        and all(_children(v) is None for v in params.values())
    ):
        return {
            str(k): v for k, v in params.items()
        }, {}  # already a flat state_dict: keys as given
    flat = flatten(_merge(params, state))
    return flat, {"params": tree_spec(params), "state": tree_spec(state)}


def _module_versions(model: Any) -> dict[str, list[Any]]:
    """``{module path: [registered name, version]}`` for the model and every registered child."""
    out: dict[str, list[Any]] = {}
    for path, m in model.named_modules() if is_model(model) else [("", model)]:
        try:
            entry = registry.registry_entry(type(m))
        except RegistryError:
            continue
        out[path] = [entry.name, entry.version]
    return out


def save(
    path: str | os.PathLike[str],
    model: Any,
    params: Any,
    state: Any = None,
    *,
    opt_state: Any = None,
    optimizer: Any = None,
    metadata: Any = None,
    fsync: bool = True,
) -> None:
    """Saves a complete model: config, params, buffers, optionally optimizer and its state.

    The file loads with :func:`load` in a process that never imported the code that built the
    model (built-in layers; custom ones need their module imported and ``@jaxnets.register``).

    Args:
      path: the destination, replaced atomically (a failed save leaves the old file intact).
      model: a registered model (every ``jaxnets.nn`` layer, or ``@jaxnets.register`` classes).
      params, state: the model's parameters and buffers (pytrees of arrays).
      opt_state: the optimizer state (e.g. optax's), stored as a pytree.
      optimizer: a registered optimizer config (``jaxnets.optim.adam(...)``), stored by config.
      metadata: plain data (numbers, strings, lists, str-keyed dicts, small numpy arrays) or
        registered objects (e.g. a preprocessor with mean/std).
      fsync: flush to disk before the rename (default True).

    Raises:
      RegistryError: the model, optimizer or something in metadata is not registered.
      JaxnetsError: a leaf cannot be stored (unsupported dtype, non-str/int key).
    """
    model_cfg = registry.to_config(model, path="model")
    opt_cfg = None if optimizer is None else registry.to_config(optimizer, path="optimizer")
    meta_cfg = None if metadata is None else registry.to_config(metadata, path="metadata")
    flat = flatten(_merge(params, state))
    if is_model(model):
        order = {k: i for i, k in enumerate(model_order(model))}
        flat = dict(sorted(flat.items(), key=lambda kv: order.get(kv[0], len(order))))
    trees: dict[str, Any] = {"params": tree_spec(params), "state": tree_spec(state)}
    sources = tensor_sources(flat, "model")
    if opt_state is not None:
        trees["opt_state"] = tree_spec(opt_state)
        sources += tensor_sources(flatten(opt_state), "opt_state")
    fields = {
        "format": fmt.MAGIC,
        "kind": "model",
        "jaxnets_version": provenance()["jaxnets"],
        "provenance": provenance(),
        "model": model_cfg,
        "versions": _module_versions(model),
        "optimizer": opt_cfg,
        "metadata": meta_cfg,
        "trees": trees,
    }
    fmt.write_file(path, sources, fields, fsync=fsync)


def save_state_dict(
    path: str | os.PathLike[str],
    params: Any,
    state: Any = None,
    *,
    metadata: Any = None,
    fsync: bool = True,
) -> None:
    """Saves weights only: a flat state_dict, or params (and buffers) as any pytree.

    Args:
      path: the destination, replaced atomically.
      params: a flat state_dict (``{"fc1.weight": array}``; numpy, jax or torch values; keys kept
        as given) or any pytree (flattened to PyTorch-style keys; its structure is stored too).
      state: buffers, merged into the same key namespace.
      metadata: as for :func:`save`.
      fsync: flush to disk before the rename (default True).

    Raises:
      JaxnetsError: a leaf cannot be stored. RegistryError: metadata is not storable.
    """
    flat, trees = _flat_weights(params, state)
    meta_cfg = None if metadata is None else registry.to_config(metadata, path="metadata")
    prov = provenance()
    fields = {
        "format": fmt.MAGIC,
        "kind": "state_dict",
        "jaxnets_version": prov["jaxnets"],
        "provenance": prov,
        "metadata": meta_cfg,
        "trees": trees,
    }
    fmt.write_file(path, tensor_sources(flat, "model"), fields, fsync=fsync)


# --- loading --------------------------------------------------------------------------------------
def _dtype_for(policy: DtypePolicy) -> Callable[[str, np.dtype], np.dtype | None]:
    """``(key, stored dtype) -> target dtype or None`` for a dtype policy (floats only)."""
    if policy is None:
        return lambda key, dt: None
    if isinstance(policy, Mapping):
        rules = [(str(p), jnp.dtype(d)) for p, d in policy.items()]

        def by_pattern(key: str, dt: np.dtype) -> np.dtype | None:
            for pattern, target in rules:
                if fnmatch.fnmatchcase(key, pattern):
                    return target
            return None

        return by_pattern
    target = jnp.dtype(policy)
    return lambda key, dt: target if jnp.issubdtype(dt, jnp.floating) else None


def _exact_for_jax(key: str, x: np.ndarray, file: str) -> np.ndarray:
    """``x`` in the dtype jax will hold it in (64-bit types need x64), refusing silent rounding."""
    canon = jax.dtypes.canonicalize_dtype(x.dtype)
    if canon == x.dtype:
        return x
    narrow = x.astype(canon)
    if np.array_equal(narrow.astype(x.dtype), x, equal_nan=x.dtype.kind in "fc"):
        return narrow  # e.g. int64 counters, float64 values that are exact in float32
    raise JaxnetsError(
        f"{file}: {key}: {x.dtype.name} values that jax cannot hold exactly without 64-bit mode. "
        f"Enable it (jax.config.update('jax_enable_x64', True)) before loading, or accept the "
        f"rounding with dtype={{{key!r}: '{canon.name}'}}.",
        path=key,
        file=file,
    )


def _placer(device: Placement, sharding: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``place(flat) -> flat`` on the requested device or sharding, in one batched transfer."""
    if device is not None and sharding is not None:
        raise ValueError("pass device= or sharding=, not both")
    if sharding is not None:
        if callable(sharding) and not isinstance(sharding, jax.sharding.Sharding):
            return lambda flat: {k: jax.device_put(x, sharding(k, leaf_info(x))) for k, x in flat.items()}
        target: Any = sharding
    else:
        target = jax.devices(device)[0] if isinstance(device, str) else device

    def place(flat: dict[str, Any]) -> dict[str, Any]:
        keys = list(flat)  # jax would sort dict keys; keep the file's (PyTorch's) order
        return dict(zip(keys, jax.device_put([flat[k] for k in keys], target)))

    return place


def _upgrade(flat: dict[str, Any], versions: Any, file: str) -> tuple[dict[str, Any], bool]:
    """Applies registered ``upgrade`` functions to the sub-state_dict of each older layer."""
    if not isinstance(versions, dict):
        raise FileFormatError(f"{file}: malformed class versions in the header.", file=file)
    changed = False
    # Children first, so a parent's upgrade sees its children already in their current layout.
    for path in sorted(versions, key=lambda p: (-p.count(".") if p else 1, p)):
        item = versions[path]
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and type(item[1]) is int
        ):
            raise FileFormatError(f"{file}: malformed class version entry at {path!r}.", file=file)
        name, stored = item
        entry = registry.lookup(name, file=file)
        if stored == entry.version:
            continue
        where = path or "the model"
        if stored > entry.version:
            raise RegistryError(
                f"{file}: {where} ({name}) was written by version {stored} of the class, this "
                f"process has version {entry.version}; load it with the newer code.",
                path=path,
                file=file,
            )
        if entry.upgrade is None:
            raise RegistryError(
                f"{file}: {where} ({name}) is version {stored} in the file, {entry.version} here, "
                f"and {name} has no upgrade function; register it with "
                f"@jaxnets.register(version={entry.version}, upgrade=fn).",
                path=path,
                file=file,
            )
        prefix = path + "." if path else ""
        sub = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        new = entry.upgrade(dict(sub), stored)
        flat = {k: v for k, v in flat.items() if not k.startswith(prefix)}
        flat.update({prefix + k: v for k, v in new.items()})
        changed = True
    return flat, changed


def _from_spec(spec: Any, flat: Mapping[str, Any], file: str, what: str) -> Any:
    try:
        keys = spec_keys(spec)
        missing = [k for k in keys if k not in flat]
        if missing:
            raise FileFormatError(
                f"{file}: the stored {what} structure names entries the file lacks: {missing[:5]}",
                file=file,
            )
        return tree_from_spec(spec, flat)
    except FileFormatError as e:
        if e.file is not None:
            raise
        raise FileFormatError(f"{file}: {e}", file=file) from e
    except (KeyError, TypeError, AttributeError) as e:
        raise FileFormatError(f"{file}: malformed stored {what} structure ({e}).", file=file) from e


def _from_template(model: Any, flat: dict[str, Any], file: str) -> tuple[Any, Any]:
    template = jax.eval_shape(model.init, jax.random.key(0))
    expected = {k: leaf_info(v) for k, v in flatten(_merge(*template)).items()}
    report = compare(expected, {k: leaf_info(v) for k, v in flat.items()})
    if not report.keys_match or report.shape_mismatch:
        raise StateDictError(
            report.format(
                expected="the model",
                got=f"{file} (after upgrades)",
                dtypes=False,
                hint="Check the registered upgrade functions.",
            ),  # fmt: skip
            report,
            file=file,
        )
    return map_with_keys(lambda k, _: flat[k], template[0]), map_with_keys(
        lambda k, _: flat[k], template[1]
    )


def load(
    path: str | os.PathLike[str],
    *,
    dtype: DtypePolicy = None,
    device: Placement = None,
    sharding: Any = None,
    verify: bool = True,
) -> LoadedModel:
    """Loads a complete model file (or a weights-only one) written by :func:`save`.

    Args:
      path: the file.
      dtype: cast params/buffers on load: one dtype for every floating-point entry
        (``"bfloat16"``), or ``{fnmatch pattern: dtype}`` by key, first match wins
        (``{"*.weight": "bfloat16"}``; a pattern casts whatever it matches). PRNG keys and the
        optimizer state are never cast. 64-bit entries that jax (without x64) cannot hold exactly
        are an error unless a pattern casts them; exact ones (int64 counters) become 32-bit.
      device: where to put the arrays: None (jax's default device), ``"cpu"``, or a ``jax.Device``.
      sharding: a ``jax.sharding.Sharding`` for every leaf, or ``fn(key, LeafInfo) -> Sharding``.
      verify: check every checksum and padding byte (default True).

    Returns:
      A :class:`LoadedModel`. For a weights-only file ``model`` is None and ``params`` is the
      stored pytree (or the flat state_dict when a flat dict was saved).

    Raises:
      FileFormatError: the file is corrupted, truncated, hostile or of an unknown version.
      RegistryError: a class named in the file is not registered in this process (the message
        says which and how to register it), or a layer's stored version cannot be upgraded.
      StateDictError: after upgrades, the entries do not fit the model.
    """
    reader = Reader(path)
    file = reader.path
    h = reader.header
    model = None
    if h.get("kind") == "model":
        model = registry.from_config(h.get("model"), file=file)
    data = reader.read_all(verify=verify)
    flat: dict[str, Any] = data["model"]
    upgraded = False
    if model is not None and "versions" in h:
        flat, upgraded = _upgrade(flat, h["versions"], file)

    cast, place = _dtype_for(dtype), _placer(device, sharding)

    def finish(key: str, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            target = cast(key, x.dtype)
            if target is not None and target != x.dtype:
                x = x.astype(target)
            else:
                x = _exact_for_jax(key, x, file)
        return x

    flat = place({k: finish(k, v) for k, v in flat.items()})
    trees = h.get("trees") or {}
    if not isinstance(trees, dict):
        raise FileFormatError(f"{file}: malformed tree structures in the header.", file=file)
    if upgraded and is_model(model):
        params, state = _from_template(model, flat, file)
    elif "params" in trees:
        params = _from_spec(trees["params"], flat, file, "params")
        state = _from_spec(trees.get("state", {"t": "none"}), flat, file, "state")
    else:
        params, state = flat, None
    opt_state = None
    if "opt_state" in trees:
        opt_flat = place(data["opt_state"])
        opt_state = _from_spec(trees["opt_state"], opt_flat, file, "optimizer state")
    optimizer = registry.from_config(h.get("optimizer"), file=file)
    metadata = registry.from_config(h.get("metadata"), file=file)
    return LoadedModel(
        model,
        params,
        state,
        opt_state,
        optimizer,
        metadata,
        file,
        reader.format_version,
        reader.provenance,
    )
