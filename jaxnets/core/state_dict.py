"""``state_dict`` and ``load_state_dict``: PyTorch's vocabulary over pure pytrees.

A model's params and state (buffers) share one key namespace, exactly as a torch module's
parameters and buffers do: ``bn.weight`` lives in params, ``bn.running_mean`` in state.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.arrays import (
    TORCH_ADVICE,
    cast_problem,
    int_range_fits,
    is_lossy,
    kind,
    to_numpy,
    torch_problem,
)
from jaxnets.core.model import is_model
from jaxnets.core.remap import LoadHooks, Remapped, Rename, Transform
from jaxnets.core.structure import LeafInfo, Mismatch, StructureReport, compare, hints, leaf_info
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
    """params and state as one tree, in PyTorch's state_dict order at every dict node: the node's
    own parameters, then its own buffers, then its children (sub-dicts), each merged the same way."""
    if state is None:
        return params
    if type(params) is dict and type(state) is dict:
        out = {k: v for k, v in params.items() if type(v) is not dict}
        for k, v in state.items():
            if type(v) is not dict:
                out[k] = _merge(params[k], v) if k in params else v
        children = [k for k, v in params.items() if type(v) is dict]
        children += [k for k, v in state.items() if type(v) is dict and k not in params]
        for k in children:
            if k in params and k in state:
                out[k] = _merge(params[k], state[k])
            else:
                out[k] = params[k] if k in params else state[k]
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
    """Every entry's shape and dtype; a lazy file reader answers from its headers alone.

    Raises:
      JaxnetsError: torch tensors that are not dense arrays (sparse, nested, quantized), by key.
    """
    infos = getattr(flat, "infos", None)
    if callable(infos):
        return dict(infos())
    bad = []
    for k, v in flat.items():
        if type(v).__module__.startswith("torch"):
            problem = torch_problem(v)
            if problem is not None:
                bad.append(f"  {k}: {problem}")
    if bad:
        raise JaxnetsError(
            f"the state_dict holds torch tensors jaxnets cannot read ({TORCH_ADVICE}):\n" + "\n".join(bad),
            path=bad[0].split(":")[0].strip(),
        )
    return {k: leaf_info(v) for k, v in flat.items()}


class _CastError(Exception):
    """A value that its cast would wrap around (caught and reported by key)."""


def _owned(value: Any, src: str, dtype: str, *, copy: bool) -> jax.Array:
    """``value`` (of dtype ``src``) as a jax array of ``dtype`` sharing no memory the caller can change.

    numpy arrays, torch tensors and other buffers are copied (jax on CPU may otherwise alias
    them, and an in-place update on the caller's side, e.g. ``optimizer.step()``, would change
    the loaded params); jax arrays are immutable and kept; arrays a file reader made are owned
    by it (``copy=False``). Casts follow PyTorch's ``copy_`` except that an integer overflow is
    refused (``_CastError``), never wrapped around.
    """
    problem = cast_problem(value, src, dtype)
    if problem is not None:
        raise _CastError(f"{src} {problem}")
    if isinstance(value, jax.Array):
        return value if value.dtype == dtype else jnp.asarray(value, dtype=dtype)
    arr = to_numpy(value)
    if copy or arr.dtype != jnp.dtype(dtype):
        arr = np.array(arr, dtype=dtype, copy=True)
    return jnp.asarray(arr)


def _open(source: Any, hooks: LoadHooks) -> tuple[Mapping[str, Any], dict[str, LeafInfo], str | None]:
    """(flat mapping seen through the hooks, its infos, file path or None)."""
    file = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    flat = _as_flat(source)
    try:
        infos = _infos(flat)
        if not hooks.active:
            return flat, infos, file

        def prepare(key: str, value: Any, src: str, dtype: str) -> Any:
            if src.startswith("key<"):
                return value
            try:
                return _owned(value, src, dtype, copy=file is None)
            except _CastError as e:
                raise _CastError(f"{key}: {e}") from None

        remapped = Remapped(flat, infos, hooks, prepare)
        return remapped, remapped.infos(), file
    except BaseException:
        _close(flat)
        raise


def _checked_report(
    expected: dict[str, LeafInfo], flat: Mapping[str, Any], got: dict[str, LeafInfo]
) -> tuple[StructureReport, dict[str, str]]:
    """The structure report with its hints, and ``{key: why}`` of integers out of the model's range.

    An integer entry of another integer dtype whose values the model's dtype holds exactly (torch's
    int64 ``num_batches_tracked`` into int32) is not a dtype difference; one whose values do not
    fit is listed in ``overflow`` (and stays mistyped). Only such narrowing integer entries are
    read.
    """
    report = compare(expected, got)
    casts = [Mismatch(k, dst, src) for k, src, dst in getattr(flat, "precasts", ())]
    overflow: dict[str, str] = {}
    kept: list[Mismatch] = []
    for m in [*report.dtype_mismatch, *casts]:
        if kind(m.got) in "iu" and kind(m.expected) in "iu":
            if int_range_fits(m.got, m.expected):
                continue
            try:
                problem = cast_problem(flat[m.path], m.got, m.expected)
            except _CastError as e:  # raised by a transform's input cast, naming the key
                text = str(e)
                problem = text[len(m.path) + 2 :] if text.startswith(f"{m.path}: ") else text
            if problem is None:
                continue
            overflow[m.path] = f"{m.got} {problem}"
        kept.append(m)
    report = dataclasses.replace(report, dtype_mismatch=tuple(kept))
    return dataclasses.replace(report, hints=hints(report, expected)), overflow


def check_state_dict(
    target: Any,
    source: Any,
    *,
    prefix: str = "",
    strip_prefix: str = "",
    rename: Rename | None = None,
    transform: Transform | None = None,
) -> StructureReport:
    """Compares a state_dict with a model or template without loading it.

    ``print(check_state_dict(model, path))`` shows every difference and hints at the options
    that fix common ones (``strip_prefix="module."``, transposed weights).

    Args:
      target: a ``jaxnets.nn.Module`` or a template pytree (arrays or ``jax.ShapeDtypeStruct``).
      source: a flat state_dict, a nested tree, or a file path (see :func:`load_state_dict`).
      prefix, strip_prefix, rename, transform: as in :func:`load_state_dict`; the check sees
        the mapped keys and the transformed shapes.

    Returns:
      The :class:`~jaxnets.StructureReport` of every difference. Data is read only for integer
      entries whose dtype is narrower in the model, to check that their values fit.
    """
    hooks = LoadHooks(prefix, strip_prefix, rename, transform)
    template, model = _target_template(target)
    flat, got, _ = _open(source, hooks)
    try:
        return _checked_report(_expected(target, template, model), flat, got)[0]
    finally:
        _close(flat)


def load_state_dict(
    target: Any,
    source: Any,
    *,
    strict: bool = True,
    dtypes: DtypePolicy = "cast",
    key: jax.Array | None = None,
    prefix: str = "",
    strip_prefix: str = "",
    rename: Rename | None = None,
    transform: Transform | None = None,
) -> Any:
    """Loads a state_dict into a model or template, checking every key, shape and dtype.

    Keys are mapped and values transformed first (``strip_prefix``, ``rename``, ``prefix``, then
    ``transform``), so the check compares the model with what will actually be loaded.

    Args:
      target: a ``jaxnets.nn.Module`` (returns ``(params, state)``) or a template pytree, e.g. an
        optax state from ``opt.init(params)`` or a tree of ``jax.ShapeDtypeStruct`` (returns the
        filled tree, with the template's container types: optax states stay NamedTuples).
      source: a flat state_dict (``{"fc1.weight": array}``; numpy, jax or torch tensors), a nested
        tree, or a path: a jaxnets file, a ``.safetensors`` file, a Hugging Face model folder
        (``model.safetensors``, or shards listed in ``model.safetensors.index.json``, read lazily)
        or a PyTorch ``.pt``/``.pth``/``.bin`` state_dict (read with
        ``torch.load(weights_only=True)``: never code from the file).
      strict: when True (default) any missing or unexpected key is an error. When False, what
        matches is loaded, the rest is reported in a :class:`~jaxnets.JaxnetsWarning`, and missing
        entries keep the model's fresh ``init`` values (or the template's concrete values).
      dtypes: ``"cast"`` (default) casts each value to the target's dtype as PyTorch's ``copy_``
        does and warns about lossy casts (narrowing floats, float to int); ``"error"`` makes
        every dtype difference an error. Either way an integer cast is exact or refused: int64
        ``num_batches_tracked`` loads into int32 when its value fits, and a value that does not
        fit is an error, never wrapped around.
      key: PRNG key for the ``init`` of missing entries with ``strict=False`` (default key 0).
      prefix: added to every stored key (load a backbone's state_dict into ``model.backbone``).
      strip_prefix: removed from the stored keys that start with it (``"module."``).
      rename: ``[(pattern, replacement), ...]`` regex rules applied in order with ``re.sub``
        (a ``None`` replacement drops the keys the pattern matches), or ``fn(key) -> key | None``.
      transform: ``{key or regex of whole keys: fn(array) -> array}`` or ``fn(key, array)``,
        applied by the mapped key, e.g. ``{r".*\\.c_attn\\.weight": lambda w: w.T}``. Written
        with ``jax.numpy`` or array methods: the output shape is computed without data.

    Returns:
      ``(params, state)`` for a model, the filled tree for a template; leaves are jax arrays that
      share no memory with the source.

    Raises:
      StateDictError: listing every missing, unexpected (when strict), misshapen, out-of-range and
        (with ``dtypes="error"``) mistyped entry at once, by path, with hints.
      FileFormatError: a file that is not valid in its format.
      ValueError, TypeError: bad options (a transform pattern that matches no key, a rename that
        maps two keys to one).
    """
    if dtypes not in ("cast", "error"):
        raise ValueError(f"dtypes must be 'cast' or 'error', got {dtypes!r}")
    hooks = LoadHooks(prefix, strip_prefix, rename, transform)
    template, model = _target_template(target)
    flat, got, file = _open(source, hooks)
    try:
        return _load(target, template, model, flat, got, file=file, strict=strict, dtypes=dtypes, key=key)
    finally:
        _close(flat)


def _close(flat: Mapping[str, Any]) -> None:
    close = getattr(flat, "close", None)
    if callable(close):
        close()


def _overflow_text(overflow: Mapping[str, str]) -> str:
    return "  out of range (a cast would wrap these values around; PyTorch's copy_ would, jaxnets refuses):\n" + "\n".join(
        f"    {k}: {why}" for k, why in overflow.items()
    )


def _load(
    target: Any,
    template: Any,
    model: bool,
    flat: Mapping[str, Any],
    got_infos: dict[str, LeafInfo],
    *,
    file: str | None,
    strict: bool,
    dtypes: DtypePolicy,
    key: jax.Array | None,
) -> Any:
    expected = _expected(target, template, model)
    report, overflow = _checked_report(expected, flat, got_infos)
    what = "the model" if model else "the template"
    got = file or "the state_dict"

    key_dtype = [m for m in report.dtype_mismatch if "key<" in m.expected or "key<" in m.got]
    fatal = bool(report.shape_mismatch) or bool(key_dtype) or bool(overflow) or (dtypes == "error" and report.dtype_mismatch)
    if fatal or (strict and not report.keys_match):
        shown = report
        if not strict:
            shown = dataclasses.replace(report, missing=(), unexpected=())
        if dtypes != "error" and not key_dtype:
            shown = dataclasses.replace(shown, dtype_mismatch=tuple(m for m in shown.dtype_mismatch if m.path in overflow))
        hint = ""
        if strict and not report.keys_match and not report.shape_mismatch and not report.hints:
            hint = "To load the entries that match and keep the rest of the model's values, pass strict=False."
        listed = shown
        if overflow:  # listed once, in their own section
            listed = dataclasses.replace(shown, dtype_mismatch=tuple(m for m in shown.dtype_mismatch if m.path not in overflow))
        if overflow and listed.keys_match and not listed.shape_mismatch and not (
            (dtypes == "error" or key_dtype) and listed.dtype_mismatch
        ):
            text = f"{got} does not fit {what}: {len(overflow)} out of range"
        else:
            text = listed.format(expected=what, got=got, dtypes=dtypes == "error" or bool(key_dtype), hint=hint)
        if overflow:
            text += "\n" + _overflow_text(overflow)
        raise StateDictError(text, shown, file=file)

    lossy = [m for m in report.dtype_mismatch if is_lossy(m.got, m.expected)]
    if lossy:
        warnings.warn(
            f"{got}: lossy dtype casts while loading into {what} (pass dtypes='error' to refuse):\n"
            + "\n".join(f"  {m.path}: {m.got} -> {m.expected}" for m in lossy),
            JaxnetsWarning,
            stacklevel=3,
        )
    if report.missing or report.unexpected:
        warnings.warn(
            f"{got}: loaded with strict=False into {what}; "
            + StructureReport(report.missing, report.unexpected, hints=report.hints).format(expected=what, got=got),
            JaxnetsWarning,
            stacklevel=3,
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

    late: dict[str, str] = {}  # float -> int casts out of range, found when the data is read

    def fill(k: str, leaf: Any) -> Any:
        if k in fallback and k not in got_infos:
            v = fallback[k]
            return v if isinstance(v, jax.Array) else _owned(v, leaf_info(v).dtype, expected[k].dtype, copy=True)
        want = expected[k].dtype
        try:
            value = flat[k]
            if "key<" in want:
                return value
            return _owned(value, got_infos[k].dtype, want, copy=file is None)
        except _CastError as e:
            text = str(e)
            late[k] = text[len(k) + 2 :] if text.startswith(f"{k}: ") else text
            return leaf

    if model:
        params_t, state_t = template
        out: Any = (map_with_keys(fill, params_t), map_with_keys(fill, state_t))
    else:
        out = map_with_keys(fill, template)
    if late:
        bad = StructureReport(dtype_mismatch=tuple(Mismatch(k, expected[k].dtype, got_infos[k].dtype) for k in late))
        raise StateDictError(f"{got} does not fit {what}: {len(late)} out of range\n" + _overflow_text(late), bad, file=file)
    return out
