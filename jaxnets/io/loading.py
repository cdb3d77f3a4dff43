"""``jaxnets.load``: a model file back as what was saved, checked against the model it names.

The header is validated first: it must agree with itself (each stored tree names exactly the
entries stored for it, see :mod:`jaxnets.io.leaves`) and with the model and optimizer its configs
rebuild to (:mod:`jaxnets.io.model_checks`), all before any tensor is read. Then the tensors are
read (checksums verified), migrated if older layer versions wrote them
(:mod:`jaxnets.io.migrations`, checked again after), cast, made exact for jax and placed
(:mod:`jaxnets.io.leaves`). Nothing on this path imports, unpickles or evaluates anything named in
the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from jaxnets.core import progress as _progress
from jaxnets.core import registry
from jaxnets.core.placement import Device, Placer
from jaxnets.core.progress import check_progress
from jaxnets.core.structure import LeafInfo, compare, leaf_info
from jaxnets.core.tree import flatten, map_with_keys, spec_keys, tree_from_spec, tree_spec
from jaxnets.errors import FileFormatError, JaxnetsError, RegistryError
from jaxnets.io import format as fmt
from jaxnets.io import leaves, migrations
from jaxnets.io import model_checks as checks
from jaxnets.io.loaded_model import LoadedModel
from jaxnets.io.reader import Reader

__all__ = ["load"]

_GROUPS = ("model", "opt_state")
_TREES = ("params", "state", "opt_state")
_NO_TREE = {"t": "none"}


def _header_kind(h: Mapping[str, Any], file: str) -> str:
    kind = h.get("kind", "state_dict")
    if kind not in ("model", "state_dict"):
        raise FileFormatError(
            f"{file}: unknown file kind {kind!r:.40} in the header ('model' or 'state_dict').",
            file=file,
        )
    return str(kind)


def _trees(h: Mapping[str, Any], file: str) -> dict[str, Any]:
    trees = h.get("trees") or {}
    if (
        not isinstance(trees, dict)
        or not set(trees) <= set(_TREES)
        or not all(isinstance(v, dict) for v in trees.values())
    ):
        raise FileFormatError(
            f"{file}: malformed tree structures in the header (a map of {list(_TREES)} to tree "
            "specs expected).",
            file=file,
        )
    return trees


def _spec_call(fn: Callable[[], Any], file: str, what: str) -> Any:
    """Runs a tree-spec function on a stored spec; whatever a malformed spec raises names the file."""
    try:
        return fn()
    except JaxnetsError as e:
        if e.file is not None:
            raise
        cls = RegistryError if isinstance(e, RegistryError) else FileFormatError
        raise cls(f"{file}: stored {what} structure: {e}", path=e.path, file=file) from e
    except Exception as e:  # incl. whatever a registered class named in a "class" node raises
        raise FileFormatError(
            f"{file}: malformed stored {what} structure ({type(e).__name__}: {e}).", file=file
        ) from e


def _spec_keys(spec: Any, file: str, what: str) -> list[str]:
    keys: list[str] = _spec_call(lambda: spec_keys(spec), file, what)
    if len(set(keys)) != len(keys):
        raise FileFormatError(f"{file}: the stored {what} structure names an entry twice.", file=file)
    return keys


def _build(spec: Any, flat: Mapping[str, Any], file: str, what: str) -> Any:
    return _spec_call(lambda: tree_from_spec(spec, flat), file, what)


def _agree(spec: list[str], stored: list[str], file: str, what: str) -> None:
    """The header agrees with itself: a stored tree names exactly the entries stored for it."""
    report = compare(dict.fromkeys(spec, _ANY), dict.fromkeys(stored, _ANY))
    if report.keys_match and len(set(spec)) == len(spec):
        return
    parts = []
    if len(set(spec)) != len(spec):
        parts.append(f"the {what} structures name an entry twice")
    if report.missing:
        parts.append(f"the {what} structure names entries the file lacks: {list(report.missing[:5])}")
    if report.unexpected:
        parts.append(f"the file stores entries the structure lacks: {list(report.unexpected[:5])}")
    raise FileFormatError(
        f"{file}: the header disagrees with itself (the file is corrupted or was not written by "
        f"jaxnets): {'; '.join(parts)}.",
        file=file,
    )


_ANY = LeafInfo((), "")


# --- checks against the model ---------------------------------------------------------------------
def _check_model(
    template: checks.Template,
    got: Mapping[str, LeafInfo],
    cast: Collection[str],
    file: str,
    *,
    upgraded: bool,
) -> None:
    checks.check_fits(
        template.infos,
        got,
        expected_name="the model",
        got_name=f"{file} (after upgrades)" if upgraded else file,
        file=file,
        cast=cast,
        hint=(
            "Check the registered upgrade functions."
            if upgraded
            else "The file must hold the entries of the model its config describes (it is "
            "corrupted, edited or written by other code); floating-point entries may be of "
            "another float dtype, other dtypes cast with dtype={'KEY': 'DTYPE'}."
        ),
    )


def _check_containers(want: Any, spec: Any, file: str, what: str, expected_name: str) -> None:
    checks.check_containers(
        want, spec, what=what, expected_name=expected_name, got_name=file, file=file
    )


def _check_opt(
    optimizer: Any,
    tpl_params: Any,
    got: Mapping[str, LeafInfo],
    opt_got: Mapping[str, LeafInfo],
    spec: Any,
    file: str,
    *,
    upgraded: bool,
) -> None:
    tpl_opt = checks.optimizer_template(optimizer, checks.abstract_like(tpl_params, got), file=file)
    checks.check_fits(
        checks.template_infos(tpl_opt),
        opt_got,
        expected_name="optimizer.init(params)",
        got_name=f"{file} (optimizer state)",
        file=file,
        hint=(
            "Upgrade functions migrate the model's entries, not the optimizer state: load the "
            "params with this file and start a fresh optimizer state."
            if upgraded
            else "The optimizer state must be the stored optimizer's for the stored params."
        ),
    )
    want = _spec_call(lambda: tree_spec(tpl_opt), file, "optimizer state")
    _check_containers(want, spec, file, "optimizer state", "optimizer.init(params)")


def _stored_infos(
    index: Mapping[str, LeafInfo], kinds: leaves.GroupLeaves, targets: Mapping[str, np.dtype]
) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of a group as it will load, from the header alone."""
    out = {k: checks.loaded_info(i, targets.get(k)) for k, i in index.items()}
    out.update((k, checks.loaded_info(leaves.py_info(v))) for k, v in kinds.py.items())
    return out


def _loaded_infos(flat: Mapping[str, Any], targets: Mapping[str, np.dtype]) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of entries read (and upgraded) as they will load."""
    return {
        k: checks.loaded_info(
            leaves.py_info(v) if type(v) in leaves.PY_TYPES else leaf_info(v), targets.get(k)
        )
        for k, v in flat.items()
    }


# --- sharded loads --------------------------------------------------------------------------------
def _ranged(
    place: Placer, kinds: Mapping[str, leaves.GroupLeaves], infos: Mapping[str, Mapping[str, LeafInfo]]
) -> dict[str, dict[str, Any]]:
    """``{group: {key: Sharding}}`` of the jax leaves the placer gives a sharding."""
    out: dict[str, dict[str, Any]] = {}
    for group, by_key in infos.items():
        out[group] = {}
        for k, info in by_key.items():
            if kinds[group].kind(k) != "jax":
                continue
            s = place.sharding(k, info)
            if s is not None:
                out[group][k] = s
    return out


def _read_ranged(
    reader: Reader,
    group: str,
    shardings: Mapping[str, Any],
    targets: Mapping[str, np.dtype] | None,
    verify: bool,
    bar: _progress.Progress,
    *,
    castable: bool,
) -> dict[str, Any]:
    """``{key: jax.Array}`` of a group's leaves given a sharding, each read shard by shard."""
    out = {}
    for k, s in shardings.items():
        convert = leaves.cast_block(k, None if targets is None else targets.get(k), reader.path, castable=castable)
        out[k] = reader._read_sharded(k, group, s, verify=verify, convert=convert)
        bar.update(reader.tensor_nbytes(k, group))
    return out


def _in_file_order(
    reader: Reader, group: str, flat: Mapping[str, Any], built: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """``flat`` with the group's leaves read shard by shard, tensors in the file's order."""
    ranged = built.get(group)
    if not ranged:
        return dict(flat)
    out = {k: ranged[k] if k in ranged else flat[k] for k in reader.keys(group)}
    out.update((k, v) for k, v in flat.items() if k not in out)  # Python scalars, after the tensors
    return out


# --- load -----------------------------------------------------------------------------------------
def load(
    path: str | os.PathLike[str],
    *,
    dtype: leaves.DtypePolicy = None,
    device: Device | None = None,
    sharding: Any = None,
    verify: bool = True,
    progress: bool | None = None,
) -> LoadedModel:
    """Loads a complete model file (or a weights-only one) written by :func:`save`.

    A model file's entries are checked against the model rebuilt from its config before any
    tensor is read (``jax.eval_shape`` of its ``init``: keys, shapes, dtypes, containers), and its
    optimizer state against ``optimizer.init(params)``; after upgrades of older layer versions,
    the upgraded entries are checked. See docs/saving_loading.md, "What load checks".

    Args:
      path: the file.
      dtype: cast params/buffers on load: one dtype for every floating-point entry
        (``"bfloat16"``), or ``{fnmatch pattern: dtype}`` by key, first match wins
        (``{"*.weight": "bfloat16"}``; a pattern casts whatever it matches). PRNG keys, Python
        scalars and the optimizer state are never cast. 64-bit entries that jax (without x64)
        cannot hold bit for bit are an error unless a pattern casts them; exact ones (int64
        counters) become 32-bit. numpy leaves stay numpy (and 64-bit).
      device: where to put the jax arrays: None (jax's default device), ``"cpu"`` (this
        process's first CPU device; also ``"gpu"``, ``"tpu"``), or a ``jax.Device``.
      sharding: a ``jax.sharding.Sharding`` for every jax leaf, or ``fn(key, LeafInfo) ->
        Sharding | None`` (None: the default device). Each leaf given a sharding is built from
        range reads of its own shards (``jax.make_array_from_callback``): a process reads only
        the bytes of its shards, and never maps the file or holds a whole array it was not
        given (docs/multihost.md). Not when older layer versions are upgraded (upgrades need
        whole arrays): then the arrays are read whole and placed.
      verify: check every checksum and padding byte (default True). A checksum covers a whole
        tensor: for a leaf read shard by shard, every process streams all of that tensor's bytes
        through a 16 MiB buffer to check it (the page cache holds them, not the process).
        ``verify=False`` reads only each process's shards (padding still checked elsewhere).
      progress: a progress bar counted in bytes read and checked, on standard error: None
        (default) shows one for files of 1 GiB or more when standard error is a terminal; True
        always, False never (tqdm's bar when tqdm is installed).

    Returns:
      A :class:`LoadedModel` whose leaves are what was saved: jax arrays as jax arrays (on
      ``device``), numpy arrays as numpy arrays (private copy-on-write views of the file),
      numpy scalars and Python bool/int/float/str as themselves. For a weights-only file
      ``model`` is None and ``params`` is the stored pytree (or the flat state_dict when a flat
      dict was saved).

    Raises:
      FileFormatError: the file is corrupted, truncated, hostile or of an unknown version, or its
        ``model``/``optimizer`` entry does not rebuild to a model/optimizer.
      RegistryError: a class named in the file is not registered in this process (the message
        says which and how to register it), or a layer's stored version cannot be upgraded.
      StateDictError: the entries do not fit the model (or the optimizer state the optimizer),
        listing every missing, unexpected, misshapen and mistyped entry.
      JaxnetsError: a 64-bit entry jax cannot hold exactly without x64 (naming the key).
    """
    check_progress(progress)
    cast, place = leaves.dtype_policy(dtype), leaves.placer(device, sharding)
    reader = Reader(path)
    file = reader.path
    h = reader.header
    kind = _header_kind(h, file)
    trees = _trees(h, file)
    index = {g: reader.infos(g) for g in _GROUPS}
    kinds = leaves.decode(h.get("leaves"), index, file)
    # The header agrees with itself: each group's trees name exactly the entries stored for it.
    tree_keys = {n: _spec_keys(spec, file, n) for n, spec in trees.items()}
    for group, names in (("model", ("params", "state")), ("opt_state", ("opt_state",))):
        stored = [*index[group], *kinds[group].py]
        if any(n in trees for n in names):
            _agree([k for n in names for k in tree_keys.get(n, [])], stored, file, " and ".join(names))
        elif group == "opt_state" and stored:
            _agree([], stored, file, "optimizer state")
    targets: dict[str, np.dtype] = {}
    if cast is not None:
        targets = leaves.cast_targets(cast, {
            k: fmt.storage_dtype(e.dtype, file=file)
            for k, e in reader.entries("model").items() if not e.prng_impl
        })  # fmt: skip

    model = template = None
    plan: migrations.Plan = []
    got: dict[str, LeafInfo] = {}
    opt_got: dict[str, LeafInfo] = {}
    if kind == "model":
        model = checks.rebuild_model(h.get("model"), file)
        template = checks.model_template(model, file=file)
        plan = migrations.upgrade_plan(h.get("versions"), file)
        got = _stored_infos(index["model"], kinds["model"], targets)
        opt_got = _stored_infos(index["opt_state"], kinds["opt_state"], {})
    optimizer = checks.rebuild_optimizer(h.get("optimizer"), file)
    metadata = registry.from_config(h.get("metadata"), file=file, path="metadata")
    check_opt = template is not None and optimizer is not None and "opt_state" in trees
    if template is not None and not plan:  # from the header alone, before any tensor is read
        _check_model(template, got, targets, file, upgraded=False)
        for what, want in zip(("params", "state"), template.specs):
            _check_containers(want, trees.get(what, _NO_TREE), file, what, "the model")
        if check_opt:
            _check_opt(optimizer, template.params, got, opt_got, trees["opt_state"], file, upgraded=False)

    # With a sharding, each jax leaf is built from range reads of its own shards: no process maps
    # the file or holds a whole array it was not given. Upgrades rewrite whole arrays: not then.
    infos = {  # each leaf as it will be placed: from the header, as the checks saw it
        "model": got or _stored_infos(index["model"], kinds["model"], targets),
        "opt_state": opt_got or _stored_infos(index["opt_state"], kinds["opt_state"], {}),
    }
    ranged = _ranged(place, kinds, infos) if sharding is not None and not plan else {}
    with _progress.progress(reader.nbytes, f"loading {file}", progress) as bar:
        data = reader.read_all(verify=verify, skip=ranged, progress=bar)
        built = {
            g: _read_ranged(reader, g, by_key, None if g == "opt_state" else targets, verify, bar,
                            castable=g == "model" and cast is not None)
            for g, by_key in ranged.items()
        }  # fmt: skip
        bar.complete()
    flat: dict[str, Any] = {**data["model"], **kinds["model"].py}
    if plan and template is not None:
        flat = migrations.upgrade(flat, plan, file)
        if cast is not None:
            targets = leaves.cast_targets(cast, {k: v.dtype for k, v in flat.items() if isinstance(v, np.ndarray)})
        got = infos["model"] = _loaded_infos(flat, targets)
        _check_model(template, got, targets, file, upgraded=True)
        if check_opt:
            _check_opt(optimizer, template.params, got, opt_got, trees["opt_state"], file, upgraded=True)
    flat = leaves.finish(flat, kinds["model"], targets, place, file, infos["model"])
    flat = _in_file_order(reader, "model", flat, built)

    if plan and template is not None:  # the stored structure is the old layout's: use the model's
        params, state = (map_with_keys(lambda k, _: flat[k], t) for t in template[:2])
    elif "params" in trees:
        params = _build(trees["params"], flat, file, "params")
        state = _build(trees.get("state", _NO_TREE), flat, file, "state")
        if template is not None:  # no params or buffers: the model's own empty containers
            if not tree_keys["params"] and not flatten(template.params):
                params = template.params
            if not tree_keys.get("state") and not flatten(template.state):
                state = template.state
    else:
        params, state = flat, None
    opt_state = None
    if "opt_state" in trees:
        opt_flat = leaves.finish({**data["opt_state"], **kinds["opt_state"].py},
                                 kinds["opt_state"], None, place, file, infos["opt_state"])  # fmt: skip
        opt_flat = _in_file_order(reader, "opt_state", opt_flat, built)
        opt_state = _build(trees["opt_state"], opt_flat, file, "optimizer state")
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
