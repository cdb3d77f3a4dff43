"""Model files: ``save``/``load`` a complete model, ``save_state_dict`` weights only.

A complete model file holds the model's config (registered class names + hyperparameters, see
:mod:`jaxnets.core.registry`), its params and buffers as a state_dict, optionally the optimizer's
config and state, user metadata, and the version of every registered class in the model so that
files written by older layer versions are migrated on load (docs/custom_layers.md). The byte
layout is :mod:`jaxnets.io.format` (docs/format.md). This module writes them; loading is
:mod:`jaxnets.io.loading` (``load`` and ``LoadedModel`` are re-exported here).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import numpy as np

from jaxnets.core import processes, registry
from jaxnets.core.model import is_model
from jaxnets.core.progress import check_progress
from jaxnets.core.state_dict import _merge, model_order, to_numpy
from jaxnets.core.structure import LeafInfo, dtype_name, leaf_info
from jaxnets.core.tree import _children, flatten, tree_spec
from jaxnets.errors import JaxnetsError, RegistryError
from jaxnets.io import _shards, leaves
from jaxnets.io import format as fmt
from jaxnets.io import model_checks as checks
from jaxnets.io._layout import _no_gc
from jaxnets.io.loaded_model import LoadedModel
from jaxnets.io.loading import load

__all__ = [
    "LoadedModel",
    "save",
    "load",
    "save_state_dict",
    "tensor_sources",
    "provenance",
    "package_version",
]


# --- saving ---------------------------------------------------------------------------------------
@functools.cache  # reading the installed metadata costs ~1.5 ms; it does not change while running
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
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def tensor_sources(flat: Mapping[str, Any], group: str) -> list[fmt.TensorSource]:
    """One :class:`~jaxnets.io.format.TensorSource` per leaf of a flat dict; nothing is copied yet.

    Each leaf is converted while it is written, one at a time, so a tree on a device is never
    copied to the host at once; a jax array spread over several processes gives its local blocks
    (``TensorSource.blocks``) instead.

    Raises:
      JaxnetsError: a leaf's dtype cannot be stored (naming the key).
    """
    out: list[fmt.TensorSource] = []
    bad = []
    stored = fmt._dtypes()
    # {numpy dtype: (name, stored dtype or None, whether arrays of it are stored as they are)}
    seen: dict[np.dtype, tuple[str, np.dtype | None, bool]] = {}
    source = partial(tuple.__new__, fmt.TensorSource)  # TensorSource(...) without its Python __new__
    # 20,000 small leaves: no cyclic GC passes over the objects made here, numpy checked before
    # jax, and no closure per leaf (bound methods and partials are made in C).
    with _no_gc():
        for key, value in flat.items():
            if type(value) is np.ndarray:
                dt = value.dtype
                known = seen.get(dt)
                if known is None:
                    name = dtype_name(dt)
                    want = stored.get(name)
                    known = seen[dt] = (name, want, want is not None and dt == want)
                name, want, same = known
                if same:  # the array itself (byte order included): no conversion
                    out.append(source((key, group, name, value.shape, value.__array__, None, None)))
                elif want is None:
                    bad.append(f"  {key}: dtype {name}")
                else:
                    get = partial(_as_stored, value, want)
                    out.append(fmt.TensorSource(key, group, name, value.shape, get))
            elif isinstance(value, jax.Array):
                impl = None
                if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                    impl = str(jax.random.key_impl(value))
                    value = jax.random.key_data(value)
                name = dtype_name(value.dtype)
                if name not in stored:
                    bad.append(f"  {key}: dtype {name}")
                else:
                    out.append(_jax_source(key, group, name, value, impl))
            else:
                info = leaf_info(value)
                want = stored.get(info.dtype)
                if want is None:
                    bad.append(f"  {key}: dtype {info.dtype}")
                else:
                    get = partial(_as_stored, value, want)
                    out.append(fmt.TensorSource(key, group, info.dtype, info.shape, get))
    if bad:
        raise JaxnetsError(
            "cannot store these entries (unsupported dtype):\n" + "\n".join(bad),
            path=bad[0].split(":")[0].strip(),
        )
    return out


def _as_stored(value: Any, dtype: np.dtype) -> np.ndarray:
    return np.asarray(to_numpy(value), dtype=dtype, order="C")


def _jax_source(
    key: str, group: str, dtype: str, value: jax.Array, impl: str | None
) -> fmt.TensorSource:
    shape = tuple(value.shape)
    if value.is_fully_addressable:
        return fmt.TensorSource(key, group, dtype, shape, partial(_shards.assemble, value), impl)
    return fmt.TensorSource(
        key, group, dtype, shape, partial(_spread, key), impl, partial(_shards.local_blocks, value)
    )


def _spread(key: str) -> np.ndarray:
    raise JaxnetsError(
        f"{key}: this array is spread over several processes; only a save from every process of "
        "the job can store it (see docs/multihost.md).",
        path=key,
    )


def _flat_weights(params: Any, state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat state_dict, tree specs) of params/state given as pytrees or as flat state_dicts."""
    if (
        isinstance(params, Mapping)
        and state is None
        and all(type(v) is np.ndarray or _children(v) is None for v in params.values())
    ):
        return {
            str(k): v for k, v in params.items()
        }, {}  # already a flat state_dict: keys as given
    flat = flatten(_merge(params, state))
    return flat, {"params": tree_spec(params), "state": tree_spec(state)}


def _module_versions(model: Any) -> dict[str, list[Any]]:
    """``{module path: [registered name, version]}`` for the model and every registered child."""
    out: dict[str, list[Any]] = {}
    for path, m in model.named_modules():
        try:
            entry = registry.registry_entry(type(m))
        except RegistryError:
            continue
        out[path] = [entry.name, entry.version]
    return out


def _stored(flat: Mapping[str, Any], group: str) -> tuple[list[fmt.TensorSource], leaves.GroupLeaves]:
    """(tensor sources, what each leaf was) of a flat tree: Python scalars go to the header."""
    tensors, kinds = leaves.split(flat)
    return tensor_sources(tensors, group), kinds


def _saved_infos(
    flat: Mapping[str, Any], sources: list[fmt.TensorSource], kinds: leaves.GroupLeaves
) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of a flat tree as :func:`load` will give it back (for the checks)."""
    infos = {
        s.key: leaf_info(flat[s.key]) if s.prng_impl else LeafInfo(s.shape, s.dtype)
        for s in sources
    }
    infos.update((k, leaves.py_info(v)) for k, v in kinds.py.items())
    return {k: checks.loaded_info(i) for k, i in infos.items()}


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
    progress: bool | None = None,
) -> None:
    """Saves a complete model: config, params, buffers, optionally optimizer and its state.

    The file loads with :func:`load` in a process that never imported the code that built the
    model (built-in layers; custom ones need their module imported and ``@jaxnets.register``).
    Each leaf comes back as what it was (jax arrays, numpy arrays, numpy scalars, Python
    bool/int/float/str). Before anything is written, params and state are checked against the
    model's ``init`` (and ``opt_state`` against ``optimizer.init(params)``) by the rules
    :func:`load` applies, so a file that would not load is never written.

    Leaves are copied to the host one at a time while they are written (a model on devices needs
    host memory for its largest leaf, not for all of it). Arrays spread over the processes of a
    ``jax.distributed`` job are saved by every process together into one file on a shared
    filesystem, each process writing its own shards (docs/multihost.md): call ``save`` on every
    process with the same arguments.

    Args:
      path: the destination, replaced atomically (a failed save leaves the old file intact).
      model: a registered model (every ``jaxnets.nn`` layer, or ``@jaxnets.register`` classes).
      params, state: the model's parameters and buffers (pytrees with the containers, keys and
        shapes of ``model.init``'s; floating-point leaves may be of another float dtype, e.g.
        bfloat16). ``state`` may be None for a model without buffers.
      opt_state: the optimizer state (e.g. optax's), stored as a pytree.
      optimizer: a registered optimizer config (``jaxnets.optim.adam(...)``), stored by config.
      metadata: plain data (numbers, strings, lists, str-keyed dicts, small numpy arrays) or
        registered objects (e.g. a preprocessor with mean/std).
      fsync: flush to disk before the rename (default True).
      progress: a progress bar counted in bytes, on standard error: None (default) shows one
        for files of 1 GiB or more when standard error is a terminal; True always, False never
        (tqdm's bar when tqdm is installed). In a job of several processes, process 0 shows it.

    Raises:
      TypeError: ``model`` is not a model or ``optimizer`` not an optimizer, or ``progress`` is
        not None/True/False.
      StateDictError: params/state do not fit the model, or opt_state the optimizer (listing
        every problem); nothing is written.
      RegistryError: the model, optimizer or something in metadata is not registered.
      JaxnetsError: a leaf cannot be stored (unsupported dtype, non-str/int key); or, saving
        from several processes, they save different trees or different values of a leaf that
        is not spread over them, or the path is not shared by all of them (naming the keys).
      FileWriteError: the operating system refused a write; the destination is unchanged.
    """
    file = os.fspath(path)
    check_progress(progress)
    if not is_model(model):
        raise TypeError(
            f"save: model must be a model (a jaxnets.nn.Module, or an object with init, apply and "
            f"named_modules), got {type(model).__name__}; to save weights alone use "
            "jaxnets.save_state_dict."
        )
    if optimizer is not None and not checks.is_optimizer(optimizer):
        raise TypeError(
            f"save: optimizer must be a jaxnets.optim optimizer (init/update), got "
            f"{type(optimizer).__name__}."
        )
    flat = flatten(_merge(params, state))
    opt_flat = None if opt_state is None else flatten(opt_state)
    number = _joint_save(flat, opt_flat)
    try:
        sources, fields = _model_contents(
            file, model, (params, state, flat), (opt_state, opt_flat), optimizer, metadata
        )
    except Exception as e:
        if number is not None:
            fmt.abandon_spread(file, number, e)  # the other processes raise too, instead of waiting
        raise
    _write(file, sources, fields, fsync=fsync, progress=progress, number=number)


def _joint_save(*flats: Mapping[str, Any] | None) -> int | None:
    """The number of a save all processes make together (a leaf is a jax array spread over them),
    taken before anything that may fail on one process only; None for a save of one process."""
    if processes.count() == 1:
        return None
    for flat in flats:
        for v in (flat or {}).values():
            if isinstance(v, jax.Array) and not v.is_fully_addressable:
                return processes.next_operation()
    return None


def _model_contents(
    file: str,
    model: Any,
    weights: tuple[Any, Any, dict[str, Any]],
    opt: tuple[Any, dict[str, Any] | None],
    optimizer: Any,
    metadata: Any,
) -> tuple[list[fmt.TensorSource], dict[str, Any]]:
    """(tensor sources, header fields) of a model file, checked as :func:`load` checks them.

    Args:
      weights: ``(params, state, their flat dict)``. opt: ``(opt_state, its flat dict or None)``.
    """
    params, state, flat = weights
    opt_state, opt_flat = opt
    model_cfg = registry.to_config(model, path="model")
    opt_cfg = None if optimizer is None else registry.to_config(optimizer, path="optimizer")
    meta_cfg = None if metadata is None else registry.to_config(metadata, path="metadata")
    order = {k: i for i, k in enumerate(model_order(model))}
    flat = dict(sorted(flat.items(), key=lambda kv: order.get(kv[0], len(order))))
    sources, kinds = _stored(flat, "model")
    got = _saved_infos(flat, sources, kinds)
    template = checks.model_template(model)
    nothing = f"Nothing was written to {file}."
    checks.check_fits(
        template.infos,
        got,
        expected_name="the model",
        got_name="save(params, state)",
        file=file,
        hint=f"{nothing} Save the params and state of model.init's structure (as training returns them).",
    )
    trees: dict[str, Any] = {"params": tree_spec(params), "state": tree_spec(state)}
    for what, want in zip(("params", "state"), template.specs):
        checks.check_containers(want, trees[what], what=what, expected_name="model.init",
                                got_name=f"save({what}=...)", file=file)  # fmt: skip
    stored_leaves = {"model": kinds.to_header()}
    if opt_state is not None and opt_flat is not None:
        trees["opt_state"] = tree_spec(opt_state)
        opt_sources, opt_kinds = _stored(opt_flat, "opt_state")
        sources += opt_sources
        stored_leaves["opt_state"] = opt_kinds.to_header()
        if optimizer is not None:
            tpl_opt = checks.optimizer_template(optimizer, checks.abstract_like(params, got))
            checks.check_fits(
                checks.template_infos(tpl_opt),
                _saved_infos(opt_flat, opt_sources, opt_kinds),
                expected_name="optimizer.init(params)",
                got_name="save(opt_state=...)",
                file=file,
                hint=f"{nothing} Save the optimizer state that optimizer.init/update gave for these params.",
            )
            checks.check_containers(tree_spec(tpl_opt), trees["opt_state"], what="opt_state",
                                    expected_name="optimizer.init(params)",
                                    got_name="save(opt_state=...)", file=file)  # fmt: skip
    prov = provenance()
    fields = {
        "format": fmt.MAGIC,
        "kind": "model",
        "jaxnets_version": prov["jaxnets"],
        "provenance": prov,
        "model": model_cfg,
        "versions": _module_versions(model),
        "optimizer": opt_cfg,
        "metadata": meta_cfg,
        "trees": trees,
    }
    stored_leaves = {g: s for g, s in stored_leaves.items() if s}
    if stored_leaves:  # absent when every leaf is a jax array: such files read as 0.1 wrote them
        fields["leaves"] = stored_leaves
    return sources, fields


def save_state_dict(
    path: str | os.PathLike[str],
    params: Any,
    state: Any = None,
    *,
    metadata: Any = None,
    fsync: bool = True,
    progress: bool | None = None,
) -> None:
    """Saves weights only: a flat state_dict, or params (and buffers) as any pytree.

    Leaves are written as :func:`save` writes them (one at a time; arrays spread over several
    processes by all of them into one file).

    Args:
      path: the destination, replaced atomically.
      params: a flat state_dict (``{"fc1.weight": array}``; numpy, jax or torch values; keys kept
        as given) or any pytree (flattened to PyTorch-style keys; its structure is stored too).
        :func:`load` gives back each leaf as what it was (torch tensors as jax arrays).
      state: buffers, merged into the same key namespace.
      metadata: as for :func:`save`.
      fsync: flush to disk before the rename (default True).
      progress: a progress bar, as for :func:`save`.

    Raises:
      JaxnetsError: a leaf cannot be stored, or a save from several processes cannot be done
        (as for :func:`save`). RegistryError: metadata is not storable.
      FileWriteError: the operating system refused a write; the destination is unchanged.
      TypeError: ``progress`` is not None, True or False.
    """
    check_progress(progress)
    file = os.fspath(path)
    flat, trees = _flat_weights(params, state)
    number = _joint_save(flat)
    try:
        sources, fields = _weights_contents(flat, trees, metadata)
    except Exception as e:
        if number is not None:
            fmt.abandon_spread(file, number, e)
        raise
    _write(file, sources, fields, fsync=fsync, progress=progress, number=number)


def _weights_contents(
    flat: dict[str, Any], trees: dict[str, Any], metadata: Any
) -> tuple[list[fmt.TensorSource], dict[str, Any]]:
    """(tensor sources, header fields) of a weights-only file."""
    meta_cfg = None if metadata is None else registry.to_config(metadata, path="metadata")
    sources, kinds = _stored(flat, "model")
    prov = provenance()
    fields = {
        "format": fmt.MAGIC,
        "kind": "state_dict",
        "jaxnets_version": prov["jaxnets"],
        "provenance": prov,
        "metadata": meta_cfg,
        "trees": trees,
    }
    if kinds.to_header():
        fields["leaves"] = {"model": kinds.to_header()}
    return sources, fields


def _write(
    path: str | os.PathLike[str],
    sources: list[fmt.TensorSource],
    fields: dict[str, Any],
    *,
    fsync: bool,
    progress: bool | None,
    number: int | None,
) -> None:
    """One process streams the file; arrays spread over processes are written by all of them."""
    if any(s.blocks is not None for s in sources):
        fmt.write_spread(path, sources, fields, fsync=fsync, progress=progress, number=number)
    else:
        fmt.write_file(path, sources, fields, fsync=fsync, progress=progress)
