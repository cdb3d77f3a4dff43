"""What a model file must agree with: the model and optimizer its own header describes.

:func:`jaxnets.load` rebuilds the model from its stored config and traces its ``init`` abstractly
(``jax.eval_shape``: no array is computed); every stored entry is then compared with it by the one
structure checker (:func:`jaxnets.core.structure.compare`), from the header alone, before any
tensor is read. :func:`jaxnets.save` makes the same check before writing, so a file that would
not load is never written. The optimizer state is checked the same way against
``optimizer.init(params)`` when both are stored. The rules (docs/saving_loading.md, "What load
checks"):

* keys: exactly the model's, and the params/buffers split and containers of the model's ``init``;
* shapes: exactly the model's;
* dtypes: the dtype each entry will have once loaded (after the ``dtype=`` policy, and as jax holds
  it: int64 becomes int32 without 64-bit mode) must be the model's, with two exceptions. An entry
  the ``dtype=`` policy casts has the dtype the user asked for. A floating-point entry may be
  stored in another floating-point dtype (a model cast to bfloat16 before saving): it loads as
  stored, value for value. Anything else (an integer width, float vs integer, bool, complex, a
  PRNG key implementation) is an error.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core import registry
from jaxnets.core.model import is_model
from jaxnets.core.state_dict import _merge
from jaxnets.core.structure import (
    LeafInfo,
    Mismatch,
    StructureReport,
    compare,
    dtype_name,
    leaf_info,
)
from jaxnets.core.tree import flatten, map_with_keys, spec_keys, tree_spec
from jaxnets.errors import FileFormatError, StateDictError

__all__ = [
    "rebuild_model",
    "rebuild_optimizer",
    "Template",
    "model_template",
    "optimizer_template",
    "abstract_like",
    "template_infos",
    "loaded_info",
    "check_fits",
    "check_containers",
]


# --- what the header describes --------------------------------------------------------------------
def rebuild_model(config: Any, file: str) -> Any:
    """The model a stored ``model`` config describes.

    Raises:
      FileFormatError: the config is malformed or does not describe a model (``5``, a registered
        dataclass that is not a ``jaxnets.nn.Module``...).
      RegistryError: a class it names is not registered here.
    """
    model = registry.from_config(config, file=file, path="model")
    if not is_model(model):
        raise FileFormatError(
            f"{file}: the stored 'model' is {type(model).__name__} ({model!r:.80}), not a model "
            "(an object with init/apply/named_modules, such as a jaxnets.nn.Module); the file is "
            "corrupted or was not written by jaxnets.save.",
            file=file,
        )
    return model


def rebuild_optimizer(config: Any, file: str) -> Any:
    """The optimizer a stored ``optimizer`` config describes, or None.

    Raises:
      FileFormatError: it rebuilds to something without ``init``/``update``.
    """
    optimizer = registry.from_config(config, file=file, path="optimizer")
    if optimizer is not None and not is_optimizer(optimizer):
        raise FileFormatError(
            f"{file}: the stored 'optimizer' is {type(optimizer).__name__} ({optimizer!r:.80}), "
            "not an optimizer (init/update); the file is corrupted or was not written by jaxnets.",
            file=file,
        )
    return optimizer


def is_optimizer(x: Any) -> bool:
    """Whether ``x`` has optax's ``GradientTransformation`` interface (``init``, ``update``)."""
    return not isinstance(x, type) and callable(getattr(x, "init", None)) and callable(
        getattr(x, "update", None)
    )


class Template(NamedTuple):
    """What ``model.init`` gives, traced abstractly (``jax.eval_shape``: nothing is computed).

    Attributes:
      params, state: ``jax.ShapeDtypeStruct`` trees.
      infos: ``{key: LeafInfo}`` of both, in one namespace as in files (do not modify: cached).
      specs: the tree specs of params and state (:func:`jaxnets.tree_spec`).
    """

    params: Any
    state: Any
    infos: dict[str, LeafInfo]
    specs: tuple[dict[str, Any], dict[str, Any]]


@functools.lru_cache(maxsize=64)
def _cached_template(model: Any, x64: bool) -> Template:
    return _template(model)


def _template(model: Any) -> Template:
    # The key is made inside the trace too: an eager jax.random.key would compile an XLA program
    # on every fresh process's first load, before the user's first prediction.
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0)))
    return Template(params, state, template_infos(params, state), (tree_spec(params), tree_spec(state)))


def model_template(model: Any, *, file: str | None = None) -> Template:
    """The :class:`Template` of ``model.init``.

    Cached per model (models are hashable frozen dataclasses) and 64-bit mode, so saving every
    epoch or loading many files of one model traces once.

    Args:
      model: the model.
      file: for a model rebuilt from a file: its ``init`` failing is then a FileFormatError
        (the stored hyperparameters are wrong); for the caller's own model, None (errors propagate).
    """
    try:
        hash(model)
    except TypeError:  # an unhashable hyperparameter: trace without the cache

        def fn() -> Template:
            return _template(model)

    else:

        def fn() -> Template:
            return _cached_template(model, bool(jax.config.read("jax_enable_x64")))

    if file is None:
        return fn()
    try:
        return fn()
    except Exception as e:  # any error of a layer's init on stored hyperparameters (jax raises many types)
        raise FileFormatError(
            f"{file}: the model rebuilt from the file's config ({type(model).__name__}) cannot be "
            f"initialised ({type(e).__name__}: {e}); its stored hyperparameters are wrong or the "
            "layer's code changed since the file was written.",
            file=file,
        ) from e


def optimizer_template(optimizer: Any, params: Any, *, file: str | None = None) -> Any:
    """``optimizer.init(params)`` as a ``jax.ShapeDtypeStruct`` tree (``params`` may be abstract)."""
    if file is None:
        return jax.eval_shape(optimizer.init, params)
    try:
        return jax.eval_shape(optimizer.init, params)
    except Exception as e:  # as model_template: the stored optimizer config is the cause
        raise FileFormatError(
            f"{file}: the optimizer rebuilt from the file's config cannot be initialised for the "
            f"stored params ({type(e).__name__}: {e}).",
            file=file,
        ) from e


def abstract_like(tree: Any, infos: Mapping[str, LeafInfo]) -> Any:
    """``tree`` with each leaf replaced by a ``jax.ShapeDtypeStruct`` of its info (PRNG keys and
    strings stay as they are): what ``optimizer_template`` traces the optimizer's init with."""

    def leaf(key: str, value: Any) -> Any:
        info = infos[key]
        if info.dtype.startswith("key<") or info.dtype == "str":
            return value
        return jax.ShapeDtypeStruct(info.shape, jnp.dtype(info.dtype))

    return map_with_keys(leaf, tree)


def template_infos(params: Any, state: Any = None) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of a template (params and state in one namespace, as in files)."""
    return {
        k: LeafInfo(tuple(v.shape), dtype_name(v.dtype)) if type(v) is jax.ShapeDtypeStruct else leaf_info(v)
        for k, v in flatten(_merge(params, state)).items()
    }


# --- the dtype an entry will have -----------------------------------------------------------------
# dtype names and dtypes cost microseconds each to work out; 20,000 entries share a few of them.


@functools.cache
def _dtype(name: str) -> np.dtype | None:
    try:
        return jnp.dtype(name)
    except TypeError:  # "str", "key<fry>": not numeric dtypes, never canonicalised
        return None


def loaded_info(info: LeafInfo, target: np.dtype | None = None) -> LeafInfo:
    """The shape and dtype an entry has once loaded: cast to ``target`` (the ``dtype=`` policy) if
    given, and as jax holds it (64-bit types are 32-bit without ``jax_enable_x64``).

    The comparison is in jax's terms for every leaf, numpy ones included: the model's ``init``,
    traced by ``jax.eval_shape``, gives jax's dtypes.
    """
    dtype = target if target is not None else _dtype(info.dtype)
    if dtype is None or info.dtype.startswith("key<"):
        return info
    # Not cached by name: jax_enable_x64 may change between loads (jax caches this call itself).
    name = dtype_name(jax.dtypes.canonicalize_dtype(dtype))
    return info if name == info.dtype else LeafInfo(info.shape, name)


@functools.cache
def _floating(dtype: str) -> bool:
    try:
        return bool(jnp.issubdtype(jnp.dtype(dtype), jnp.floating))
    except TypeError:  # "str", "key<fry>"
        return False


def _accepted(m: Mismatch, cast: bool) -> bool:
    if m.expected.startswith("key<") or m.got.startswith("key<"):
        return False  # key data of another PRNG implementation is other random numbers
    return cast or (_floating(m.expected) and _floating(m.got))


# --- the checks -----------------------------------------------------------------------------------
def check_fits(
    expected: Mapping[str, LeafInfo],
    got: Mapping[str, LeafInfo],
    *,
    expected_name: str,
    got_name: str,
    file: str | None = None,
    cast: Collection[str] = (),
    hint: str = "",
) -> None:
    """Raises unless ``got`` fits ``expected`` by the module's rules.

    Args:
      expected: the model's (or optimizer's) entries, from its template.
      got: the entries as they will be loaded or saved (dtypes from :func:`loaded_info`).
      expected_name, got_name: how the message calls each side.
      file: the file, for the error's ``.file``.
      cast: keys the user's ``dtype=`` policy casts (their dtype is the user's choice).
      hint: a last line saying what to do.

    Raises:
      StateDictError: listing every missing, unexpected, misshapen and refused mistyped entry.
    """
    report = compare(expected, got)
    refused = tuple(m for m in report.dtype_mismatch if not _accepted(m, m.path in cast))
    if report.keys_match and not report.shape_mismatch and not refused:
        return
    shown = StructureReport(report.missing, report.unexpected, report.shape_mismatch, refused)
    raise StateDictError(
        shown.format(expected=expected_name, got=got_name, dtypes=True, hint=hint), shown, file=file
    )


def _same_containers(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two tree specs (:func:`jaxnets.tree_spec`) describe the same containers, as jax's
    treedefs compare them: dict (and class) children by key, whatever their order."""
    t = a.get("t")
    if t != b.get("t"):
        return False
    if t in ("leaf", "none"):
        return True
    if t in ("list", "tuple"):
        return len(a["c"]) == len(b["c"]) and all(map(_same_containers, a["c"], b["c"]))
    if t == "class" and a.get("name") != b.get("name"):
        return False
    ca, cb = dict(zip(a["k"], a["c"])), dict(zip(b["k"], b["c"]))
    return ca.keys() == cb.keys() and all(_same_containers(ca[k], cb[k]) for k in ca)


def check_containers(
    want: Mapping[str, Any],
    stored: Mapping[str, Any],
    *,
    what: str,
    expected_name: str,
    got_name: str,
    file: str | None,
) -> None:
    """Raises unless a stored tree spec has the containers of the template's: the
    model's params must not come back as buffers, nor its dicts as lists.

    Args:
      want: the tree spec of the template (:attr:`Template.specs`, or ``tree_spec`` of one).
      stored: the tree spec stored for it (already validated by ``spec_keys``).

    Raises:
      StateDictError: naming both structures; its report lists the keys on the wrong side.
    """
    if _same_containers(want, stored):
        return
    want_keys, stored_keys = spec_keys(want), spec_keys(stored)
    if not want_keys and not stored_keys:
        return  # no leaves either side: a model without buffers saved with state=None
    report = compare(dict.fromkeys(want_keys, _ANY), dict.fromkeys(stored_keys, _ANY))
    lines = report.format(expected=expected_name, got=got_name).splitlines()[1:]
    raise StateDictError(
        f"{got_name}: the stored {what} are not structured as {expected_name}'s (containers, or "
        f"params vs buffers, differ):\n  {expected_name}: {_describe(want)}\n"
        f"  {got_name}: {_describe(stored)}" + "".join("\n" + line for line in lines),
        report,
        file=file,
    )


_ANY = LeafInfo((), "?")


def _describe(spec: Mapping[str, Any]) -> str:
    """A spec's containers in jax's notation (``{'0': {'bias': *, 'weight': *}}``), at most 300
    characters."""

    def go(node: Mapping[str, Any]) -> str:
        t = node.get("t")
        if t == "leaf":
            return "*"
        if t == "none":
            return "None"
        if t in ("list", "tuple"):
            inner = ", ".join(go(c) for c in node["c"])
            return f"[{inner}]" if t == "list" else f"({inner})"
        inner = ", ".join(f"{k!r}: {go(c)}" for k, c in zip(node["k"], node["c"]))
        return f"{node['name']}({inner})" if t == "class" else "{" + inner + "}"

    text = go(spec)
    return text if len(text) <= 300 else text[:297] + "..."
