"""What each stored leaf was, so that a load gives back what was saved (docs/format.md, "Leaves").

A tree saved with :func:`jaxnets.save` may hold more than jax arrays. The header's ``leaves``
section records, per tensor group (``"model"``, ``"opt_state"``), every leaf that is not a jax
array:

* ``"numpy"``: keys of ``np.ndarray`` leaves, which come back as numpy arrays (private
  copy-on-write views of the file: writing to one never reaches the file);
* ``"npscalar"``: keys of numpy scalars (``np.float32(1.0)``), stored as 0-d tensors, which come
  back as numpy scalars;
* ``"py"``: ``{key: value}`` of Python ``bool``/``int``/``float``/``str`` leaves, stored in the
  header itself (msgpack keeps their types and a float's 64 bits), never as a tensor: a Python
  ``0.1`` comes back as the Python float ``0.1``, not as a float64 tensor jax cannot hold.

Every other leaf (jax arrays, torch tensors, PRNG keys) is a tensor that comes back as a jax array.
Files without the section (written by jaxnets 0.1) hold jax-array leaves only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core import placement
from jaxnets.core.placement import Device, Placer
from jaxnets.core.structure import LeafInfo, dtype_name
from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io._layout import _no_gc

__all__ = [
    "DtypePolicy",
    "GroupLeaves",
    "cast_targets",
    "decode",
    "dtype_policy",
    "exact_for_jax",
    "finish",
    "placer",
    "cast_block",
    "py_info",
    "restore",
    "split",
]

DtypePolicy: TypeAlias = "str | np.dtype | Mapping[str, Any] | None"

PY_TYPES = (bool, int, float, str)
_INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # what msgpack can hold
_TAGS = ("numpy", "npscalar", "py")


@dataclass(frozen=True)
class GroupLeaves:
    """The leaves of one group that are not jax arrays.

    Attributes:
      numpy: keys of tensors that come back as numpy arrays.
      npscalar: keys of 0-d tensors that come back as numpy scalars.
      py: Python scalars by key (no tensor).
    """

    numpy: frozenset[str] = frozenset()
    npscalar: frozenset[str] = frozenset()
    py: dict[str, Any] = field(default_factory=dict)

    def kind(self, key: str) -> str:
        """``"jax"``, ``"numpy"``, ``"npscalar"`` or ``"py"``."""
        if key in self.py:
            return "py"
        if key in self.numpy:
            return "numpy"
        return "npscalar" if key in self.npscalar else "jax"

    def to_header(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.numpy:
            out["numpy"] = sorted(self.numpy)
        if self.npscalar:
            out["npscalar"] = sorted(self.npscalar)
        if self.py:
            out["py"] = dict(self.py)
        return out


def split(flat: Mapping[str, Any]) -> tuple[dict[str, Any], GroupLeaves]:
    """Separates the Python scalars of a flat tree (kept in the header) from its tensors.

    Args:
      flat: ``{key: leaf}`` as :func:`jaxnets.flatten` gives it.

    Returns:
      ``(tensors, leaves)``: the leaves stored as tensors, in order, and what each leaf was.

    Raises:
      JaxnetsError: a Python scalar cannot be stored (a subclass such as an ``IntEnum``, an int
        outside msgpack's 64-bit range, a complex or bytes value), naming the key.
    """
    tensors: dict[str, Any] = {}
    numpy_keys: set[str] = set()
    npscalar_keys: set[str] = set()
    py: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, np.ndarray):
            numpy_keys.add(key)
        elif isinstance(value, np.generic):  # before float: np.float64 is a float subclass
            npscalar_keys.add(key)
        elif type(value) in PY_TYPES:
            if type(value) is int and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                raise JaxnetsError(
                    f"{key}: the int {value} does not fit in 64 bits, so it cannot be stored; "
                    "store it as a str.",
                    path=key,
                )
            py[key] = value
            continue
        elif isinstance(value, (bool, int, float, str, complex, bytes)):
            raise JaxnetsError(
                f"{key}: cannot store a {type(value).__module__}.{type(value).__qualname__} leaf "
                "and give it back as what it was; Python leaves must be exactly bool, int, float "
                "or str (convert it, e.g. int(x)), or use a numpy or jax array.",
                path=key,
            )
        tensors[key] = value
    return tensors, GroupLeaves(frozenset(numpy_keys), frozenset(npscalar_keys), py)


def py_info(value: Any) -> LeafInfo:
    """The :class:`LeafInfo` of a Python scalar: shape ``()`` and the dtype jax gives it
    (``float`` is float32 without 64-bit mode, as ``jax.eval_shape`` of a model's ``init`` says)."""
    if type(value) is str:
        return LeafInfo((), "str")
    return LeafInfo((), dtype_name(jax.dtypes.canonicalize_dtype(np.asarray(value).dtype)))


def decode(
    raw: Any, tensors: Mapping[str, Mapping[str, LeafInfo]], file: str
) -> dict[str, GroupLeaves]:
    """Validates and decodes the header's ``leaves`` section.

    Args:
      raw: the section as stored (None: a file of jax-array leaves only).
      tensors: ``{group: {key: LeafInfo}}`` of the tensor index.
      file: the file, for messages.

    Returns:
      ``{group: GroupLeaves}`` for every group of ``tensors``.

    Raises:
      FileFormatError: the section is malformed: unknown groups or tags, keys that are not
        strings, numpy keys without a tensor, a numpy scalar that is not 0-d, a Python value of
        another type, or a Python scalar whose key also names a tensor.
    """
    out = {g: GroupLeaves() for g in tensors}
    if raw is None:
        return out
    if not isinstance(raw, dict) or not set(raw) <= set(tensors):
        raise _bad(file, f"groups must be among {sorted(tensors)}")
    for group, section in raw.items():
        if not isinstance(section, dict) or not set(section) <= set(_TAGS):
            raise _bad(file, f"{group}: tags must be among {list(_TAGS)}")
        index = tensors[group]
        keys = {}
        for tag in ("numpy", "npscalar"):
            listed = section.get(tag, [])
            if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
                raise _bad(file, f"{group}.{tag} must be a list of keys")
            unknown = [k for k in listed if k not in index]
            if unknown:
                raise _bad(file, f"{group}.{tag} names entries without a tensor: {unknown[:5]}")
            keys[tag] = frozenset(listed)
        if keys["numpy"] & keys["npscalar"]:
            raise _bad(file, f"{group}: keys listed as numpy and as npscalar")
        not_0d = [k for k in keys["npscalar"] if index[k].shape != ()]
        if not_0d:
            raise _bad(file, f"{group}.npscalar names entries that are not 0-d: {not_0d[:5]}")
        py = section.get("py", {})
        if not isinstance(py, dict):
            raise _bad(file, f"{group}.py must be a map")
        wrong = [k for k, v in py.items() if not isinstance(k, str) or type(v) not in PY_TYPES]
        if wrong:
            raise _bad(file, f"{group}.py holds keys or values of other types: {wrong[:5]!r:.200}")
        both = [k for k in py if k in index]
        if both:
            raise _bad(file, f"{group}: Python values that also have a tensor: {both[:5]}")
        out[group] = GroupLeaves(keys["numpy"], keys["npscalar"], dict(py))
    return out


def restore(kind: str, arr: np.ndarray) -> Any:
    """A stored tensor as the leaf it was saved from (``"numpy"``/``"npscalar"``); jax leaves are
    placed by the caller."""
    if kind == "npscalar":
        return arr[()]
    return arr


def _bad(file: str, what: str) -> FileFormatError:
    return FileFormatError(
        f"{file}: malformed 'leaves' section in the header ({what}); the file is corrupted or was "
        "not written by jaxnets.",
        file=file,
    )


# --- what each leaf becomes on load -----------------------------------------------------------
def dtype_policy(policy: DtypePolicy) -> Callable[[str, np.dtype], np.dtype | None] | None:
    """``(key, stored dtype) -> target dtype or None`` for a dtype policy (floats only); None for
    no policy.

    Raises:
      TypeError: the policy names something that is not a dtype.
    """
    if policy is None:
        return None
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


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(
        np.ascontiguousarray(a).reshape(-1).view(np.uint8),
        np.ascontiguousarray(b).reshape(-1).view(np.uint8),
    )


def exact_for_jax(key: str, x: np.ndarray, file: str, *, castable: bool = True) -> np.ndarray:
    """``x`` in the dtype jax will hold it in (64-bit types need x64), refusing any changed bit.

    Exact means bit for bit: a float64 NaN whose payload float32 cannot carry (jax would
    canonicalise it) is refused like any rounded value, naming the key. ``castable``: whether the
    message may offer ``dtype=`` (the optimizer state is never cast).
    """
    canon = jax.dtypes.canonicalize_dtype(x.dtype)
    if canon == x.dtype:
        return x
    with np.errstate(invalid="ignore", over="ignore"):  # the check below reports what changed
        narrow = x.astype(canon)
        back = narrow.astype(x.dtype)
    if _same_bits(back, x):
        return narrow  # e.g. int64 counters, float64 values that are exact in float32
    what = "values"
    if x.dtype.kind in "fc":
        nan = np.isnan(x)
        if nan.any() and _same_bits(back[~nan], x[~nan]):
            what = "NaN payloads (bits a 32-bit NaN cannot carry: jax would change them)"
    fix = "Enable it (jax.config.update('jax_enable_x64', True)) before loading"
    if castable:
        fix += f", or accept the rounding with dtype={{{key!r}: '{canon.name}'}}"
    raise JaxnetsError(
        f"{file}: {key}: {x.dtype.name} {what} that jax cannot hold exactly without 64-bit mode. "
        f"{fix}.",
        path=key,
        file=file,
    )


def placer(device: Device | None, sharding: Any) -> Placer:
    """The one placer (:mod:`jaxnets.core.placement`) for a model file's ``device=``/``sharding=``.

    Device names resolve to this process's devices. ``sharding`` is one Sharding for every jax
    leaf, or ``fn(key, LeafInfo) -> Sharding | None`` (None: the default device).

    Raises:
      ValueError: both arguments, or an unknown device. TypeError: another kind of ``sharding``.
    """
    if isinstance(sharding, Mapping):  # a model file's two groups share no key namespace
        raise TypeError(
            "sharding= takes one jax.sharding.Sharding or fn(key, LeafInfo) -> Sharding | None "
            "(keys as in the file: 'fc1.weight'); got a mapping."
        )
    return placement.placer(device=device, sharding=sharding)


def cast_targets(
    cast: Callable[[str, np.dtype], np.dtype | None], dtypes: Mapping[str, np.dtype]
) -> dict[str, np.dtype]:
    """The keys the ``dtype=`` policy casts, with their target dtypes."""
    out = {}
    for k, dt in dtypes.items():
        target = cast(k, dt)
        if target is not None and target != dt:
            out[k] = target
    return out


def finish(
    flat: Mapping[str, Any],
    kinds: GroupLeaves,
    targets: Mapping[str, np.dtype] | None,
    place: Placer,
    file: str,
    infos: Mapping[str, LeafInfo] | None = None,
) -> dict[str, Any]:
    """Each leaf as what it was saved as: cast by the policy, jax leaves exact and placed.

    Args:
      targets: ``{key: dtype}`` the ``dtype=`` policy casts to; None for a group never cast.
      infos: ``{key: LeafInfo}`` of the leaves as they are placed (shape, dtype after the cast),
        known from the header; None: read from each array.
    """
    done: dict[str, Any] = {}
    to_place: dict[str, Any] = {}
    for k, x in flat.items():
        kind = kinds.kind(k)
        if type(x) in PY_TYPES:
            done[k] = x
            continue
        if isinstance(x, np.ndarray):
            target = None if targets is None else targets.get(k)
            if target is not None:  # the user's cast: a fresh array, never a view of the file
                with np.errstate(invalid="ignore", over="ignore"):
                    x = x.astype(target)
            if kind in ("numpy", "npscalar"):
                done[k] = restore(kind, x)
                continue
            if target is None:
                x = exact_for_jax(k, x, file, castable=targets is not None)
        to_place[k] = x
    if not to_place:
        placed = {}
    else:
        with _no_gc():  # 20,000 leaves: jax makes a few objects for each
            placed = place.put(to_place, infos=infos)
    return {k: placed[k] if k in placed else done[k] for k in flat}


def cast_block(
    key: str, target: np.dtype | None, file: str, *, castable: bool
) -> Callable[[np.ndarray], np.ndarray]:
    """What :func:`finish` does to a jax leaf's array, for one block of it (a sharded load)."""
    if target is not None:

        def cast(x: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):
                return x.astype(target)

        return cast
    return lambda x: exact_for_jax(key, x, file, castable=castable)
