"""``state_dict`` and ``load_state_dict``: PyTorch's vocabulary over pure pytrees.

A model's params and state (buffers) share one key namespace, exactly as a torch module's
parameters and buffers do: ``bn.weight`` lives in params, ``bn.running_mean`` in state.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.model import is_model
from jaxnets.core.structure import LeafInfo, StructureReport, compare, leaf_info
from jaxnets.core.tree import _children, flatten, map_with_keys
from jaxnets.errors import JaxnetsError, JaxnetsWarning, StateDictError

__all__ = ["state_dict", "load_state_dict", "check_state_dict", "to_numpy", "set_file_opener"]

DtypePolicy = Literal["cast", "error"]

# Files are read by jaxnets.io, which sits above the core: io installs its opener here when it is
# imported (``import jaxnets`` does), so a path works as a source while core never imports io.
FileOpener = Callable[[str], Mapping[str, Any]]
_file_opener: FileOpener | None = None


def set_file_opener(opener: FileOpener) -> None:
    """Installs ``opener(path) -> lazy flat mapping`` used when a source is a path (by jaxnets.io).

    The mapping may offer ``infos() -> {key: LeafInfo}`` (checked before any tensor is read) and
    ``close()``; its arrays must be owned by the reader (never memory the caller can change).
    """
    global _file_opener
    _file_opener = opener


def _merge(params: Any, state: Any) -> Any:
    """params and state as one tree: each dict node lists params' keys, then state's."""
    if state is None:
        return params
    if type(params) is dict and type(state) is dict:
        out = dict(params)
        for k, v in state.items():
            out[k] = _merge(params[k], v) if k in params else v
        return out
    if not flatten(state):
        return params
    raise JaxnetsError(
        "params and state both hold entries at the same key; a model's parameters and buffers "
        "must have distinct names (as in PyTorch)."
    )


@functools.lru_cache(maxsize=256)
def _model_order_cached(model: Any) -> tuple[str, ...]:
    return _model_order(model)


def _model_order(model: Any) -> tuple[str, ...]:
    """The model's keys in PyTorch's order: the insertion order of a fresh ``init``.

    jax sorts dict keys whenever it rebuilds a tree (``jit``, ``tree.map``, optax), so the order
    is read from ``init`` traced abstractly: no arrays are computed.
    """
    keys: list[str] = []

    def trace(k: jax.Array) -> Any:
        p, s = model.init(k)
        keys.extend(flatten(_merge(p, s)))
        return p, s

    jax.eval_shape(trace, jax.random.key(0))
    return tuple(keys)


def model_order(model: Any) -> tuple[str, ...]:
    try:
        return _model_order_cached(model)
    except TypeError:  # an unhashable hyperparameter: compute without the cache
        return _model_order(model)


def to_numpy(value: Any) -> Any:
    """A state_dict value as a numpy array (torch tensors included, bfloat16 exactly).

    Typed PRNG key arrays stay jax arrays: numpy has no dtype for them.
    """
    if isinstance(value, jax.Array):
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            return value
        return np.asarray(value)
    if type(value).__module__.startswith("torch"):
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16: move the bits exactly
            import ml_dtypes
            import torch

            return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(value)


def state_dict(params: Any, state: Any = None, *, model: Any = None) -> dict[str, Any]:
    """Flattens params (and buffers) into a PyTorch-style state_dict.

    Works on any pytree: dicts, lists, tuples, NamedTuples, dataclasses, optax states.

    Args:
      params: a model's params, or any pytree.
      state: the model's state (buffers), merged into the same key namespace; optional.
      model: when given, keys come in the model's (PyTorch's) order even after ``jit`` or optax
        re-sorted the dicts; otherwise in the trees' own order.

    Returns:
      ``{"features.0.weight": np.ndarray, ...}``; typed PRNG keys stay jax key arrays.

    Raises:
      JaxnetsError: a key is not str/int, or params and state share a key.
    """
    flat = flatten(_merge(params, state))
    if model is not None:
        order = {k: i for i, k in enumerate(model_order(model))}
        keys = sorted(flat, key=lambda k: order.get(k, len(order)))
        flat = {k: flat[k] for k in keys}
    return {k: to_numpy(v) for k, v in flat.items()}


def _as_flat(source: Any) -> Mapping[str, Any]:
    if isinstance(source, (str, os.PathLike)):
        if _file_opener is None:
            raise RuntimeError("loading from a path needs jaxnets.io: import jaxnets first.")
        return _file_opener(os.fspath(source))
    if not isinstance(source, Mapping):
        raise TypeError(
            "a state_dict must be a mapping from keys to arrays (numpy, jax or torch) or a file "
            f"path, got {type(source).__name__}."
        )
    flat: dict[str, Any] = {}
    for k, v in source.items():
        if _children(v) is None:
            flat[k] = v
        else:  # a nested tree under this key: flatten it below the key
            for sub, leaf in flatten(v).items():
                flat[f"{k}.{sub}" if sub else k] = leaf
    return flat


def _target_template(target: Any) -> tuple[Any, bool]:
    """(template tree, is_model). A model's template is its init traced abstractly."""
    if is_model(target):
        return jax.eval_shape(target.init, jax.random.key(0)), True
    return target, False


def _expected(target: Any, template: Any, model: bool) -> dict[str, LeafInfo]:
    """The target's keys with shape and dtype, in the model's (PyTorch's) order for a model.

    The template of a model comes from ``eval_shape``, whose dicts jax has re-sorted.
    """
    if not model:
        return {k: leaf_info(v) for k, v in flatten(template).items()}
    flat = flatten(_merge(*template))
    order = [k for k in model_order(target) if k in flat]
    seen = set(order)
    return {k: leaf_info(flat[k]) for k in order + [k for k in flat if k not in seen]}


def _infos(flat: Mapping[str, Any]) -> dict[str, LeafInfo]:
    infos = getattr(flat, "infos", None)  # lazy file readers describe entries without reading
    if callable(infos):
        return dict(infos())
    return {k: leaf_info(v) for k, v in flat.items()}


def check_state_dict(target: Any, source: Any) -> StructureReport:
    """Compares a state_dict with a model or template without loading anything.

    Args:
      target: a ``jaxnets.nn.Module`` or a template pytree (arrays or ``jax.ShapeDtypeStruct``).
      source: a flat state_dict, a nested tree, or a file path.

    Returns:
      The :class:`~jaxnets.StructureReport` of every difference.
    """
    template, model = _target_template(target)
    flat = _as_flat(source)
    try:
        return compare(_expected(target, template, model), _infos(flat))
    finally:
        _close(flat)


_LOSSY_KINDS = {("f", "i"), ("f", "u"), ("f", "b"), ("c", "f"), ("c", "i"), ("c", "u")}


def _is_lossy(src: str, dst: str) -> bool:
    """Whether casting dtype ``src`` to ``dst`` can lose information PyTorch's copy_ drops silently."""
    s, d = jnp.dtype(src), jnp.dtype(dst)
    if (s.kind, d.kind) in _LOSSY_KINDS:
        return True
    if s.kind in "fc" and d.kind == s.kind:
        return jnp.finfo(d).bits < jnp.finfo(s).bits or jnp.finfo(d).nmant < jnp.finfo(s).nmant
    return False


def load_state_dict(
    target: Any,
    source: Any,
    *,
    strict: bool = True,
    dtypes: DtypePolicy = "cast",
    key: jax.Array | None = None,
) -> Any:
    """Loads a state_dict into a model or template, checking every key, shape and dtype.

    Args:
      target: a ``jaxnets.nn.Module`` (returns ``(params, state)``) or a template pytree, e.g. an
        optax state from ``opt.init(params)`` or a tree of ``jax.ShapeDtypeStruct`` (returns the
        filled tree, with the template's container types: optax states stay NamedTuples).
      source: a flat state_dict (``{"fc1.weight": array}``; numpy, jax or torch tensors), a nested
        tree, or the path of a jaxnets file.
      strict: when True (default) any missing or unexpected key is an error. When False, what
        matches is loaded, the rest is reported in a :class:`~jaxnets.JaxnetsWarning`, and missing
        entries keep the model's fresh ``init`` values (or the template's concrete values).
      dtypes: ``"cast"`` (default) casts each value to the target's dtype as PyTorch's ``copy_``
        does (e.g. int64 ``num_batches_tracked`` into int32) and warns about lossy casts
        (narrowing floats, float to int); ``"error"`` makes every dtype difference an error.
      key: PRNG key for the ``init`` of missing entries with ``strict=False`` (default key 0).

    Returns:
      ``(params, state)`` for a model, the filled tree for a template; leaves are jax arrays.

    Raises:
      StateDictError: listing every missing, unexpected (when strict), misshapen and (with
        ``dtypes="error"``) mistyped entry at once, by path.
    """
    if dtypes not in ("cast", "error"):
        raise ValueError(f"dtypes must be 'cast' or 'error', got {dtypes!r}")
    file = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    flat = _as_flat(source)
    try:
        return _load(target, flat, file=file, strict=strict, dtypes=dtypes, key=key)
    finally:
        _close(flat)


def _close(flat: Mapping[str, Any]) -> None:
    close = getattr(flat, "close", None)
    if callable(close):
        close()


def _owned(value: Any, dtype: str, *, copy: bool) -> jax.Array:
    """``value`` as a jax array of ``dtype`` that shares no memory the caller can change.

    numpy arrays, torch tensors and other buffers are copied (jax on CPU may otherwise alias
    them, and an in-place update on the caller's side, e.g. ``optimizer.step()``, would change
    the loaded params); jax arrays are immutable and kept; arrays a file reader made are owned
    by it (``copy=False``).
    """
    if isinstance(value, jax.Array):
        return jnp.asarray(value, dtype=dtype)
    arr = to_numpy(value)
    if copy or arr.dtype != jnp.dtype(dtype):
        arr = np.array(arr, dtype=dtype, copy=True)
    return jnp.asarray(arr)


def _load(
    target: Any,
    flat: Mapping[str, Any],
    *,
    file: str | None,
    strict: bool,
    dtypes: DtypePolicy,
    key: jax.Array | None,
) -> Any:
    template, model = _target_template(target)
    expected = _expected(target, template, model)
    report = compare(expected, _infos(flat))
    what = "the model" if model else "the template"
    got = file or "the state_dict"

    key_dtype = [m for m in report.dtype_mismatch if "key<" in m.expected or "key<" in m.got]
    fatal = bool(report.shape_mismatch) or bool(key_dtype) or (dtypes == "error" and report.dtype_mismatch)
    if fatal or (strict and not report.keys_match):
        shown = report if strict else StructureReport((), (), report.shape_mismatch, report.dtype_mismatch)
        hint = ""
        if strict and not report.keys_match and not report.shape_mismatch:
            hint = "To load the entries that match and keep the rest of the model's values, pass strict=False."
        raise StateDictError(
            shown.format(expected=what, got=got, dtypes=dtypes == "error" or bool(key_dtype), hint=hint),
            shown,
            file=file,
        )

    lossy = [m for m in report.dtype_mismatch if _is_lossy(m.got, m.expected)]
    if lossy:
        warnings.warn(
            f"{got}: lossy dtype casts while loading into {what} (pass dtypes='error' to refuse):\n"
            + "\n".join(f"  {m.path}: {m.got} -> {m.expected}" for m in lossy),
            JaxnetsWarning,
            stacklevel=2,
        )
    if report.missing or report.unexpected:
        warnings.warn(
            f"{got}: loaded with strict=False into {what}; "
            + StructureReport(report.missing, report.unexpected).format(expected=what, got=got),
            JaxnetsWarning,
            stacklevel=2,
        )

    fallback: dict[str, Any] = {}
    if report.missing:
        if model:
            fallback = flatten(_merge(*target.init(key if key is not None else jax.random.key(0))))
        else:
            fallback = flatten(template)
            abstract = [k for k in report.missing if isinstance(fallback[k], jax.ShapeDtypeStruct)]
            if abstract:
                raise StateDictError(
                    f"{got}: entries missing and the template has no values for them:\n"
                    + "\n".join(f"  {k}" for k in abstract),
                    StructureReport(missing=tuple(abstract)),
                    file=file,
                )

    def fill(k: str, leaf: Any) -> Any:
        if k in fallback and k not in flat:
            v = fallback[k]
            return v if isinstance(v, jax.Array) else _owned(v, expected[k].dtype, copy=True)
        value = flat[k]
        want = expected[k].dtype
        if "key<" in want:
            return value
        return _owned(value, want, copy=file is None)

    if model:
        params_t, state_t = template
        return map_with_keys(fill, params_t), map_with_keys(fill, state_t)
    return map_with_keys(fill, template)
